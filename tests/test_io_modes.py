"""Files the suite writes are atomic and get the mode a plain open() would give them (0644 under
the usual umask 022), never mkstemp's 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from benchmark.core import io
from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR


@pytest.fixture
def umask():
    """os.umask, with the process umask restored after the test."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_result_checkpoint_leaderboard_and_plot_are_0644(tmp_path, umask):
    umask(0o022)
    result = io.atomic_write_json(tmp_path / "runs" / "seed0.json", {"metrics": {"clean": {"acc": 0.5}}})
    ckpt = io.atomic_torch_save({"state_dict": {"w": torch.zeros(2)}, "masks": None, "meta": "{}"},
                                tmp_path / "model.pt")
    board = io.atomic_write_text(tmp_path / "leaderboard.md", "| method |\n")
    from benchmark.results.plots import _plt, _save

    fig = _plt().figure()
    plot = _save(fig, tmp_path / "plots" / "board.png")
    for path in (result, ckpt, board, plot):
        assert mode(path) == 0o644, (path, oct(mode(path)))
    assert plot.read_bytes()[:4] == b"\x89PNG"


DEBIAN_LABELS = Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR) / "t10k-labels-idx1-ubyte.gz"


@pytest.mark.skipif(not DEBIAN_LABELS.is_file(), reason="apt-get install dataset-fashion-mnist")
def test_extracted_dataset_copy_is_0644(tmp_path, umask):
    from benchmark.core import datasets as D

    umask(0o022)
    dst = tmp_path / "t10k-labels-idx1-ubyte"
    D._gunzip_checked(DEBIAN_LABELS, dst, *D.FASHION_MNIST_FILES[dst.name])
    assert mode(dst) == 0o644


def test_a_restrictive_umask_is_respected(tmp_path, umask):
    umask(0o077)
    assert mode(io.atomic_write_text(tmp_path / "private.txt", "x")) == 0o600


def test_failed_write_keeps_the_previous_file_and_no_temp(tmp_path):
    target = io.atomic_write_text(tmp_path / "leaderboard.csv", "old\n")
    with pytest.raises(RuntimeError):
        with io.atomic_open(target, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.csv"]


def test_checkpoint_bytes_do_not_depend_on_the_temporary_name(tmp_path):
    obj = {"state_dict": {"w": torch.arange(4.0)}, "meta": "{}"}
    a = io.atomic_torch_save(obj, tmp_path / "a.pt").read_bytes()
    b = io.atomic_torch_save(obj, tmp_path / "b.pt").read_bytes()
    assert a == b
