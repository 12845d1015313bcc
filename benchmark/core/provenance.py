"""Where a result came from: package versions, code revision, stage code, platform, device, time.

Every result JSON carries ``provenance()`` so that a number can be traced to the code and the
library versions that produced it. Nothing here may fail an evaluation: a missing package, a
missing git binary or a folder that is not a checkout all come back as ``None`` / ``"unknown"``.

Two facts make stale results visible on the leaderboard:

- ``git.dirty``: tracked files of the checkout differed from the revision when the result was
  made (files under ``results/`` do not count: a run writes there, and a published leaderboard is
  committed there), or untracked files lay in a code folder (``CODE_DIRS``);
- ``stage_code``: a digest of the code that produces the row's numbers -- ``benchmark/training/stages.py``
  and every module of ``benchmark/`` it imports, followed through the imports (and through the
  registries' "package.module:attr" strings), the shared part of ``methods/`` (base.py and the
  helpers no method owns), and the row's own method file (plus methods/s2ap.py for an S2AP row).
  Modules that only read results or record provenance (aggregation, plots, this module) are not
  part of it, so editing the leaderboard code does not make every result stale, and editing one
  method's file marks that method's rows only. ``code_scope`` records what the digest covered;
  ``stages`` (in the model's metadata, then the result) the same for every stage that made it.

``config_hash`` is the grouping key of the leaderboard: seeds of one configuration share it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmark.core.paths import REPO_ROOT
from benchmark.core.registry import MethodFileError, read_method_file

# Distribution names (what pip knows), not import names: importing torch just to read its
# version would cost seconds in torch-free callers such as the aggregation step.
PACKAGES = ("torch", "torchvision", "pyautoattack", "pandas", "snakemake", "timm", "numpy")

_REPO_ROOT = REPO_ROOT
RESULTS_DIR = "results"
# folders whose untracked files change what a run does: code, method files, presets, the workflow
CODE_DIRS = ("benchmark", "methods", "presets", "workflows")


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
    """git's stdout without its trailing newline; None when git fails or is missing."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    # only the end is stripped: porcelain status lines start with a meaningful space
    return proc.stdout.rstrip("\n") if proc.returncode == 0 else None


def git_revision(repo: str | Path | None = None) -> dict[str, Any]:
    """{"revision": sha or "unknown", "dirty": bool or None, "dirty_files": [...]}.

    dirty: tracked files modified (staged or not) outside ``results/``, or untracked files under
    the code folders (``CODE_DIRS``): a method or preset file the commit does not hold changes
    what runs without changing the revision, so ``git checkout <revision>`` could not reproduce
    the result. Untracked files elsewhere (notes, a scratch script) do not count.

    A checkout without commits, or a copy without .git (an installed wheel, a cluster copy),
    gives "unknown" and None rather than an error: provenance must never be the reason a result
    is lost.
    """
    repo = Path(repo) if repo is not None else _REPO_ROOT
    top = _git(["rev-parse", "--show-toplevel"], repo)
    if top is None or Path(top).resolve() != repo.resolve():
        # an installed copy inside some other repository must not report that repository's state
        return {"revision": "unknown", "dirty": None, "dirty_files": []}
    rev = _git(["rev-parse", "HEAD"], repo)
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".",
                   f":(exclude){RESULTS_DIR}"], repo)
    files = [line[3:] for line in status.splitlines() if line.strip()] if status else []
    code_dirs = [d for d in CODE_DIRS if (repo / d).exists()]
    untracked = _git(["status", "--porcelain", "--untracked-files=all", "--", *code_dirs],
                     repo) if code_dirs else None
    if untracked:
        files += [line[3:] for line in untracked.splitlines() if line.startswith("??")]
    return {"revision": rev or "unknown", "dirty": bool(files) if status is not None else None,
            "dirty_files": files[:50]}


# modules that read results or record where they came from: their edits change no number. (The
# result writer, benchmark/core/result_file.py, stays in: the evaluation stage runs it, and the AutoAttack
# attack lists live there.)
RECORDING_MODULES = frozenset({"benchmark/core/provenance.py", "benchmark/results/aggregate.py",
                               "benchmark/results/plots.py"})
STAGE_ENTRY = "benchmark/training/stages.py"
_LAZY_TARGET = re.compile(r"^(benchmark|methods)(\.\w+)+:\w+$")


def _module_path(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(root: Path, path: Path) -> set[Path]:
    """Files of benchmark/ (and methods/) that ``path`` imports, at any depth of the file."""
    st = path.stat()
    return set(_imports_of_version(root, path, st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=1024)
def _imports_of_version(root: Path, path: Path, mtime_ns: int, size: int) -> frozenset[Path]:
    # parsing is the slow part of stage_code_digest; a file's imports change only with the file
    try:
        package = ".".join(path.relative_to(root).with_suffix("").parts)
    except ValueError:  # a preset's method file kept outside the repository: absolute imports only
        package = path.stem
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[Path] = set()
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return frozenset()  # its bytes still count; provenance must not fail a result
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(p for p in [*parts, base] if p)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _LAZY_TARGET.match(node.value):
            names = [node.value.partition(":")[0]]  # a registry's "package.module:attr"
        for name in names:
            if name.split(".")[0] in ("benchmark", "methods"):
                target = _module_path(root, name)
                if target is not None:
                    found.add(target)
    return frozenset(found)


S2AP_FILE = "methods/s2ap.py"
METHOD_CONTRACT = ("methods/__init__.py", "methods/base.py")
# grid values of ``s2ap`` under which the plug-in runs (benchmark.training.stages S2AP_SEARCH/S2AP_FINETUNE)
S2AP_ACTIVE = frozenset({"on", "score", "awp"})


def _declares_method(path: Path) -> bool:

    try:
        return bool(read_method_file(path))
    except MethodFileError:
        return False


def method_owned_files(root: Path) -> set[Path]:
    """The files of methods/ that belong to one method (they declare it) or to the S2AP
    plug-in: a row's code covers them only when its own method (or S2AP) is one of them."""
    owned = {p for p in (root / "methods").glob("*.py") if _declares_method(p)}
    if (root / S2AP_FILE).is_file():
        owned.add(root / S2AP_FILE)
    return owned


def method_source(method: str, method_files: Iterable[str | Path] = (),
                  root: Path | None = None) -> Path | None:
    """The file that declares ``method`` (methods/*.py, then the preset's method files); None for
    a name no file declares (dense, a submission's own label)."""

    root = root or _REPO_ROOT
    for path in [*sorted((root / "methods").glob("*.py")), *map(Path, method_files)]:
        try:
            if any(d.name == method for d in read_method_file(path)):
                return path.resolve()
        except MethodFileError:
            continue
    return None


def _rel(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return f"<outside>/{path.name}"  # a preset's method file kept elsewhere: its bytes count


def stage_code_files(root: str | Path | None = None, *, method: str | None = None,
                     s2ap: str | None = None, method_files: Iterable[str | Path] = ()) -> list[str]:
    """The files ``stage_code_digest`` covers, relative to the repository root.

    Without ``method``: the stage code every row shares (benchmark/training/stages.py and what it imports,
    methods/base.py and what it imports, bar the files a method or S2AP owns). A file of
    methods/ nothing imports (a new method, a helper) marks no row. With ``method``: that plus
    the method's own file and what it imports (HARP's file imports LAMP's allocation, so HARP's
    rows cover lamp.py); with an active ``s2ap`` also methods/s2ap.py. An edit to one method's
    file therefore marks that method's rows stale and no other's (base.py imports the S2AP plug-in,
    which does not make every row an S2AP row).
    """
    root = Path(root) if root is not None else _REPO_ROOT
    owned = {p.resolve() for p in method_owned_files(root)}
    include: set[Path] = set()
    if method is not None:
        src = method_source(method, method_files, root)
        if src is not None:
            include.add(src)
    if s2ap in S2AP_ACTIVE and (root / S2AP_FILE).is_file():
        include.add((root / S2AP_FILE).resolve())
    # the contract every method subclasses; other helpers of methods/ count when imported
    todo: list[tuple[Path, bool]] = [(root / p, False) for p in (STAGE_ENTRY, *METHOD_CONTRACT)]
    todo += [(p, True) for p in sorted(include)]
    seen: set[Path] = set()
    while todo:
        path, from_owned = todo.pop()
        path = path.resolve()
        rel = _rel(root, path)
        if path in seen or rel in RECORDING_MODULES or not path.is_file():
            continue
        is_owned = path in include or path in owned
        # a method's file is reached only as the row's own, or imported by the row's own file
        if is_owned and path not in include and not from_owned:
            continue
        seen.add(path)
        todo.extend((p, is_owned) for p in _imports(root, path) - seen)
        # a package's __init__ comes with every module imported from it
        init = path.parent / "__init__.py"
        if init != path and init.is_file():
            todo.append((init, False))
    return sorted(_rel(root, p) for p in seen)


def stage_code_digest(root: str | Path | None = None, *, method: str | None = None,
                      s2ap: str | None = None, method_files: Iterable[str | Path] = ()) -> str:
    """16 hex digits over the names and bytes of ``stage_code_files``: equal digests mean the
    same code computed the numbers of a row of ``method`` (with ``s2ap``)."""
    root = Path(root) if root is not None else _REPO_ROOT
    h = hashlib.sha256()
    files = stage_code_files(root, method=method, s2ap=s2ap, method_files=method_files)
    extra = {_rel(root, Path(f).resolve()): Path(f).resolve() for f in method_files}
    for rel in files:
        path = extra.get(rel, root / rel)
        h.update(rel.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


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


def code_scope(method: str | None = None, s2ap: str | None = None,
               method_files: Iterable[str | Path] = ()) -> dict[str, Any]:
    """What a stage code digest covers, recorded beside it so that the current digest of the same
    scope can be computed again (benchmark.results.staleness)."""
    return {"method": method, "s2ap": s2ap, "method_files": [str(f) for f in method_files]}


def stage_record(method: str | None = None, s2ap: str | None = None,
                 method_files: Iterable[str | Path] = (), repo: str | Path | None = None
                 ) -> dict[str, Any]:
    """The provenance of one stage (pretrain, prune, finetune, evaluate) of a model: revision,
    dirty tree and the digest of the code of its scope. Every stage's record travels with the
    model's metadata into the result, so publishing can refuse a model an older stage made."""
    git = git_revision(repo)
    method_files = list(method_files)
    return {"revision": git["revision"], "dirty": git["dirty"],
            "dirty_files": git["dirty_files"][:10],
            "stage_code": stage_code_digest(method=method, s2ap=s2ap, method_files=method_files),
            "scope": code_scope(method, s2ap, method_files)}


def provenance(repo: str | Path | None = None, *, method: str | None = None,
               s2ap: str | None = None, method_files: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Package versions, git revision, stage code (of the row's method and S2AP setting, see
    ``stage_code_files``), platform (no hostname), device and a UTC timestamp."""
    method_files = list(method_files)
    return {
        "packages": package_versions(),
        "python": platform.python_version(),
        "git": git_revision(repo),
        "stage_code": stage_code_digest(method=method, s2ap=s2ap, method_files=method_files),
        "code_scope": code_scope(method, s2ap, method_files),
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
