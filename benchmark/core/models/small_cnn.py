"""A small CNN (about 90k parameters at width 1) for fast CPU runs and tests.

Each conv is followed by a 2x2 pool, so the net costs about 2.6M multiply-adds per 32x32 image,
a tenth of a same-size CNN that keeps full resolution for two convs: the quick preset runs
PGD-10 adversarial training of several models on 2 CPU cores within minutes.
"""
from __future__ import annotations

import torch.nn as nn

from benchmark.core.models.common import scaled
from benchmark.core.models.norm import BatchNorm2d
from benchmark.core.models.pooling import AdaptiveAvgPool2d, MaxPool2d


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0):
        super().__init__()
        c1, c2, c3 = scaled(16, width), scaled(32, width), scaled(64, width)
        hidden = scaled(64, width, minimum=8)
        self.features = nn.Sequential(
            *_conv_bn(in_channels, c1), MaxPool2d(2),
            *_conv_bn(c1, c2), MaxPool2d(2),
            *_conv_bn(c2, c3), MaxPool2d(2),
            # adaptive pooling makes the net independent of the input size (4x4 at 32x32)
            AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * c3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def small_cnn(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    del image_size  # size-agnostic thanks to the adaptive pool
    return SmallCNN(num_classes, in_channels, width)
