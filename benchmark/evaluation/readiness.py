"""A model ready for evaluation, and the RNG devices an attack forks.

Both attack modules (``evaluation`` for clean and PGD, ``autoattack_eval`` for AutoAttack) need
these; keeping them here lets ``evaluation`` build on ``autoattack_eval`` without the reverse
import (the layers depend one way).

AutoAttack on a BatchNorm model in training mode gives wrong numbers without any warning, so a
forgotten ``model.eval()`` must be an error, not a silent bias.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def assert_eval_ready(model: nn.Module) -> None:
    """Raises RuntimeError naming the first offending module or parameter.

    Checked: no module in training mode; no parameter requiring grad (the attacks' backward
    passes would otherwise compute and accumulate weight gradients: slower, and a model that
    changes between calls); floating parameters and buffers in float32 (the bf16 training
    option must never reach the evaluation).
    """
    for name, module in model.named_modules():
        if module.training:
            raise RuntimeError(
                f"module {name or '<root>'} ({type(module).__name__}) is in training mode; "
                f"evaluation refuses it (BatchNorm would use batch statistics). Call "
                f"benchmark.evaluation.protocol.prepare_for_eval(model) first.")
    for name, p in model.named_parameters():
        if p.requires_grad:
            raise RuntimeError(f"parameter {name} requires grad; call prepare_for_eval(model)")
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and t.dtype != torch.float32:
                raise RuntimeError(f"{kind} {name} is {t.dtype}; evaluation runs in float32, "
                                   f"call prepare_for_eval(model)")


def prepare_for_eval(model: nn.Module) -> nn.Module:
    """eval(), float32, requires_grad off, then the readiness check. Returns the same model."""
    model.eval()
    model.float()
    model.requires_grad_(False)
    assert_eval_ready(model)
    return model


def fork_devices(device: str | torch.device) -> list[int]:
    """The CUDA device whose RNG ``torch.random.fork_rng`` must save (none on CPU)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return []
    return [dev.index if dev.index is not None else torch.cuda.current_device()]
