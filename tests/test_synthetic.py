"""Synthetic stand-in data (data.synthetic): the real dataset's shape, classes, split sizes and
normalisation, the same images in every process, learnable, and no file read."""
from __future__ import annotations

import pytest
import torch

from benchmark.core.datasets import build_splits, get_info
from benchmark.core.synthetic import SyntheticImages, synthetic_splits


@pytest.mark.parametrize("name", ["cifar10", "svhn", "fashion-mnist", "imagenet"])
def test_the_real_datasets_shape_classes_and_sizes(name, tmp_path):
    info = get_info(name)
    train, val, test = build_splits(name, tmp_path / "nothing-here", val_size=10, train_subset=20,
                                    test_subset=12, synthetic=True)
    assert not (tmp_path / "nothing-here").exists()  # nothing read, nothing downloaded
    x, y = train[0]
    assert x.shape == (info.in_channels, info.image_size, info.image_size) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y < info.num_classes
    assert (len(train), len(val), len(test)) == (20, 10, 12)
    full_train, full_test = synthetic_splits(info)
    assert (len(full_train), len(full_test)) == (info.train_size, info.test_size)


def test_the_same_images_in_every_process_and_different_across_splits():
    info = get_info("cifar10")
    a, b = SyntheticImages(info, "test", 100), SyntheticImages(info, "test", 100)
    for i in (0, 7, 99):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]
    assert not torch.equal(SyntheticImages(info, "train", 100)[3][0], a[3][0])
    assert [a[i][1] for i in range(20)] == [i % 10 for i in range(20)]  # balanced labels
    with pytest.raises(IndexError):
        a[100]


def test_images_follow_the_dataset_normalisation():
    info = get_info("cifar10")
    x = torch.stack([SyntheticImages(info, "train", 400)[i][0] for i in range(400)])
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(info.mean), atol=0.05)


def test_a_linear_model_learns_it():
    torch.manual_seed(0)
    train, _, test = build_splits("cifar10", "unused", val_size=50, train_subset=300, test_subset=100,
                                  synthetic=True)
    x = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    y = torch.tensor([train[i][1] for i in range(len(train))])
    xt = torch.stack([test[i][0] for i in range(len(test))]).flatten(1)
    yt = torch.tensor([test[i][1] for i in range(len(test))])
    model = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model((x - 0.5) * 4), y).backward()
        opt.step()
    assert (model((xt - 0.5) * 4).argmax(1) == yt).float().mean() > 0.5  # chance is 0.1


def test_synthetic_presets_need_no_data_on_this_machine(tmp_path):
    from pathlib import Path

    from benchmark.core import config as C
    from benchmark.planning import preflight

    repo = Path(__file__).resolve().parent.parent
    cfg = C.validate(C.load_presets([repo / "presets" / "paper_imagenet.yaml",
                                     repo / "presets" / "smoke.yaml"]), search_dirs=[repo])
    cfg["data"]["imagenet_root"] = None  # not needed for stand-in images
    cfg = C.validate(cfg, search_dirs=[repo])
    assert preflight.dataset_problems(cfg, tmp_path) == []
    real = C.validate(C.load_preset(repo / "presets" / "paper_imagenet.yaml"), search_dirs=[repo])
    assert preflight.dataset_problems(real, tmp_path)  # the real preset does need ImageNet
