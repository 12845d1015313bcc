"""Helpers shared by the architecture files."""
from __future__ import annotations


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    """Channel count at a width multiplier; the floor keeps tiny test widths from reaching zero."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(minimum, int(round(channels * width)))


def uses_cifar_stem(image_size: int) -> bool:
    """Small inputs (32x32) keep full resolution in the stem, as the CIFAR ResNets of HYDRA/HARP
    do; large inputs (224x224) get the ImageNet stem (7x7 stride 2 + max-pool), without which the
    first stage would run at 224x224 and cost ~16x the FLOPs."""
    return image_size <= 64
