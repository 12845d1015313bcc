"""VGG16-BN, the CIFAR variant used by HYDRA (models/vgg_cifar.py in inspire-group/hydra).

HYDRA's "16" configuration has thirteen 3x3 convolutions (bias-free, each followed by BatchNorm and
ReLU) and only four max-pools (no pool after the last block), then AdaptiveAvgPool2d(2) and a
classifier 512*2*2 -> 256 -> 256 -> classes. We keep that head, not torchvision's 4096-wide one,
so that parameter counts and published sparsity numbers refer to the same network.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core.models.common import scaled
from benchmark.core.models.norm import BatchNorm2d
from benchmark.core.models.pooling import AdaptiveAvgPool2d, MaxPool2d

CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    def __init__(self, cfg, num_classes: int, in_channels: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(MaxPool2d(2, 2))
            else:
                out = scaled(v, width)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), BatchNorm2d(out),
                           nn.ReLU(inplace=True)]
                c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = AdaptiveAvgPool2d(2)
        hidden = scaled(256, width, minimum=8)
        self.classifier = nn.Sequential(
            nn.Linear(c * 2 * 2, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))
        # HYDRA's kaiming_normal init (its default init_type)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_bn(*, num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    del image_size  # the adaptive pool makes the head size-agnostic
    return VGG(CFG16, num_classes, in_channels, width)
