"""Atomic writes and safe checkpoint loading.

Every file the suite writes goes to a temporary name in the same folder and is renamed into place,
so a killed job never leaves a half-written result that a later step would trust. Checkpoints are
read with ``weights_only=True``: a checkpoint from outside must not run code.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def _atomic_path(path: str | Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def atomic_write_text(path: str | Path, text: str) -> Path:
    path, tmp = _atomic_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    path, tmp = _atomic_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Any:
    """torch.load with weights_only=True and a message that names the file when it fails."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise ValueError(f"cannot load checkpoint {path} safely (weights_only=True): {exc}") from exc


def read_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def replace_dir(path: str | Path, build: Callable[[Path], None]) -> Path:
    """Builds a whole folder (a site, an export) with ``build(tmp)`` in a sibling temporary folder,
    then swaps it in: readers see the old folder or the new one, never a half-written mix, and
    files of an earlier build that this one did not write are gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a published folder from its readers
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
