"""A small CNN (about 100k parameters at width 1) for fast CPU runs and tests."""
from __future__ import annotations

import torch.nn as nn

from benchmark.models.common import scaled


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0):
        super().__init__()
        c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(128, width, minimum=8)
        self.features = nn.Sequential(
            *_conv_bn(in_channels, c1), *_conv_bn(c1, c1), nn.MaxPool2d(2),
            *_conv_bn(c1, c2), *_conv_bn(c2, c2), nn.MaxPool2d(2),
            # a 2x2 grid instead of flattening 8x8 keeps the first Linear at 32k weights (a flat
            # 8x8x64 map would need 524k) and makes the net independent of the input size
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * c2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def small_cnn(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    del image_size  # size-agnostic thanks to the adaptive pool
    return SmallCNN(num_classes, in_channels, width)
