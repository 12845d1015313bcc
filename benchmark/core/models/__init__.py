"""Architectures and the input normalisation wrapper.

Attacks work in [0, 1] pixel space, so normalisation is the model's first operation rather than a
data transform: ``build_model`` returns ``Normalized(net, mean, std)``. The mean/std buffers are
part of the state_dict (keys ``mean``/``std``; the network's keys are prefixed ``net.``), so a
checkpoint carries the normalisation it was trained with.

Every architecture uses plain nn.Conv2d / nn.Linear for its prunable layers and reads them only by
calling the module: ``benchmark.core.masking.to_masked`` swaps them for masked subclasses in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from benchmark.core.registry import ARCHITECTURES


class Normalized(nn.Module):
    """forward(x) = net((x - mean) / std) with per-channel mean/std buffers of shape (1, C, 1, 1)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def architecture_names() -> list[str]:
    return ARCHITECTURES.names()


def build_plain(arch: str, info, width: float = 1.0) -> nn.Module:
    """The bare architecture for a dataset (no normalisation)."""
    factory = ARCHITECTURES.get(arch)  # UnknownNameError listing the valid choices
    return factory(num_classes=info.num_classes, in_channels=info.in_channels,
                   image_size=info.image_size, width=width)


def build_model(arch: str, info, width: float = 1.0) -> nn.Module:
    """``arch`` for dataset ``info`` (a DatasetInfo), with normalisation inside: inputs in [0, 1]."""
    return Normalized(build_plain(arch, info, width), info.mean, info.std)


__all__ = ["Normalized", "architecture_names", "build_model", "build_plain"]
