"""Counting a model's forward/backward passes and pricing them: the floor of a stage or an attack.

The floor of a piece of work is what its model passes alone cost: every forward call is recorded
with its batch size and kind, and each kind is priced by timing the same model at that batch
size, on its own, in this process:

  fwd        a forward pass without autograd (clean accuracy, Square's queries, checks)
  attack     forward + backward to the input only, parameters constant (PGD, APGD, FAB)
  train      forward + backward to the parameters in train mode (the optimiser steps)

Time spent beyond the floor is Python, allocation and bookkeeping around the passes: what a
speed-up can remove without touching the model.
"""
from __future__ import annotations

import bisect
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("fwd", "attack", "train")


def cpu_time() -> float:
    """CPU seconds of this process (all threads): on a shared machine, the time other people's
    jobs take does not count."""
    return time.process_time()


class PassCounter:
    """A forward hook recording (kind, batch size) for every call of the model's forward."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.label = "other"

    def _hook(self, module: nn.Module, args, output) -> None:
        x = args[0] if args else None
        if not torch.is_tensor(x) or x.dim() == 0:
            return
        b = int(x.shape[0])
        if not torch.is_grad_enabled() or not output.requires_grad:
            kind = "fwd"
        elif module.training:
            kind = "train"
        else:
            kind = "attack"
        self.counts[(self.label, kind, b)] += 1

    @contextlib.contextmanager
    def watch(self, model: nn.Module) -> Iterator[PassCounter]:
        handle = model.register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    @contextlib.contextmanager
    def labelled(self, label: str) -> Iterator[None]:
        old, self.label = self.label, label
        try:
            yield
        finally:
            self.label = old

    def images(self, label: str | None = None) -> dict[str, int]:
        out = {k: 0 for k in KINDS}
        for (lab, kind, b), n in self.counts.items():
            if label is None or lab == label:
                out[kind] += b * n
        return out


class PassPrices:
    """Seconds per pass of one model by kind and batch size, measured on demand on a grid of batch
    sizes and interpolated linearly in between (a pass costs a constant plus a per-image part)."""

    GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)

    def __init__(self, build: Callable[[], nn.Module], input_shape: tuple[int, ...],
                 num_classes: int, reps: int = 7, timer: Callable[[], float] = cpu_time) -> None:
        self.build = build
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.reps = reps
        self.timer = timer
        self._cache: dict[tuple[str, int], float] = {}
        self._models: dict[str, nn.Module] = {}

    def _model(self, kind: str) -> nn.Module:
        if kind not in self._models:
            m = self.build()
            if kind == "train":
                m.train()
                m.requires_grad_(True)
            else:
                m.eval()
                m.requires_grad_(False)
            self._models[kind] = m
        return self._models[kind]

    def _measure(self, kind: str, b: int) -> float:
        model = self._model(kind)
        g = torch.Generator().manual_seed(b)
        x = torch.rand((b, *self.input_shape), generator=g)
        y = torch.randint(0, self.num_classes, (b,), generator=g)

        def once() -> None:
            if kind == "fwd":
                with torch.no_grad():
                    model(x)
            elif kind == "attack":
                xa = x.clone().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
            else:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()

        once()
        times = []
        for _ in range(self.reps):
            t0 = self.timer()
            once()
            times.append(self.timer() - t0)
        return statistics.median(times)

    def price(self, kind: str, b: int) -> float:
        grid = [g for g in self.GRID]
        if b > grid[-1]:
            grid.append(b)
        i = bisect.bisect_left(grid, b)
        if grid[i] == b:
            return self._at(kind, b)
        lo, hi = grid[i - 1], grid[i]
        t_lo, t_hi = self._at(kind, lo), self._at(kind, hi)
        return t_lo + (t_hi - t_lo) * (b - lo) / (hi - lo)

    def _at(self, kind: str, b: int) -> float:
        key = (kind, b)
        if key not in self._cache:
            self._cache[key] = self._measure(kind, b)
        return self._cache[key]

    def floor(self, counter: PassCounter, label: str | None = None) -> float:
        """Seconds the recorded passes (of one label, or all) cost at the measured prices."""
        total = 0.0
        for (lab, kind, b), n in counter.counts.items():
            if label is None or lab == label:
                total += n * self.price(kind, b)
        return total
