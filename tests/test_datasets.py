"""Dataset entries, the validation slice and the real loading code fed with local files."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.core import datasets as D
from benchmark.core.registry import DATASETS, UnknownNameError

FASHION_SYSTEM_DIR = Path(D.DEFAULT_FASHION_MNIST_SYSTEM_DIR)


# --------------------------------------------------------------------------- registry entries
def test_registry_entries_resolve_to_dataset_info():
    for name in DATASETS.names():
        info = D.get_info(name)
        assert isinstance(info, D.DatasetInfo)
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels


def test_attack_defaults_and_shapes():
    c, s, f, i = (D.get_info(n) for n in ("cifar10", "svhn", "fashion-mnist", "imagenet"))
    assert (c.eps, c.steps, c.step_size) == (8 / 255, 10, 2 / 255)
    assert (s.eps, s.steps, s.step_size) == (8 / 255, 10, 2 / 255)
    assert (f.eps, f.steps, f.step_size) == (0.1, 10, 0.025)
    assert (i.eps, i.steps, i.step_size) == (4 / 255, 10, 1 / 255)
    assert (c.image_size, s.image_size, f.image_size, i.image_size) == (32, 32, 32, 224)
    assert (f.in_channels, f.num_classes, i.num_classes) == (1, 10, 1000)


def test_dataset_info_is_frozen():
    with pytest.raises(AttributeError):  # a frozen dataclass's FrozenInstanceError is one
        D.CIFAR10.eps = 0.5  # type: ignore[misc]


def test_unknown_dataset_lists_choices(tmp_path):
    with pytest.raises(UnknownNameError) as exc:
        D.get_info("mnist")
    assert "cifar10" in str(exc.value) and "fashion-mnist" in str(exc.value)
    with pytest.raises(UnknownNameError):
        D.build_splits("mnist", tmp_path, val_size=1)


# --------------------------------------------------------------------------- split logic
def test_split_indices_fixed_disjoint_and_seeded():
    train, val = D.split_indices(100, 10, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert sorted(train + val) == list(range(100))
    assert D.split_indices(100, 10, seed=3) == (train, val)
    assert D.split_indices(100, 10, seed=4)[1] != val
    with pytest.raises(ValueError):
        D.split_indices(10, 10)
    with pytest.raises(ValueError):
        D.split_indices(10, -1)


# --------------------------------------------------------------------------- CIFAR-10 (fake files)
def _write_cifar(root: Path, per_batch=4, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": x, "labels": y}, f)
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, size=(n_test, 3 * 32 * 32), dtype=np.uint8)
    ty = [int(v) for v in rng.integers(0, 10, size=n_test)]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": tx, "labels": ty}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    as_chw = lambda a: torch.from_numpy(a.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)  # noqa: E731
    return as_chw(np.vstack(train_x)), train_y, as_chw(tx), ty


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the md5 of the real archives; fake files only need to exist."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    exists = lambda fpath, md5=None: os.path.isfile(fpath)  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


def test_cifar10_splits_from_local_files(tmp_path, no_md5):
    train_x, train_y, test_x, test_y = _write_cifar(tmp_path)
    train, val, test = D.build_splits("cifar10", tmp_path, val_size=5, seed=7)
    assert (len(train), len(val), len(test)) == (15, 5, 6)
    exp_train, exp_val = D.split_indices(20, 5, seed=7)
    assert list(val.indices) == exp_val and list(train.indices) == exp_train
    # validation: the training images themselves, never augmented
    for i, idx in enumerate(exp_val):
        x, y = val[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert torch.allclose(x, train_x[idx]) and y == train_y[idx]
    # test: file order, no augmentation
    for i in range(6):
        x, y = test[i]
        assert torch.allclose(x, test_x[i]) and y == test_y[i]
    # train: augmented (a random crop of random pixels almost never equals the original), in [0, 1]
    idx = exp_train[0]
    draws = [train[0][0] for _ in range(8)]
    assert any(not torch.allclose(d, train_x[idx]) for d in draws)
    assert all(0.0 <= float(d.min()) and float(d.max()) <= 1.0 for d in draws)
    assert train[0][1] == train_y[idx]


def test_cifar10_subsets_and_no_augment(tmp_path, no_md5):
    train_x, _, test_x, _ = _write_cifar(tmp_path)
    train, val, test = D.build_splits("cifar10", tmp_path, val_size=4, seed=0, train_subset=3,
                                      test_subset=2, augment=False)
    exp_train, exp_val = D.split_indices(20, 4, seed=0)
    assert list(train.indices) == exp_train[:3]
    assert (len(val), len(test)) == (4, 2)
    assert torch.allclose(test[1][0], test_x[1])
    assert torch.allclose(train[2][0], train_x[exp_train[2]])  # augment=False: train is plain too
    assert set(train.indices).isdisjoint(val.indices)


def test_cifar10_missing_is_a_clear_error(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("cifar10", tmp_path, val_size=1)
    msg = str(exc.value)
    assert isinstance(exc.value, FileNotFoundError)
    assert "cifar10" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "data.download: true" in msg


# --------------------------------------------------------------------------- SVHN (fake .mat)
def test_svhn_splits_from_local_mat(tmp_path, no_md5):
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(1)
    folder = tmp_path / "svhn"
    folder.mkdir()
    made = {}
    for split, n in (("train", 12), ("test", 5)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # SVHN labels the digit 0 as 10
        y[0, 0] = 10
        sio.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        made[split] = (torch.from_numpy(x.transpose(3, 2, 0, 1).astype(np.float32) / 255.0),
                       [int(v) % 10 for v in y[:, 0]])
    train, val, test = D.build_splits("svhn", tmp_path, val_size=2, seed=0)
    assert (len(train), len(val), len(test)) == (10, 2, 5)
    tx, ty = made["test"]
    assert test[0][1] == 0  # 10 -> 0
    for i in range(5):
        assert torch.allclose(test[i][0], tx[i]) and test[i][1] == ty[i]
    rx, ry = made["train"]
    idx = val.indices[1]
    assert torch.allclose(val[1][0], rx[idx]) and val[1][1] == ry[idx]


def test_svhn_missing_is_a_clear_error(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("svhn", tmp_path, val_size=1)
    assert "svhn" in str(exc.value) and "train_32x32.mat" in str(exc.value)


# --------------------------------------------------------------------------- ImageNet (ImageFolder)
def _write_image_folder(base: Path, classes, per_class, size=(40, 30), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (base / c).mkdir(parents=True)
        for k in range(per_class):
            arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(base / c / f"{k}.png")


def test_imagenet_from_image_folders(tmp_path):
    _write_image_folder(tmp_path / "train", ["n01", "n02"], 4)
    _write_image_folder(tmp_path / "val", ["n01", "n02"], 2, seed=1)
    train, val, test = D.build_splits("imagenet", tmp_path / "data", val_size=2, seed=0,
                                      imagenet_root=tmp_path, imagenet_test="folder")
    assert (len(train), len(val), len(test)) == (6, 2, 4)
    for ds in (train, val, test):
        x, y = ds[0]
        assert x.shape == (3, 224, 224) and y in (0, 1)
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert [test[i][1] for i in range(4)] == [0, 0, 1, 1]
    # eval transform is deterministic (Resize + CenterCrop); train is a random resized crop
    assert torch.equal(val[0][0], val[0][0])


def test_imagenet_errors(tmp_path):
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("imagenet", tmp_path, val_size=1)
    assert "data.imagenet_root" in str(exc.value)
    _write_image_folder(tmp_path / "train", ["a", "b"], 2)
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("imagenet", tmp_path, val_size=1, imagenet_root=tmp_path, imagenet_test="folder")
    assert str(tmp_path / "val") in str(exc.value)
    _write_image_folder(tmp_path / "val", ["a", "c"], 1)
    with pytest.raises(ValueError, match="different class folders"):
        D.build_splits("imagenet", tmp_path, val_size=1, imagenet_root=tmp_path, imagenet_test="folder")


def test_imagenet_empty_tree_is_not_found(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(D.DatasetNotFoundError):
        D.build_splits("imagenet", tmp_path, val_size=1, imagenet_root=tmp_path, imagenet_test="folder")


# --------------------------------------------------------------------------- Fashion-MNIST (real)
def _read_idx_images(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)


def _read_idx_labels(path: Path) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read()[8:], dtype=np.uint8)


@pytest.mark.skipif(not (FASHION_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="apt-get install dataset-fashion-mnist")
@pytest.mark.slow
def test_fashion_mnist_from_debian_package(tmp_path):
    train, val, test = D.build_splits("fashion-mnist", tmp_path, val_size=1000, seed=0,
                                      train_subset=500, test_subset=100)
    assert (len(train), len(val), len(test)) == (500, 1000, 100)
    assert len(train.dataset) == 60_000 and len(test.dataset) == 10_000
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(D._FASHION_FILES)  # no temp files left
    test_images = _read_idx_images(FASHION_SYSTEM_DIR / "t10k-images-idx3-ubyte.gz")
    test_labels = _read_idx_labels(FASHION_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz")
    for i in (0, 57, 99):
        x, y = test[i]
        assert x.shape == (1, 32, 32)
        # zero-padded by 2 on every side, the 28x28 original inside
        assert torch.equal(x[0, 2:30, 2:30], torch.from_numpy(test_images[i].astype(np.float32) / 255))
        assert x[0, :2].abs().sum() == 0 and x[0, :, 30:].abs().sum() == 0
        assert y == int(test_labels[i])
    train_images = _read_idx_images(FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz")
    idx = val.indices[3]
    assert torch.equal(val[3][0][0, 2:30, 2:30],
                       torch.from_numpy(train_images[idx].astype(np.float32) / 255))
    assert train[0][0].shape == (1, 32, 32)
    # second call reuses the gunzipped files
    mtime = (raw / "t10k-images-idx3-ubyte").stat().st_mtime_ns
    D.build_splits("fashion-mnist", tmp_path, val_size=10, test_subset=1)
    assert (raw / "t10k-images-idx3-ubyte").stat().st_mtime_ns == mtime


def test_fashion_mnist_missing_names_the_apt_package(tmp_path):
    nope = tmp_path / "nope"
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("fashion-mnist", tmp_path / "data", val_size=10, fashion_mnist_system_dir=nope)
    msg = str(exc.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(nope) in msg and str(tmp_path / "data" / "FashionMNIST" / "raw") in msg


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    """download=True on a machine without internet: the URLError becomes DatasetNotFoundError."""
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(D.DatasetNotFoundError) as exc:
        D.build_splits("cifar10", tmp_path, val_size=1, download=True)
    assert "download failed" in str(exc.value) and "Name or service" in str(exc.value)
    # download is on already: the remedy must not send the user in a circle
    assert "set `data.download: true`" not in str(exc.value)
    assert "internet access" in str(exc.value)


# --------------------------------------------------------------------------- input checks
needs_debian_fashion = pytest.mark.skipif(
    not all((FASHION_SYSTEM_DIR / f"{f}.gz").is_file() for f in D.FASHION_MNIST_FILES),
    reason="apt-get install dataset-fashion-mnist")


@needs_debian_fashion
def test_fashion_mnist_hashes_are_those_of_the_decompressed_debian_files():
    import hashlib

    for name, (size, sha256) in D.FASHION_MNIST_FILES.items():
        data = gzip.open(FASHION_SYSTEM_DIR / f"{name}.gz").read()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256), name


@pytest.fixture(scope="module")
def fashion_raw(tmp_path_factory):
    """The four decompressed files, extracted once for the tests that damage copies of them."""
    root = tmp_path_factory.mktemp("fashion")
    D.build_splits("fashion-mnist", root, val_size=10, test_subset=1)
    return root / "FashionMNIST" / "raw"


def _fashion_copy(fashion_raw: Path, root: Path) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in D.FASHION_MNIST_FILES:
        (raw / f).write_bytes((fashion_raw / f).read_bytes())
    return raw


@pytest.mark.slow
@needs_debian_fashion
def test_fashion_mnist_with_a_flipped_byte_is_refused(fashion_raw, tmp_path):
    raw = _fashion_copy(fashion_raw, tmp_path)
    labels = raw / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[1000] ^= 0x01  # a label changes class: the size stays, only the hash can tell
    labels.write_bytes(bytes(data))
    with pytest.raises(D.DatasetCorruptError) as exc:
        D.build_splits("fashion-mnist", tmp_path, val_size=10)
    msg = str(exc.value)
    assert str(labels) in msg and "sha256" in msg
    assert f"rm {labels}" in msg and str(FASHION_SYSTEM_DIR) in msg  # the command that restores it
    assert isinstance(exc.value, ValueError)


@needs_debian_fashion
def test_truncated_fashion_mnist_is_refused(fashion_raw, tmp_path):
    raw = _fashion_copy(fashion_raw, tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-784])  # one image short
    with pytest.raises(D.DatasetCorruptError) as exc:
        D.build_splits("fashion-mnist", tmp_path, val_size=10)
    assert str(images) in str(exc.value) and "7840016" in str(exc.value)


@needs_debian_fashion
def test_a_restored_copy_is_accepted_again(fashion_raw, tmp_path):
    raw = _fashion_copy(fashion_raw, tmp_path)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\0" * labels.stat().st_size)
    with pytest.raises(D.DatasetCorruptError):
        D.build_splits("fashion-mnist", tmp_path, val_size=10)
    labels.unlink()  # the remedy the message gives: the next run extracts it again
    train, _, test = D.build_splits("fashion-mnist", tmp_path, val_size=10, test_subset=5)
    assert len(test) == 5


def _system_dir_with(tmp_path: Path, name: str, content: bytes) -> Path:
    system = tmp_path / "system"
    system.mkdir(parents=True)
    for f in D.FASHION_MNIST_FILES:
        (system / f"{f}.gz").symlink_to(FASHION_SYSTEM_DIR / f"{f}.gz")
    (system / f"{name}.gz").unlink()
    (system / f"{name}.gz").write_bytes(content)
    return system


@pytest.mark.slow
@needs_debian_fashion
def test_damaged_debian_package_is_not_extracted(tmp_path):
    name = "train-labels-idx1-ubyte"
    good = (FASHION_SYSTEM_DIR / f"{name}.gz").read_bytes()
    edited = bytearray(gzip.decompress(good))
    edited[100] = (edited[100] + 1) % 10  # another class for one image: valid gzip, valid labels
    for label, content in (("truncated", good[: len(good) // 2]), ("edited", gzip.compress(bytes(edited)))):
        case = tmp_path / label
        system = _system_dir_with(case, name, content)
        with pytest.raises(D.DatasetCorruptError) as exc:
            D.build_splits("fashion-mnist", case / "data", val_size=10, fashion_mnist_system_dir=system)
        msg = str(exc.value)
        assert str(system / f"{name}.gz") in msg, label
        assert "apt-get install --reinstall dataset-fashion-mnist" in msg, label
        raw = case / "data" / "FashionMNIST" / "raw"
        assert not (raw / name).exists(), label  # nothing a later run would trust
        assert not [p for p in raw.iterdir() if p.name.startswith(".")], label  # no temp files


@needs_debian_fashion
def test_fashion_mnist_is_hashed_once_per_process(fashion_raw, tmp_path, monkeypatch):
    import hashlib

    raw = _fashion_copy(fashion_raw, tmp_path)
    calls = []
    real = hashlib.file_digest

    def counting(fh, digest):
        calls.append(Path(fh.name).name)
        return real(fh, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    D.build_splits("fashion-mnist", tmp_path, val_size=10)
    assert sorted(calls) == sorted(D.FASHION_MNIST_FILES)
    calls.clear()
    D.build_splits("fashion-mnist", tmp_path, val_size=10)
    assert calls == []
    st = (raw / "t10k-labels-idx1-ubyte").stat()
    os.utime(raw / "t10k-labels-idx1-ubyte", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    D.build_splits("fashion-mnist", tmp_path, val_size=10)
    assert calls == ["t10k-labels-idx1-ubyte"]  # a file changed since is checked again


def test_labels_outside_the_class_range_are_refused(tmp_path, no_md5):
    _write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(batch, "rb") as f:
        entry = pickle.load(f)
    entry["labels"][1] = 10
    with open(batch, "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(D.DatasetCorruptError) as exc:
        D.build_splits("cifar10", tmp_path, val_size=1)
    assert "outside [0, 9]" in str(exc.value) and "[10]" in str(exc.value) and "train" in str(exc.value)


def test_cifar10_file_differing_from_torchvision_md5_is_named(tmp_path, monkeypatch):
    import hashlib

    import torchvision.datasets as tvd

    _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    md5 = lambda name: hashlib.md5((folder / name).read_bytes()).hexdigest()  # noqa: E731
    # the fake files stand in for the published ones: their MD5s become the expected ones
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5("batches.meta")})
    D.build_splits("cifar10", tmp_path, val_size=1)
    data = bytearray((folder / "data_batch_3").read_bytes())
    data[-5] ^= 0xFF
    (folder / "data_batch_3").write_bytes(bytes(data))
    with pytest.raises(D.DatasetCorruptError) as exc:
        D.build_splits("cifar10", tmp_path, val_size=1)
    msg = str(exc.value)
    assert str(folder / "data_batch_3") in msg and "data_batch_1" not in msg
    assert "data.download: true" in msg


def test_missing_files_reports_what_build_splits_would_not_find(tmp_path):
    nope = tmp_path / "no-system-dir"
    for name in ("cifar10", "svhn", "fashion-mnist"):
        problems = D.missing_files(name, tmp_path, fashion_mnist_system_dir=nope)
        assert len(problems) == 1 and problems[0].startswith(f"{name}:"), problems
        assert D.missing_files(name, tmp_path, download=True, fashion_mnist_system_dir=nope) == []
        with pytest.raises(D.DatasetNotFoundError):
            D.build_splits(name, tmp_path, val_size=1, fashion_mnist_system_dir=nope)
    assert "data.imagenet_root" in D.missing_files("imagenet", tmp_path)[0]
    assert str(tmp_path / "val") in D.missing_files("imagenet", tmp_path, imagenet_root=tmp_path)[0]
    _write_cifar(tmp_path)
    assert D.missing_files("cifar10", tmp_path) == []
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert "test_batch" in D.missing_files("cifar10", tmp_path)[0]


@needs_debian_fashion
def test_missing_files_accepts_the_debian_package(tmp_path):
    assert D.missing_files("fashion-mnist", tmp_path) == []


def test_datasets_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, benchmark.core.datasets, benchmark.core.errors; sys.exit('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0
