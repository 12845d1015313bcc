"""WideResNet-28-4 (Zagoruyko & Komodakis; the pre-activation layout of the TRADES/HYDRA code).

Depth 28 = 6 * 4 + 4: three groups of four pre-activation BasicBlocks with 16*k, 32*k, 64*k
channels (k = 4), a 16-channel 3x3 stem, dropout 0. ``width`` scales every channel count.
HYDRA's copy also builds an unused ``sub_block1``; it is left out here because its weights would
count as prunable parameters that never influence the output.
"""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.models.common import scaled, uses_cifar_stem
from benchmark.core.models.norm import BatchNorm2d
from benchmark.core.models.pooling import MaxPool2d


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        # when the shape changes the projection sees the pre-activated input, as in the original
        residual = x if self.equal_in_out else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int, image_size: int,
                 width: float = 1.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        ch = [scaled(c, width) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
        if uses_cifar_stem(image_size):
            self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
            self.pool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, ch[0], 7, stride=2, padding=3, bias=False)
            self.pool = MaxPool2d(3, stride=2, padding=1)
        self.block1 = self._group(ch[0], ch[1], n, 1)
        self.block2 = self._group(ch[1], ch[2], n, 2)
        self.block3 = self._group(ch[2], ch[3], n, 2)
        self.bn = BatchNorm2d(ch[3])
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                               for i in range(n)])

    def forward(self, x):
        out = self.pool(self.conv1(x))
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def wrn28_4(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    return WideResNet(28, 4, num_classes, in_channels, image_size, width)
