"""Atomic writes and safe checkpoint loading.

Every file the suite writes goes to a temporary name in the same folder and is renamed into place,
so a killed job never leaves a half-written result that a later step would trust. Checkpoints are
read with ``weights_only=True``: a checkpoint from outside must not run code.

File modes: a written file gets the mode a plain ``open()`` would give it, ``0666`` less the
process umask, so 0644 under the usual umask 022 (results, checkpoints and leaderboards are shared
and published). ``tempfile.mkstemp`` would make every file 0600; a restrictive umask (077) is the
user's choice and is respected.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from benchmark.core import safe_json
from benchmark.core.errors import CheckpointError, CorruptFileError, MissingFileError, OutputWriteError


def _temp_beside(path: Path) -> Path:
    """A new empty file next to ``path``, created exclusively with the umask's mode. The suffix
    stays last, so writers that pick the format from the name (matplotlib) still do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def write_error(path: Path, exc: OSError) -> OutputWriteError:
    """One line naming the path, the reason and what to do about it."""
    if exc.errno in _NO_SPACE:
        remedy = "the disk is full or a file-size limit is reached: free space, or run in a folder on another disk"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        remedy = "a part of that path is a file, not a folder: remove it or choose another path"
    elif exc.errno in _READ_ONLY:
        remedy = "the folder is read-only for this user: make it writable, or run in another folder"
    else:
        remedy = "check the folder and the disk"
    return OutputWriteError(f"cannot write {path}: {exc.strerror or exc} ({remedy}); nothing was "
                            "written there, rerun the command once fixed")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write; renamed to ``path`` when the block ends without an
    exception, removed otherwise (the previous file at ``path`` stays untouched). An OSError of
    the write (read-only folder, full disk) becomes an OutputWriteError naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        tmp = _temp_beside(path)
        yield tmp
        os.replace(tmp, path)
    except OutputWriteError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_SPACE | _READ_ONLY | {errno.EIO, errno.ENOTDIR}:
            raise  # not the disk's doing: the caller's own error, as it was
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """``open(path, mode)`` for writing, made atomic as in ``atomic_output``."""
    with atomic_output(path) as tmp, open(tmp, mode) as fh:
        yield fh


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # deferred: torch

    # through a file object: given a path, torch names the archive's folder after the (random)
    # temporary file, and two saves of the same object would differ byte-wise
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str = "cpu",
                    remedy: str = "rerun the stage that writes it") -> Any:
    """torch.load with weights_only=True and a message that names the file and the remedy when
    it fails."""
    import torch  # deferred: torch

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise CheckpointError(
            f"cannot load checkpoint {path} safely (weights_only=True): {_first_line(exc)}. "
            "It is truncated, was not written by this suite, or holds objects other than tensors "
            f"and plain containers; {remedy}.") from exc


def load_state_dict_checked(model: Any, state_dict: dict, path: str | Path, what: str,
                            strict: bool = True) -> None:
    """``model.load_state_dict`` whose shape or key mismatch names the file and the model it was
    loaded into (the usual cause: a checkpoint of another architecture, width or dataset)."""
    try:
        model.load_state_dict(state_dict, strict=strict)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path} does not fit the {what}: {_first_line(exc)} (a checkpoint of another "
            "architecture, width or dataset? pass the file made for this cell)") from exc


def _first_line(exc: BaseException) -> str:
    """torch's load errors run to dozens of lines of advice on weights_only; the first says what."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = lines[0] if lines else type(exc).__name__
    # state_dict mismatches put the detail on the following lines: keep a short excerpt
    if head.startswith("Error(s) in loading state_dict") and len(lines) > 1:
        head += " " + " ".join(lines[1:3])
    return head[:600]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (a model file need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    """A JSON file the suite wrote; a missing or unparsable one is a user error naming the path."""
    path = Path(path)
    if not os.path.lexists(path):
        raise MissingFileError(f"file not found: {path}")
    try:
        return safe_json.read_json_file(path)
    except safe_json.JSONFileError as exc:
        raise CorruptFileError(f"{exc}; rerun the step that writes it") from None


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
