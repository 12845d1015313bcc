"""Reading a JSON file the suite did not necessarily write itself: a result tree can be copied in,
edited by hand or forged, and the aggregation and publishing read every file of it.

``read_json_file`` reads only a regular file (``lstat``: a symlink, say to ``/dev/zero`` or to a
file outside the tree, is refused without being followed), of at most ``max_bytes``, nested at
most ``max_depth`` deep (checked on the text before parsing, so a file of a million ``[`` never
reaches the parser's recursion), and with no NaN or Infinity (Python's json accepts them, JSON
does not). Every refusal is a ``JSONFileError`` whose message names the path and the reason.
Torch-free and dependency-free: the aggregation and the Snakefile import it.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

# a result of 10,000 images with every per-image flag is about 200 KiB; a leaderboard stamp less
MAX_BYTES = 16 * 2 ** 20
MAX_DEPTH = 32


class JSONFileError(ValueError):
    """A JSON file refused: not a regular file, too large, too deep, not JSON, or non-finite."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def regular_file_problem(path: str | Path, max_bytes: int | None = None) -> str | None:
    """Why ``path`` is not a regular file to read (None when it is), without following a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (only regular files are read: copy the file itself)"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, pipe, socket or folder)"
    if max_bytes is not None and st.st_size > max_bytes:
        return f"is {st.st_size} bytes, more than the {max_bytes} a file of this kind may have"
    return None


def _depth(text: str) -> int:
    """Deepest nesting of arrays and objects, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(text: str, source: str | Path = "<json>", max_depth: int = MAX_DEPTH) -> Any:
    if _depth(text) > max_depth:
        raise JSONFileError(source, f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise JSONFileError(source, "nested too deeply") from None
    except ValueError as exc:
        raise JSONFileError(source, f"not valid JSON ({exc})") from None


def read_json_file(path: str | Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed content of a regular JSON file, or JSONFileError naming the path and the reason."""
    problem = regular_file_problem(path, max_bytes)
    if problem is not None:
        raise JSONFileError(path, problem)
    try:
        # O_NOFOLLOW: the file cannot be swapped for a link between the check and the read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise JSONFileError(path, f"cannot be read ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise JSONFileError(path, f"grew past {max_bytes} bytes while it was read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return loads(text, path, max_depth)
