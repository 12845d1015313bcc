"""Evaluation batch sizes chosen from the machine's free memory, for presets that leave them unset.

A batch size is part of an evaluation's arithmetic, not only of its speed: pyautoattack groups the
images it attacks into batches and its random draws (restarts, Square's squares) follow those
groups, and a convolution may round differently at another batch size. So a preset that sets a
batch size gets exactly that one; only ``null`` asks for the largest batch the free memory holds,
and the value chosen is recorded in the result (``protocol.batch_size`` and
``protocol.autoattack.batch_size``, with ``batch_size_source`` saying where it came from), and the
leaderboard never pools seeds attacked with different batching.

The memory one image needs is measured, not guessed: on CUDA, the allocator's peak over one
forward + backward of a probe batch; on the CPU, the bytes of every module output of one forward
(what autograd keeps for the backward) times a factor for the gradients. Batches are powers of two
(two machines with similar memory then choose the same size) between 1 and the number of images
to be evaluated.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

# share of the free memory a batch may take: the rest is for the allocator's slack, the attacks'
# own buffers (AutoAttack keeps several copies of a batch) and other processes
MEMORY_SHARE = 0.5
# an attack's forward + backward holds the activations, their gradients and the attack's copies
CPU_BACKWARD_FACTOR = 4
# beyond this a CPU batch is no faster per image and only delays the first progress line
CPU_MAX_BATCH = 1024
SOURCE_PRESET, SOURCE_MEMORY = "preset", "free memory"


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for this process: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def bytes_per_image(model: nn.Module, example: torch.Tensor, *, backward: bool) -> int:
    """Memory one image costs in a forward (+ backward to the input when ``backward``)."""
    device = example.device
    x = example[:1]
    if device.type == "cuda":
        return _cuda_bytes_per_image(model, example, backward)
    total = 0

    def hook(_m, _a, out):
        nonlocal total
        if torch.is_tensor(out):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return max(1, total * (CPU_BACKWARD_FACTOR if backward else 2))


def _cuda_bytes_per_image(model: nn.Module, example: torch.Tensor, backward: bool) -> int:
    peaks = []
    for b in (1, 2):
        x = example[:1].expand(b, *example.shape[1:]).clone()
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        if backward:
            x.requires_grad_(True)
            out = model(x)
            torch.autograd.grad(F.cross_entropy(out, out.argmax(1)), x)
        else:
            with torch.no_grad():
                model(x)
        torch.cuda.synchronize(x.device)
        peaks.append(torch.cuda.max_memory_allocated(x.device) - base)
    return max(1, peaks[1] - peaks[0], peaks[0] // 2)


def choose_batch_size(model: nn.Module, example: torch.Tensor, n_images: int, *, backward: bool,
                      free_bytes: int | None = None) -> int:
    """The largest power of two whose batch fits MEMORY_SHARE of the free memory, at most the
    number of images (rounded up to a power of two) and, on the CPU, CPU_MAX_BATCH."""
    device = example.device
    free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
    per_image = bytes_per_image(model, example, backward=backward)
    fits = max(1, int(free * MEMORY_SHARE) // per_image)
    cap = max(1, int(n_images))
    if device.type != "cuda":
        cap = min(cap, CPU_MAX_BATCH)
    limit = min(fits, 1 << (cap - 1).bit_length())
    batch = 1 << (limit.bit_length() - 1)
    log.info("batch size %d chosen from free memory (%d MiB free, %.2f MiB per image, %s)",
             batch, free >> 20, per_image / 2**20, "forward+backward" if backward else "forward")
    return batch
