"""Stand-in data of a real dataset's shape, for smoke runs anywhere (preset ``data.synthetic``).

A smoke run of a paper preset needs CIFAR-10, SVHN or ImageNet only for their shape: image size,
channels, class count, split sizes and the normalisation the models carry. ``synthetic_splits``
gives datasets with exactly those (from the dataset's ``DatasetInfo``) whose images are generated
on the fly, so nothing is read from disk or downloaded and the real loaders stay untouched:

- image i of a split is a function of (split, i) only: the same bytes in every process, stage and
  job, so per-image flags of two runs refer to the same images, as with the real data;
- label i is ``i mod num_classes`` (balanced); the image is the class's prototype, a smooth random
  pattern (8 x 8 per channel, upsampled), plus per-image noise, mapped through the dataset's
  mean and std and clipped to [0, 1]. A model learns it within an epoch, and an adversary at the
  dataset's eps still finds something to do: a run exercises every code path;
- the images exist only when asked for, so a 1.28M-image ImageNet stand-in costs no memory.

No augmentation: the images are tensors already and augmenting noise teaches nothing. Results
made from this data carry ``data.synthetic: true`` in their recorded config, and the leaderboard
and the paper tables flag them ``synthetic-data``: their numbers say nothing about the dataset.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# fixed, so every run of every preset sees the same stand-in images
DATA_SEED = 20240901
PROTOTYPE_SIZE = 8
SIGNAL, NOISE = 0.9, 0.5


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(repr((DATA_SEED, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SyntheticImages(Dataset):
    """``length`` images of ``info``'s shape; item i is (float tensor in [0, 1], label i mod C)."""

    def __init__(self, info, split: str, length: int):
        self.info, self.split, self.length = info, split, int(length)
        self.classes = list(range(info.num_classes))
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
        if self._mean.shape[0] == 1 and info.in_channels > 1:  # one statistic for every channel
            self._mean = self._mean.expand(info.in_channels, 1, 1)
            self._std = self._std.expand(info.in_channels, 1, 1)
        # small prototypes, upsampled per item: ImageNet's 1000 classes cost 192k numbers
        g = torch.Generator().manual_seed(_seed(info.name, "prototypes"))
        self._prototypes = torch.randn(info.num_classes, info.in_channels, PROTOTYPE_SIZE,
                                       PROTOTYPE_SIZE, generator=g)

    def __len__(self) -> int:
        return self.length

    @property
    def targets(self) -> list[int]:
        return [i % self.info.num_classes for i in range(self.length)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(f"image {index} of a {self.length}-image synthetic {self.split} split")
        label = index % self.info.num_classes
        size = self.info.image_size
        proto = F.interpolate(self._prototypes[label:label + 1], size=(size, size), mode="bilinear",
                              align_corners=False)[0]
        g = torch.Generator().manual_seed(_seed(self.info.name, self.split, index))
        noise = torch.randn(self.info.in_channels, size, size, generator=g)
        image = self._mean + self._std * (SIGNAL * proto + NOISE * noise)
        return image.clamp_(0.0, 1.0), label


def synthetic_splits(info) -> tuple[SyntheticImages, SyntheticImages]:
    """(full training set, test set) with the real splits' sizes, like a loader of
    ``benchmark.core.datasets`` returns them."""
    return (SyntheticImages(info, "train", info.train_size),
            SyntheticImages(info, "test", info.test_size))


__all__ = ["DATA_SEED", "SyntheticImages", "synthetic_splits"]
