"""Every architecture builds for every dataset, normalises inside, and lets masking swap its layers."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from benchmark.core.datasets import get_info
from benchmark.core.models import Normalized, architecture_names, build_model, build_plain
from benchmark.core.registry import ARCHITECTURES, DATASETS, UnknownNameError

torch.set_num_threads(2)

ARCHS = ARCHITECTURES.names()
DATASET_NAMES = DATASETS.names()


def _input(info, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, info.in_channels, info.image_size, info.image_size, generator=g)


def test_registry_lists_the_six_architectures():
    assert set(architecture_names()) == {"small_cnn", "resnet18", "vgg16_bn", "wrn28_4", "vit", "resnet50"}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_model_builds_and_runs_on_every_dataset(arch, dataset):
    info = get_info(dataset)
    torch.manual_seed(0)
    model = build_model(arch, info, width=0.125)
    assert isinstance(model, Normalized)
    x = _input(info)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()
    # the two images must not collapse onto one output (a broken stem or pool would do that)
    assert not torch.allclose(out[0], out[1])
    if dataset != "imagenet":  # a training step on 32x32 inputs: every parameter gets a gradient
        model.train()
        loss = nn.functional.cross_entropy(model(_input(info, 4)), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{arch} on {dataset}: parameters without gradient: {missing}"


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist"])
def test_normalisation_is_inside_the_model(dataset):
    info = get_info(dataset)
    model = build_model("small_cnn", info).eval()
    assert model.mean.shape == (1, info.in_channels, 1, 1)
    assert model.std.shape == (1, info.in_channels, 1, 1)
    assert torch.allclose(model.mean.flatten(), torch.tensor(info.mean))
    assert torch.allclose(model.std.flatten(), torch.tensor(info.std))
    state = model.state_dict()
    assert "mean" in state and "std" in state
    assert all(k in ("mean", "std") or k.startswith("net.") for k in state)
    x = _input(info)
    with torch.no_grad():
        expected = model.net((x - torch.tensor(info.mean).view(1, -1, 1, 1))
                             / torch.tensor(info.std).view(1, -1, 1, 1))
        assert torch.allclose(model(x), expected, atol=1e-6)
        # and it really normalises: feeding raw x to the inner net gives something else
        assert not torch.allclose(model.net(x), expected, atol=1e-3)


def test_normalized_rejects_bad_stats():
    with pytest.raises(ValueError):
        Normalized(nn.Identity(), (0.5, 0.5), (0.2,))
    with pytest.raises(ValueError):
        Normalized(nn.Identity(), (0.5,), (0.0,))


def test_unknown_architecture_lists_choices():
    with pytest.raises(UnknownNameError) as exc:
        build_model("resnet1800", get_info("cifar10"))
    for name in ARCHS:
        assert name in str(exc.value)


def _count(model):
    return sum(p.numel() for p in model.parameters())


# Counts of the published layouts at width 1 on CIFAR-10 (ResNet18: kuangliu/HYDRA, 11.17M;
# WRN-28-4: 5.85M; HYDRA's VGG16-BN with its 256-256 head; ViT: embed 192, depth 9, 3 heads).
@pytest.mark.parametrize("arch, expected", [
    ("small_cnn", 89_946), ("resnet18", 11_173_962), ("wrn28_4", 5_849_050),
    ("vgg16_bn", 15_311_818), ("vit", 2_697_610),
])
def test_parameter_counts_at_width_one(arch, expected):
    assert _count(build_plain(arch, get_info("cifar10"))) == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_width_scales_parameters(arch):
    info = get_info("cifar10")
    full, half = _count(build_plain(arch, info, 1.0)), _count(build_plain(arch, info, 0.5))
    # conv weights scale with width^2: half width has roughly a quarter of the parameters
    assert 0.15 * full < half < 0.4 * full


def test_resnet50_matches_torchvision_at_width_one():
    import torchvision

    reference = {k: v.shape for k, v in torchvision.models.resnet50(weights=None).state_dict().items()}
    net = build_plain("resnet50", get_info("imagenet"))
    assert {k: v.shape for k, v in net.state_dict().items()} == reference
    assert _count(net) == 25_557_032


def test_in_channels_follow_the_dataset():
    info = get_info("fashion-mnist")
    for arch in ARCHS:
        first = next(m for m in build_plain(arch, info, 0.125).modules() if isinstance(m, nn.Conv2d))
        assert first.in_channels == 1, arch


class _SwappedConv(nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.weight * self.test_mask, self.bias)


class _SwappedLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.test_mask, self.bias)


def _swap(module, gen):
    """Replaces children by subclasses through setattr, as benchmark.core.masking does."""
    for name, child in list(module.named_children()):
        if type(child) in (nn.Conv2d, nn.Linear):
            new = copy.deepcopy(child)
            new.__class__ = _SwappedConv if isinstance(child, nn.Conv2d) else _SwappedLinear
            new.test_mask = (torch.rand(child.weight.shape, generator=gen) < 0.5).float()
            setattr(module, name, new)
        else:
            _swap(child, gen)


@pytest.mark.parametrize("arch", ARCHS)
def test_prunable_layers_are_plain_and_only_called(arch):
    """A model that read .weight directly (F.conv2d(x, self.conv.weight)) or used
    nn.MultiheadAttention would bypass a swapped-in masked layer; compare against zeroed weights."""
    info = get_info("cifar10")
    torch.manual_seed(0)
    plain = build_model(arch, info, 0.125).eval()
    for m in plain.modules():
        assert not isinstance(m, nn.MultiheadAttention)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert type(m) in (nn.Conv2d, nn.Linear), type(m)
        elif any(True for _ in m.parameters(recurse=False)) and not isinstance(m, Normalized):
            # normalisation layers are ordinary BatchNorm2d (LayerNorm in the ViT); the ViT's
            # class token and position embedding live on the VisionTransformer itself
            assert isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) or type(m).__name__ == "VisionTransformer", type(m)
    swapped = copy.deepcopy(plain)
    _swap(swapped, torch.Generator().manual_seed(1))
    layers = {n: m for n, m in swapped.named_modules() if isinstance(m, (_SwappedConv, _SwappedLinear))}
    assert layers and len(layers) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in plain.modules())
    with torch.no_grad():
        for name, m in plain.named_modules():
            if name in layers:
                m.weight.mul_(layers[name].test_mask)
        x = _input(info)
        assert torch.allclose(swapped(x), plain(x), atol=1e-5)
