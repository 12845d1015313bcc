"""RobustBench's ImageNet test list: the 5,000 val images (997 classes) every ImageNet number of
the RobustBench leaderboard, and of the AP benchmark, is measured on.

The list ships with the robustbench package (``helper_files/imagenet_test_image_ids.txt``, one
``<wnid>/<file>`` per line); it is read from the installed package, never downloaded, and without
importing robustbench (whose import needs the shim of benchmark/core/robustbench_compat.py). Clean, PGD
and AutoAttack all evaluate these images, in the list's order.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from benchmark.core.errors import DatasetNotFoundError, MachineError

LIST_FILE = ("helper_files", "imagenet_test_image_ids.txt")
N_IMAGES = 5000


def list_path() -> Path:
    """The list's file in the installed robustbench package; a clear error when it is missing."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise MachineError(
            "ImageNet is evaluated on RobustBench's 5,000-image list, which ships with the "
            "robustbench package, and robustbench is not installed; install the extra: "
            "pip install -e '.[robustbench]'")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*LIST_FILE)
        if path.is_file():
            return path
    raise MachineError(
        f"the installed robustbench ({', '.join(spec.submodule_search_locations)}) has no "
        f"{'/'.join(LIST_FILE)}; reinstall the extra: pip install -e '.[robustbench]'")


def image_ids(path: str | Path | None = None) -> list[str]:
    """The list's entries, ``<wnid>/<file name>``, in its order."""
    path = Path(path) if path is not None else list_path()
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(ids) != N_IMAGES or len(set(ids)) != N_IMAGES:
        raise DatasetNotFoundError(f"{path} lists {len(set(ids))} distinct images, not RobustBench's "
                                   f"{N_IMAGES}: the installed robustbench is not the expected one")
    return ids


def samples(val_root: str | Path, class_to_idx: dict[str, int], ids: list[str] | None = None
            ) -> list[tuple[str, int]]:
    """(path, label) of every listed image under ``val_root`` (labels from the training tree's
    class folders); an error naming the first listed file val/ lacks."""
    val_root = Path(val_root)
    ids = image_ids() if ids is None else ids
    out = []
    for i, entry in enumerate(ids):
        wnid = entry.split("/", 1)[0]
        path = val_root / entry
        if wnid not in class_to_idx:
            raise DatasetNotFoundError(
                f"imagenet: RobustBench's list names class {wnid!r} ({entry}, entry {i + 1}), which "
                f"train/ has no folder for; train/ and val/ must hold the 1,000 ImageNet classes")
        if not path.is_file():
            raise DatasetNotFoundError(
                f"imagenet: {path} is missing: val/ must hold the 5,000 images of RobustBench's "
                f"list ({list_path_text()}), in class folders (val/<wnid>/<file>); this is entry "
                f"{i + 1}, the first one missing")
        out.append((str(path), class_to_idx[wnid]))
    return out


def list_path_text() -> str:
    try:
        return str(list_path())
    except MachineError:
        return "/".join(LIST_FILE)


def first_missing(val_root: str | Path) -> str | None:
    """The first listed file val/ lacks (None when all are there); for the preflight check."""
    val_root = Path(val_root)
    return next((str(val_root / e) for e in image_ids() if not (val_root / e).is_file()), None)
