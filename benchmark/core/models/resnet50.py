"""ResNet50 (torchvision's layout: Bottleneck [3, 4, 6, 3], stride on the 3x3 conv).

At width 1 with 3 input channels and a 224x224 input, this is exactly torchvision.models.resnet50
(the same module names and shapes), so torchvision's ImageNet weights load into it. ``width``
scales every channel count, the stem and the expanded outputs included (torchvision's own
``width_per_group`` only scales the inner 3x3 convs), so small widths are actually small.
For inputs of 64 pixels or fewer the stem is the CIFAR one (3x3 stride 1, no max-pool).
"""
from __future__ import annotations

import torch.nn as nn
from torchvision.models.resnet import Bottleneck, ResNet

from benchmark.core.models.common import scaled, uses_cifar_stem
from benchmark.core.models.norm import BatchNorm2d


class _ScaledResNet(ResNet):
    """torchvision's ResNet with every stage width scaled; forward is torchvision's."""

    def __init__(self, layers, num_classes: int, in_channels: int, image_size: int, width: float):
        self._width = width
        self._stem_set = False
        super().__init__(Bottleneck, layers, num_classes=num_classes)
        stem = scaled(64, width)
        if uses_cifar_stem(image_size):
            self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = BatchNorm2d(stem)
        self.fc = nn.Linear(scaled(512, width) * Bottleneck.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if not self._stem_set:
            # torchvision fixes the stem at 64 channels; scale it before layer1 reads it
            self.inplanes = scaled(64, self._width)
            self._stem_set = True
        return super()._make_layer(block, scaled(planes, self._width), blocks, stride, dilate)


def resnet50(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    return _ScaledResNet([3, 4, 6, 3], num_classes, in_channels, image_size, width)
