"""Checks of a submission folder that do not trust it: its files, its model file's header, its tensors.

A submission comes from outside; ``benchmark.publishing.submission`` reads it only after these pass:

- ``file_problem``: a file the folder names is a regular file (``lstat``: a symbolic link is
  refused, wherever it points) lying directly in the folder (``..``, a path or a link never lead
  out of it);
- ``safetensors_problems``: a safetensors header is read with a size and depth cap, names dtypes
  the format defines, and every tensor's byte span is its shape times its dtype's size, the spans
  tiling the data exactly (a header whose dtype does not match its bytes is refused here, before
  any tensor is built);
- ``tensor_problems``: every tensor has the dtype the architecture's own state_dict has for that
  name, and every floating tensor is finite (a NaN weight would otherwise reach the attacks and
  end in a traceback, or in a meaningless accuracy).

Torch-free at import; ``tensor_problems`` works on whatever tensors it is given.
"""
from __future__ import annotations

import math
import os
import stat
import struct
from pathlib import Path
from typing import Any

from benchmark.core import safe_json

# bytes per element of each dtype the safetensors format defines
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
MAX_HEADER_BYTES = 100 * 2 ** 20


def file_problem(folder: Path, name: str) -> str | None:
    """Why ``folder/name`` is not a regular file directly inside ``folder`` (None when it is)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name \
            or "\n" in name or "\r" in name:
        return f"{name!r} is not a plain file name: a submission's files lie in its folder"
    path = folder / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link: a submission holds its files themselves"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if path.resolve().parent != folder.resolve():
        return f"{path} lies outside the submission folder {folder}"
    return None


def safetensors_problems(path: Path) -> list[str]:
    """Why the safetensors file at ``path`` has a header that does not describe its bytes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return [f"{path} is shorter than a safetensors header"]
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            return [f"{path}: its header claims {n} bytes, the file has {size - 8} after the length"]
        try:
            header = safe_json.loads(fh.read(n).decode("utf-8"), path, max_depth=4)
        except (UnicodeDecodeError, safe_json.JSONFileError) as exc:
            return [f"{path}: its safetensors header is not valid JSON ({exc})"]
    if not isinstance(header, dict):
        return [f"{path}: its safetensors header is not a JSON object"]
    data = size - 8 - n
    spans, problems = [], []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            problems.append(f"tensor {name!r}: header entry {entry!r} is not dtype/shape/data_offsets")
            continue
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
            continue
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            problems.append(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
            continue
        if not isinstance(offsets, list) or len(offsets) != 2 \
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data:
            problems.append(f"tensor {name!r}: data_offsets {offsets!r} lie outside the file's "
                            f"{data} data bytes")
            continue
        want = math.prod(shape) * SAFETENSORS_DTYPES[dtype]
        if offsets[1] - offsets[0] != want:
            problems.append(f"tensor {name!r}: {dtype} {shape} takes {want} bytes, its header gives "
                            f"it {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    at = 0
    for start, end, name in spans:
        if start != at:
            problems.append(f"tensor {name!r} starts at byte {start}, not {at}: the tensors overlap "
                            "or leave bytes no header entry describes")
            break
        at = end
    if not problems and at != data:
        problems.append(f"{path}: the tensors end at byte {at} of {data}")
    return problems


def tensor_problems(state: dict[str, Any], expected: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(dtype problems, non-finite problems) of ``state`` against the architecture's ``expected``."""
    import torch  # the caller has built a model already: torch is loaded

    dtypes, finite = [], []
    for name, value in state.items():
        if not torch.is_tensor(value):
            dtypes.append(f"{name} is a {type(value).__name__}, not a tensor")
            continue
        want = expected.get(name)
        if want is not None and value.dtype != want.dtype:
            dtypes.append(f"{name} is {value.dtype}, the architecture's is {want.dtype}")
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            finite.append(f"{name} holds {bad} NaN or infinite value(s)")
    return dtypes, finite
