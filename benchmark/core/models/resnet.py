"""ResNet18, CIFAR layout (kuangliu/pytorch-cifar, as used by HYDRA and HARP).

3x3 stride-1 stem without max-pool for 32x32 inputs; BasicBlock [2, 2, 2, 2]; stage widths
64/128/256/512 times ``width``. Shortcut convolutions are ordinary (prunable) Conv2d layers.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.models.common import scaled, uses_cifar_stem
from benchmark.core.models.norm import BatchNorm2d
from benchmark.core.models.pooling import MaxPool2d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_blocks, num_classes: int, in_channels: int, image_size: int,
                 width: float = 1.0):
        super().__init__()
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        if uses_cifar_stem(image_size):
            self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
            self.pool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False)
            self.pool = MaxPool2d(3, stride=2, padding=1)
        self.bn1 = BatchNorm2d(planes[0])
        self._in = planes[0]
        self.layer1 = self._make_layer(planes[0], num_blocks[0], 1)
        self.layer2 = self._make_layer(planes[1], num_blocks[1], 2)
        self.layer3 = self._make_layer(planes[2], num_blocks[2], 2)
        self.layer4 = self._make_layer(planes[3], num_blocks[3], 2)
        self.linear = nn.Linear(planes[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self._in, planes, s))
            self._in = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # adaptive rather than avg_pool2d(out, 4): same result at 32x32, and any size works
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    return ResNet([2, 2, 2, 2], num_classes, in_channels, image_size, width)
