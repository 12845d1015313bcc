"""Where a result came from: package versions, code revision, platform, device, time.

Every result JSON carries ``provenance()`` so that a number can be traced to the code and the
library versions that produced it. Nothing here may fail an evaluation: a missing package, a
missing git binary or a folder that is not a checkout all come back as ``None`` / ``"unknown"``.

``config_hash`` is the grouping key of the leaderboard: seeds of one configuration share it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

# Distribution names (what pip knows), not import names: importing torch just to read its
# version would cost seconds in torch-free callers such as the aggregation step.
PACKAGES = ("torch", "torchvision", "pyautoattack", "pandas", "snakemake", "timm", "numpy")

_REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_revision(repo: str | Path | None = None) -> dict[str, Any]:
    """{"revision": sha or "unknown", "dirty": bool or None}.

    A checkout without commits, or a copy without .git (an installed wheel, a cluster copy), gives
    "unknown" rather than an error: provenance must never be the reason a result is lost.
    """
    repo = Path(repo) if repo is not None else _REPO_ROOT
    rev = _git(["rev-parse", "HEAD"], repo)
    status = _git(["status", "--porcelain"], repo)
    return {"revision": rev or "unknown", "dirty": (bool(status) if status is not None else None)}


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cuda_available": False, "cuda_device": None, "cuda_version": None,
                            "torch_threads": None}
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch  # noqa: F811 - only when the caller has not imported it already
        except ImportError:
            return info
    try:
        info["torch_threads"] = torch.get_num_threads()
        info["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            info["cuda_available"] = True
            info["cuda_device"] = torch.cuda.get_device_name(torch.cuda.current_device())
            info["cuda_device_count"] = torch.cuda.device_count()
        mps = getattr(torch.backends, "mps", None)
        info["mps_available"] = bool(mps is not None and mps.is_available())
    except Exception as exc:  # a broken driver must not lose the result
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def provenance(repo: str | Path | None = None) -> dict[str, Any]:
    """Package versions, git revision, platform (no hostname), device and a UTC timestamp."""
    return {
        "packages": package_versions(),
        "python": platform.python_version(),
        "git": git_revision(repo),
        # platform.platform() names OS, kernel, machine and libc; unlike platform.node() it holds
        # no hostname, which has no place in a result that may be published.
        "platform": platform.platform(),
        "device": device_info(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _strip(obj: Any, exclude: frozenset[str]) -> Any:
    if isinstance(obj, dict):
        return {str(k): _strip(v, exclude) for k, v in obj.items() if k not in exclude}
    if isinstance(obj, (list, tuple)):
        return [_strip(v, exclude) for v in obj]
    return obj


def canonical_json(obj: Any, exclude: Iterable[str] = ()) -> str:
    return json.dumps(_strip(obj, frozenset(exclude)), sort_keys=True, separators=(",", ":"),
                      default=str, allow_nan=True)


def config_hash(obj: Any, exclude: Iterable[str] = ("seed",), length: int = 12) -> str:
    """Short sha256 of the canonical JSON of ``obj`` with the keys in ``exclude`` removed at
    every depth (so runs that differ only in their seeds share a hash)."""
    return hashlib.sha256(canonical_json(obj, exclude).encode()).hexdigest()[:length]
