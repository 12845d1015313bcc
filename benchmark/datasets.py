"""Datasets: registry entries, loaders, the validation slice and clear offline errors.

Inputs stay in [0, 1] (every transform ends in ToTensor): attacks clip to that box and eps is
measured there, so normalisation lives inside the model (``benchmark.models.Normalized``) with the
``mean``/``std`` recorded here.

Model selection must never touch the test set, so ``build_splits`` cuts a fixed validation slice
out of the training data. The slice is a function of (dataset length, seed, val_size) only, so every
stage and every method of one experiment sees the same images.
"""
from __future__ import annotations

import copy
import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmark.registry import DATASETS

DEFAULT_FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on disk; the message says where we looked and how to get them."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int  # what the models see (after padding / cropping)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float  # default L-inf attack radius, in [0, 1] pixel units
    steps: int
    step_size: float
    train_size: int  # nominal sizes of the full splits, before the validation slice
    test_size: int
    loader: str  # name of the private builder in _LOADERS


CIFAR10 = DatasetInfo(
    name="cifar10", num_classes=10, in_channels=3, image_size=32,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    eps=8 / 255, steps=10, step_size=2 / 255, train_size=50_000, test_size=10_000, loader="cifar10")

SVHN = DatasetInfo(
    name="svhn", num_classes=10, in_channels=3, image_size=32,
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    eps=8 / 255, steps=10, step_size=2 / 255, train_size=73_257, test_size=26_032, loader="svhn")

# Statistics of the 32x32 zero-padded images the models actually see (the 28x28 values are
# 0.2860 / 0.3530); measured on the 60k training images.
FASHION_MNIST = DatasetInfo(
    name="fashion-mnist", num_classes=10, in_channels=1, image_size=32,
    mean=(0.2190,), std=(0.3318,),
    eps=0.1, steps=10, step_size=0.025, train_size=60_000, test_size=10_000, loader="fashion_mnist")

IMAGENET = DatasetInfo(
    name="imagenet", num_classes=1000, in_channels=3, image_size=224,
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    eps=4 / 255, steps=10, step_size=1 / 255, train_size=1_281_167, test_size=50_000,
    loader="imagenet")


def get_info(name: str) -> DatasetInfo:
    """The registry entry; an unknown name raises UnknownNameError listing the valid ones."""
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    return DATASETS.names()


# ------------------------------------------------------------------------------- transforms
def _transforms(name: str, augment: bool):
    """(train_transform, eval_transform); both end in ToTensor so pixels stay in [0, 1]."""
    from torchvision import transforms as T

    if name == "cifar10":
        train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        evaluation: list = []
    elif name == "svhn":
        # no flip: mirrored digits (2, 5, 7, ...) are not digits of the same class
        train = [T.RandomCrop(32, padding=4)]
        evaluation = []
    elif name == "fashion-mnist":
        # pad 28 -> 32 first so every model sees the 32x32 input the CIFAR architectures expect
        train = [T.Pad(2), T.RandomCrop(32, padding=2)]
        evaluation = [T.Pad(2)]
    elif name == "imagenet":
        train = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
        evaluation = [T.Resize(256), T.CenterCrop(224)]
    else:  # pragma: no cover - guarded by the registry
        raise AssertionError(name)
    if not augment:
        train = list(evaluation)
    return T.Compose([*train, T.ToTensor()]), T.Compose([*evaluation, T.ToTensor()])


def _with_transform(ds, transform):
    """A second view of a loaded torchvision dataset with another transform.

    A shallow copy shares the decoded arrays (CIFAR: 150 MB) or the file list (ImageNet: a scan of
    1.28M files) instead of loading them twice; only the transform differs between the views.
    """
    from torchvision.datasets.vision import StandardTransform

    view = copy.copy(ds)
    view.transform = transform
    view.transforms = StandardTransform(transform, getattr(ds, "target_transform", None))
    return view


# ------------------------------------------------------------------------------- loaders
# Each loader returns (full_train, test) with the eval transform applied to both; build_splits
# makes the augmented training view.

def _not_found(name: str, searched: list[Path], remedy: str) -> DatasetNotFoundError:
    paths = "\n  ".join(str(p) for p in searched)
    return DatasetNotFoundError(f"dataset {name!r} not found; searched:\n  {paths}\n{remedy}")


def _is_missing(exc: Exception, download: bool) -> bool:
    """torchvision's "Dataset not found or corrupted" RuntimeError, or (with download=True) the
    URLError/OSError of a machine without internet; anything else is a real bug and propagates."""
    if isinstance(exc, RuntimeError):
        return "not found" in str(exc).lower()
    return download and isinstance(exc, OSError) and not isinstance(exc, DatasetNotFoundError)


def _download_remedy(root: Path, files: str, exc: Exception | None = None) -> str:
    failed = f"The download failed ({exc}). " if isinstance(exc, OSError) else ""
    return (f"{failed}To fix: rerun with `data.download: true` on a machine with internet access, "
            f"or place the torchvision files ({files}) under {root}.")


def _load_cifar10(root: Path, eval_tf, *, download: bool, **_):
    from torchvision import datasets

    try:
        train = datasets.CIFAR10(str(root), train=True, transform=eval_tf, download=download)
        test = datasets.CIFAR10(str(root), train=False, transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        raise _not_found("cifar10", [root / "cifar-10-batches-py"], _download_remedy(
            root, "cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta", exc)) from exc
    return train, test


def _load_svhn(root: Path, eval_tf, *, download: bool, **_):
    from torchvision import datasets

    # torchvision puts SVHN's .mat files straight into root; a subfolder keeps them apart from
    # the other datasets sharing the data root
    svhn_root = root / "svhn"
    try:
        train = datasets.SVHN(str(svhn_root), split="train", transform=eval_tf, download=download)
        test = datasets.SVHN(str(svhn_root), split="test", transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        raise _not_found("svhn", [svhn_root / "train_32x32.mat", svhn_root / "test_32x32.mat"],
                         _download_remedy(svhn_root, "train_32x32.mat, test_32x32.mat", exc)) from exc
    return train, test


_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _gunzip_atomic(src: Path, dst: Path) -> None:
    """Decompress to a temporary name and rename, so a concurrent or killed job never leaves a
    truncated file that torchvision would then trust."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _provide_fashion_mnist(root: Path, system_dir: Path) -> bool:
    """Fills root/FashionMNIST/raw/ from the Debian package's .gz files; False if they are absent."""
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).is_file() for f in _FASHION_FILES):
        return True
    sources = [system_dir / f"{f}.gz" for f in _FASHION_FILES]
    if not all(s.is_file() for s in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for f, src in zip(_FASHION_FILES, sources):
        if not (raw / f).is_file():
            _gunzip_atomic(src, raw / f)
    return True


def _load_fashion_mnist(root: Path, eval_tf, *, download: bool,
                        fashion_mnist_system_dir: str | Path = DEFAULT_FASHION_MNIST_SYSTEM_DIR, **_):
    from torchvision import datasets

    system_dir = Path(fashion_mnist_system_dir)
    raw = root / "FashionMNIST" / "raw"
    # the local copy from the Debian package wins over a download: same files, no network
    if not _provide_fashion_mnist(root, system_dir) and not download:
        raise _not_found("fashion-mnist", [raw, system_dir], (
            "To fix: `apt-get install dataset-fashion-mnist` (it installs the .gz files into "
            f"{DEFAULT_FASHION_MNIST_SYSTEM_DIR}), or rerun with `data.download: true` on a "
            f"machine with internet access, or place {', '.join(_FASHION_FILES)} under {raw}."))
    try:
        train = datasets.FashionMNIST(str(root), train=True, transform=eval_tf, download=download)
        test = datasets.FashionMNIST(str(root), train=False, transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        raise _not_found("fashion-mnist", [raw, system_dir],
                         f"({exc}) To fix: `apt-get install dataset-fashion-mnist`.") from exc
    return train, test


def _load_imagenet(root: Path, eval_tf, *, imagenet_root: str | Path | None = None, **_):
    from torchvision import datasets

    remedy = ("To fix: pass `data.imagenet_root` pointing at a folder with train/ and val/ "
              "ImageFolder trees (one subfolder of images per class, the same classes in both); "
              "ImageNet cannot be downloaded automatically.")
    if imagenet_root is None:
        raise _not_found("imagenet", [], "data.imagenet_root is not set. " + remedy)
    base = Path(imagenet_root)
    splits = {}
    for split in ("train", "val"):
        path = base / split
        if not path.is_dir():
            raise _not_found("imagenet", [path], remedy)
        try:
            splits[split] = datasets.ImageFolder(str(path), transform=eval_tf)
        except FileNotFoundError as exc:  # no class folders, or no images in them
            raise _not_found("imagenet", [path], f"{exc}\n{remedy}") from exc
    if splits["train"].classes != splits["val"].classes:
        # labels are class-folder indices: different folder sets would silently mislabel val
        raise ValueError(f"imagenet train/ and val/ under {base} have different class folders "
                         f"({len(splits['train'].classes)} vs {len(splits['val'].classes)})")
    return splits["train"], splits["val"]


_LOADERS: dict[str, Callable] = {
    "cifar10": _load_cifar10,
    "svhn": _load_svhn,
    "fashion_mnist": _load_fashion_mnist,
    "imagenet": _load_imagenet,
}


# ------------------------------------------------------------------------------- splits
def split_indices(n: int, val_size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train_indices, val_indices) of a training set of n images: a seeded permutation whose
    first val_size entries are validation. Depends only on (n, val_size, seed)."""
    import torch

    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n - 1}] for a training set of {n} images, "
                         f"got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[val_size:], perm[:val_size]


def build_splits(name: str, root: str | Path, *, val_size: int, train_subset: int | None = None,
                 test_subset: int | None = None, seed: int = 0, augment: bool = True,
                 download: bool = False, imagenet_root: str | Path | None = None,
                 fashion_mnist_system_dir: str | Path = DEFAULT_FASHION_MNIST_SYSTEM_DIR):
    """(train, val, test) datasets yielding (float tensor in [0, 1] of shape (C, S, S), int label).

    val is a fixed slice of the training data seen without augmentation; train_subset keeps the
    first N of the remaining (already shuffled) training indices; test_subset keeps the first N
    test images in file order, so per-image flags of two runs refer to the same images.
    """
    from torch.utils.data import Subset

    info = get_info(name)
    root = Path(root)
    train_tf, eval_tf = _transforms(info.name, augment)
    full_eval, test = _LOADERS[info.loader](
        root, eval_tf, download=download, imagenet_root=imagenet_root,
        fashion_mnist_system_dir=fashion_mnist_system_dir)
    full_train = _with_transform(full_eval, train_tf)

    train_idx, val_idx = split_indices(len(full_eval), val_size, seed)
    if train_subset is not None:
        if train_subset <= 0:
            raise ValueError(f"train_subset must be positive, got {train_subset}")
        train_idx = train_idx[:train_subset]
    test_idx = list(range(len(test)))
    if test_subset is not None:
        if test_subset <= 0:
            raise ValueError(f"test_subset must be positive, got {test_subset}")
        test_idx = test_idx[:test_subset]
    return Subset(full_train, train_idx), Subset(full_eval, val_idx), Subset(test, test_idx)
