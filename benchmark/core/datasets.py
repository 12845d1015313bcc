"""Datasets: registry entries, loaders, the validation slice, input checks and clear offline errors.

Long because each dataset's offline checks (sizes, checksums, the command that restores a file) sit
beside the loader that reads it.

Inputs stay in [0, 1] (every transform ends in ToTensor): attacks clip to that box and eps is
measured there, so normalisation lives inside the model (``benchmark.core.models.Normalized``) with the
``mean``/``std`` recorded here.

Model selection must never touch the test set, so ``build_splits`` cuts a fixed validation slice
out of the training data. The slice is a function of (dataset length, seed, val_size) only, so every
stage and every method of one experiment sees the same images.

What is checked before the data is used (a failure is a ``DatasetError`` naming the file and the
command that restores it):

- fashion-mnist: the four files torchvision reads (``FashionMNIST/raw/*-ubyte``) by size and by the
  sha256 of their decompressed bytes (``FASHION_MNIST_FILES``), once per file per process; the
  Debian package's .gz are hashed while they are extracted, so a damaged package never leaves a copy.
- cifar10, svhn: torchvision's own MD5 of the extracted files (every batch file and batches.meta;
  train_32x32.mat and test_32x32.mat), checked by torchvision at every load; on a mismatch we name
  the files that differ.
- imagenet: the user's own ImageFolder trees have no published hashes; train/ and val/ must hold
  the same class folders.
- every dataset: labels outside [0, num_classes) are refused.
"""
from __future__ import annotations

import copy
import gzip
import hashlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmark.core import imagenet_list
from benchmark.core.choices import IMAGENET_TESTS
from benchmark.core.errors import ConfigError, DatasetCorruptError, DatasetError, DatasetNotFoundError
from benchmark.core.io import atomic_open
from benchmark.core.registry import DATASETS

DEFAULT_FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

__all__ = ["DatasetInfo", "DatasetNotFoundError", "DatasetCorruptError", "get_info", "dataset_names",
           "build_splits", "split_indices", "missing_files", "FASHION_MNIST_FILES"]


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
    from torchvision import transforms as T  # deferred: torchvision

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
    from torchvision.datasets.vision import StandardTransform  # deferred: torchvision

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


def _download_remedy(root: Path, files: str, download: bool, exc: Exception | None = None) -> str:
    if download:
        # data.download is already on: advising it again would send the user in a circle
        failed = f"The download failed ({exc}). " if isinstance(exc, OSError) else ""
        return (f"{failed}To fix: run once on a machine with internet access (same data.root) and "
                f"copy {root} here, or place the torchvision files ({files}) under {root}.")
    return (f"To fix: set `data.download: true` (needs internet access), or place the "
            f"torchvision files ({files}) under {root}.")


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _torchvision_file_problems(name: str, files: Iterable[tuple[Path, str]], *, remedy_corrupt: str,
                               remedy_missing: str, searched: list[Path]) -> DatasetError:
    """Which of the files torchvision checks by MD5 is missing or differs: torchvision's own error
    ("not found or corrupted") names neither the file nor the difference."""
    files = list(files)
    missing, corrupt = [], []
    for path, md5 in files:
        if not path.is_file():
            missing.append(path)
        elif _md5(path) != md5:
            corrupt.append(path)
    if corrupt:
        listed = "\n  ".join(str(p) for p in corrupt)
        return DatasetCorruptError(
            f"dataset {name!r}: {len(corrupt)} file(s) differ from the published ones (MD5):\n"
            f"  {listed}\n{remedy_corrupt}")
    # name single missing files; when none is there, the folder says it
    return _not_found(name, missing if 0 < len(missing) < len(files) else searched, remedy_missing)


def _check_labels(name: str, split: str, ds, num_classes: int, source: Path) -> None:
    """Labels outside [0, num_classes) would index past the model's output: refuse them."""
    import numpy as np  # deferred: numpy

    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        values = sorted({int(v) for v in labels[bad][:20]})
        raise DatasetCorruptError(
            f"dataset {name!r} ({split} split, {source}): {int(bad.sum())} label(s) outside "
            f"[0, {num_classes - 1}], e.g. {values}; the files are not the published dataset")


_CIFAR_FOLDER = "cifar-10-batches-py"


def _load_cifar10(root: Path, eval_tf, *, download: bool, **_):
    from torchvision import datasets  # deferred: torchvision

    folder = root / _CIFAR_FOLDER
    files = "cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta"
    try:
        train = datasets.CIFAR10(str(root), train=True, transform=eval_tf, download=download)
        test = datasets.CIFAR10(str(root), train=False, transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        cls = datasets.CIFAR10
        checked = [(folder / f, md5) for f, md5 in cls.train_list + cls.test_list]
        checked.append((folder / cls.meta["filename"], cls.meta["md5"]))
        raise _torchvision_file_problems(
            "cifar10", checked,
            remedy_corrupt=(f"To fix: delete {folder} and rerun with `data.download: true` "
                            "(torchvision downloads cifar-10-python.tar.gz, checks its MD5 and "
                            f"extracts it), or extract a good cifar-10-python.tar.gz into {root}."),
            remedy_missing=_download_remedy(root, files, download, exc),
            searched=[folder]) from exc
    _check_labels("cifar10", "train", train, CIFAR10.num_classes, folder)
    _check_labels("cifar10", "test", test, CIFAR10.num_classes, folder)
    return train, test


def _load_svhn(root: Path, eval_tf, *, download: bool, **_):
    from torchvision import datasets  # deferred: torchvision

    # torchvision puts SVHN's .mat files straight into root; a subfolder keeps them apart from
    # the other datasets sharing the data root
    svhn_root = root / "svhn"
    try:
        train = datasets.SVHN(str(svhn_root), split="train", transform=eval_tf, download=download)
        test = datasets.SVHN(str(svhn_root), split="test", transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        checked = [(svhn_root / datasets.SVHN.split_list[s][1], datasets.SVHN.split_list[s][2])
                   for s in ("train", "test")]
        raise _torchvision_file_problems(
            "svhn", checked,
            remedy_corrupt=("To fix: delete the file(s) and rerun with `data.download: true`, or "
                            f"place good copies of train_32x32.mat and test_32x32.mat in {svhn_root}."),
            remedy_missing=_download_remedy(svhn_root, "train_32x32.mat, test_32x32.mat", download, exc),
            searched=[p for p, _ in checked]) from exc
    _check_labels("svhn", "train", train, SVHN.num_classes, svhn_root)
    _check_labels("svhn", "test", test, SVHN.num_classes, svhn_root)
    return train, test


# Size and sha256 of the decompressed files (the bytes torchvision reads). The compressed .gz of
# the Debian package differ byte-wise from the ones torchvision downloads (other gzip headers), so
# torchvision's MD5s of the .gz would refuse real data; the decompressed bytes are the same.
FASHION_MNIST_FILES: dict[str, tuple[int, str]] = {
    "train-images-idx3-ubyte": (47_040_016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (60_008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (7_840_016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (10_008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
_FASHION_FILES = tuple(FASHION_MNIST_FILES)
_REINSTALL = "apt-get install --reinstall dataset-fashion-mnist"

# files verified in this process, keyed by path, with the (size, mtime_ns) they had then: each job
# hashes its 55 MB once (about 0.03 s with SHA extensions), and a file replaced since is hashed again
_VERIFIED: dict[str, tuple[int, int]] = {}


def _verify_file(path: Path, size: int, sha256: str, remedy: str) -> None:
    st = path.stat()
    key = str(path.resolve())
    if _VERIFIED.get(key) == (st.st_size, st.st_mtime_ns):
        return
    if st.st_size != size:
        raise DatasetCorruptError(f"dataset file {path} has {st.st_size} bytes, expected {size} "
                                  f"(truncated or not the published file). {remedy}")
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest != sha256:
        raise DatasetCorruptError(f"dataset file {path} has sha256 {digest}, expected {sha256} "
                                  f"(its content differs from the published file). {remedy}")
    _VERIFIED[key] = (st.st_size, st.st_mtime_ns)


def _gunzip_checked(src: Path, dst: Path, size: int, sha256: str) -> None:
    """Decompress to a temporary name, hashing on the way, and rename only a verified result: a
    concurrent or killed job never leaves a truncated file, and a damaged package never leaves a
    copy that later runs would trust."""
    remedy = f"To fix: `{_REINSTALL}` restores {src}."
    h, n = hashlib.sha256(), 0
    try:
        with atomic_open(dst, "wb") as out, gzip.open(src, "rb") as inp:
            while chunk := inp.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
                out.write(chunk)
            if n != size or h.hexdigest() != sha256:
                raise DatasetCorruptError(
                    f"dataset file {src} decompresses to {n} bytes with sha256 {h.hexdigest()}, "
                    f"expected {size} bytes with sha256 {sha256}. {remedy}")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetCorruptError(f"dataset file {src} cannot be decompressed ({exc}). {remedy}") from exc
    _VERIFIED[str(dst.resolve())] = (dst.stat().st_size, dst.stat().st_mtime_ns)


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
            _gunzip_checked(src, raw / f, *FASHION_MNIST_FILES[f])
    return True


def _verify_fashion_mnist(raw: Path, system_dir: Path, download: bool) -> None:
    for f, (size, sha256) in FASHION_MNIST_FILES.items():
        path = raw / f
        source = system_dir / f"{f}.gz"
        if source.is_file():
            origin = f"the next run extracts it again from {source} (if that fails too: `{_REINSTALL}`)"
        elif download:
            origin = "the next run downloads it again"
        else:
            origin = "then `apt-get install dataset-fashion-mnist`, or set `data.download: true`"
        _verify_file(path, size, sha256, f"To fix: delete it (`rm {path}`); {origin}.")


def _load_fashion_mnist(root: Path, eval_tf, *, download: bool,
                        fashion_mnist_system_dir: str | Path = DEFAULT_FASHION_MNIST_SYSTEM_DIR, **_):
    from torchvision import datasets  # deferred: torchvision

    system_dir = Path(fashion_mnist_system_dir)
    raw = root / "FashionMNIST" / "raw"
    # the local copy from the Debian package wins over a download: same files, no network
    provided = _provide_fashion_mnist(root, system_dir)
    if not provided and not download:
        raise _not_found("fashion-mnist", [raw, system_dir], (
            "To fix: `apt-get install dataset-fashion-mnist` (it installs the .gz files into "
            f"{DEFAULT_FASHION_MNIST_SYSTEM_DIR}), or set `data.download: true` on a "
            f"machine with internet access, or place {', '.join(_FASHION_FILES)} under {raw}."))
    if provided:
        # before torchvision parses them: a truncated idx file would fail there with a bare shape error
        _verify_fashion_mnist(raw, system_dir, download)
    try:
        train = datasets.FashionMNIST(str(root), train=True, transform=eval_tf, download=download)
        test = datasets.FashionMNIST(str(root), train=False, transform=eval_tf, download=download)
    except (RuntimeError, OSError) as exc:
        if not _is_missing(exc, download):
            raise
        failed = f"The download failed ({exc}). " if isinstance(exc, OSError) else f"({exc}) "
        raise _not_found("fashion-mnist", [raw, system_dir],
                         f"{failed}To fix: `apt-get install dataset-fashion-mnist`.") from exc
    _verify_fashion_mnist(raw, system_dir, download)  # downloaded just now, or verified above (cached)
    _check_labels("fashion-mnist", "train", train, FASHION_MNIST.num_classes, raw)
    _check_labels("fashion-mnist", "test", test, FASHION_MNIST.num_classes, raw)
    return train, test


def _load_imagenet(root: Path, eval_tf, *, imagenet_root: str | Path | None = None,
                   imagenet_test: str = "robustbench", **_):
    """train/ and the test images: RobustBench's 5,000-image list from val/ (benchmark/
    imagenet_list.py; labels from train/'s class folders), or every image of val/ ("folder")."""
    from torchvision import datasets  # deferred: torchvision

    remedy = ("To fix: pass `data.imagenet_root` pointing at a folder with train/ and val/ "
              "ImageFolder trees (one subfolder of images per class, the same classes in both); "
              "ImageNet cannot be downloaded automatically.")
    if imagenet_root is None:
        raise _not_found("imagenet", [], "data.imagenet_root is not set. " + remedy)
    base = Path(imagenet_root)

    if imagenet_test not in IMAGENET_TESTS:
        raise ConfigError(f"data.imagenet_test: {imagenet_test!r}; valid: {', '.join(IMAGENET_TESTS)}")
    splits = {}
    for split in ("train", "val") if imagenet_test == "folder" else ("train",):
        path = base / split
        if not path.is_dir():
            raise _not_found("imagenet", [path], remedy)
        try:
            splits[split] = datasets.ImageFolder(str(path), transform=eval_tf)
        except FileNotFoundError as exc:  # no class folders, or no images in them
            raise _not_found("imagenet", [path], f"{exc}\n{remedy}") from exc
    if imagenet_test == "robustbench":

        if not (base / "val").is_dir():
            raise _not_found("imagenet", [base / "val"], remedy)
        train = splits["train"]
        _check_labels("imagenet", "train", train, IMAGENET.num_classes, base / "train")
        # the train view's class folders label the listed val images; only the samples differ
        test = copy.copy(train)
        test.root = str(base / "val")
        test.samples = imagenet_list.samples(base / "val", train.class_to_idx)
        test.imgs = test.samples
        test.targets = [label for _, label in test.samples]
        return train, test
    if splits["train"].classes != splits["val"].classes:
        # labels are class-folder indices: different folder sets would silently mislabel val
        raise DatasetCorruptError(
            f"imagenet train/ and val/ under {base} have different class folders "
            f"({len(splits['train'].classes)} vs {len(splits['val'].classes)})")
    for split, ds in splits.items():
        _check_labels("imagenet", split, ds, IMAGENET.num_classes, base / split)
    return splits["train"], splits["val"]


_LOADERS: dict[str, Callable] = {
    "cifar10": _load_cifar10,
    "svhn": _load_svhn,
    "fashion_mnist": _load_fashion_mnist,
    "imagenet": _load_imagenet,
}


def missing_files(name: str, root: str | Path, *, download: bool = False,
                  imagenet_root: str | Path | None = None,
                  fashion_mnist_system_dir: str | Path = DEFAULT_FASHION_MNIST_SYSTEM_DIR) -> list[str]:
    """What would stop ``build_splits`` from finding the dataset on this machine, as messages with
    the remedy (empty: nothing). Existence only, no hashing and no torch: cheap enough to run for
    every dataset of a preset before the first job. A missing file that ``download`` would fetch
    is not reported."""
    info = get_info(name)
    root = Path(root)
    if info.name == "fashion-mnist":
        raw, system = root / "FashionMNIST" / "raw", Path(fashion_mnist_system_dir)
        if download or all((raw / f).is_file() for f in _FASHION_FILES) \
                or all((system / f"{f}.gz").is_file() for f in _FASHION_FILES):
            return []
        return [f"fashion-mnist: neither {raw} nor {system} holds the four files; "
                "`apt-get install dataset-fashion-mnist`, or set `data.download: true`"]
    if info.name in ("cifar10", "svhn"):
        folder, files = ((root / _CIFAR_FOLDER, [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                                                 "batches.meta"])
                         if info.name == "cifar10" else (root / "svhn", ["train_32x32.mat", "test_32x32.mat"]))
        absent = [f for f in files if not (folder / f).is_file()]
        if download or not absent:
            return []
        return [f"{info.name}: {', '.join(absent)} missing in {folder}; set `data.download: true` "
                "(needs internet access) or place the torchvision files there"]
    if imagenet_root is None:
        return ["imagenet: data.imagenet_root is not set; point it at a folder with train/ and val/"]
    absent = [str(Path(imagenet_root) / s) for s in ("train", "val") if not (Path(imagenet_root) / s).is_dir()]
    return [f"imagenet: {', '.join(absent)} not found (data.imagenet_root)"] if absent else []


# ------------------------------------------------------------------------------- splits
def labels_of(ds) -> list[int]:
    """The labels of a dataset in item order, read without decoding an image where the dataset
    holds them (torchvision's ``targets``/``labels``, a Subset of such, a TensorDataset)."""
    import numpy as np  # deferred: numpy
    from torch.utils.data import Subset, TensorDataset  # deferred: torch

    if isinstance(ds, Subset):
        inner = labels_of(ds.dataset)
        return [inner[int(i)] for i in ds.indices]
    if isinstance(ds, TensorDataset):
        return [int(v) for v in ds.tensors[1].tolist()]
    for attr in ("targets", "labels"):
        values = getattr(ds, attr, None)
        if values is not None:
            return [int(v) for v in np.asarray(values).reshape(-1).tolist()]
    return [int(ds[i][1]) for i in range(len(ds))]


def majority_share(ds) -> float | None:
    """The fraction of the set's images in its most frequent class: the accuracy of a model that
    always answers that class (None for an empty set). A model no better than this has learned
    nothing; the leaderboard flags such results as degenerate."""

    labels = labels_of(ds)
    if not labels:
        return None
    return max(Counter(labels).values()) / len(labels)


def split_indices(n: int, val_size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train_indices, val_indices) of a training set of n images: a seeded permutation whose
    first val_size entries are validation. Depends only on (n, val_size, seed)."""
    import torch  # deferred: torch

    if not 0 <= val_size < n:
        raise ConfigError(f"data.val_size must be in [0, {n - 1}] for a training set of {n} "
                          f"images, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[val_size:], perm[:val_size]


def build_splits(name: str, root: str | Path, *, val_size: int, train_subset: int | None = None,
                 test_subset: int | None = None, seed: int = 0, augment: bool = True,
                 download: bool = False, imagenet_root: str | Path | None = None,
                 imagenet_test: str = "robustbench",
                 fashion_mnist_system_dir: str | Path = DEFAULT_FASHION_MNIST_SYSTEM_DIR,
                 synthetic: bool = False):
    """(train, val, test) datasets yielding (float tensor in [0, 1] of shape (C, S, S), int label).

    val is a fixed slice of the training data seen without augmentation; train_subset keeps the
    first N of the remaining (already shuffled) training indices; test_subset keeps the first N
    test images in file order, so per-image flags of two runs refer to the same images.
    ``synthetic`` replaces the files by stand-in images of the dataset's shape
    (benchmark/core/synthetic.py; no augmentation), cut into the same splits.
    """
    from torch.utils.data import Subset  # deferred: torch

    info = get_info(name)
    root = Path(root)
    if synthetic:
        from benchmark.core.synthetic import synthetic_splits  # deferred: torch

        full_eval, test = synthetic_splits(info)
        full_train = full_eval
    else:
        train_tf, eval_tf = _transforms(info.name, augment)
        full_eval, test = _LOADERS[info.loader](
            root, eval_tf, download=download, imagenet_root=imagenet_root, imagenet_test=imagenet_test,
            fashion_mnist_system_dir=fashion_mnist_system_dir)
        full_train = _with_transform(full_eval, train_tf)

    train_idx, val_idx = split_indices(len(full_eval), val_size, seed)
    if train_subset is not None:
        if train_subset <= 0:
            raise ConfigError(f"data.train_subset must be positive, got {train_subset}")
        train_idx = train_idx[:train_subset]
    test_idx = list(range(len(test)))
    if test_subset is not None:
        if test_subset <= 0:
            raise ConfigError(f"data.test_subset must be positive, got {test_subset}")
        test_idx = test_idx[:test_subset]
    return Subset(full_train, train_idx), Subset(full_eval, val_idx), Subset(test, test_idx)
