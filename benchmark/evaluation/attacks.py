"""L-infinity PGD, the attack of adversarial training and of the PGD evaluation.

Inputs live in [0, 1] (normalisation is inside the model), so every iterate is clipped to the
eps-ball around x and to [0, 1].
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AttackConfig:
    eps: float
    steps: int
    step_size: float
    random_start: bool = True

    def __post_init__(self):
        if self.eps < 0 or self.steps < 0 or self.step_size < 0:
            raise ValueError(f"attack parameters must be non-negative: {self}")


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


@contextlib.contextmanager
def input_gradient_only(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the block and get their flags back afterwards.

    An attack differentiates with respect to its input only, and the numbers do not depend on
    these flags; but autograd then records no edges to the weights, and layers whose input
    gradient has a cheaper kernel when their parameters are constant (BatchNorm in eval mode,
    benchmark.core.models.norm) take it.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig,
             *, loss: str = "ce", x_ref_logits: torch.Tensor | None = None,
             start_noise: str = "uniform") -> torch.Tensor:
    """Returns x_adv maximising the loss within ||x_adv - x||_inf <= eps, x_adv in [0, 1].

    loss='ce' is PGD-AT's cross-entropy on labels y; loss='kl' is TRADES' KL divergence to the
    model's prediction on the natural input (``x_ref_logits``). start_noise 'uniform' starts
    uniformly in the ball (PGD-AT), 'trades' at x + 0.001 * N(0, 1) as the TRADES code does.
    The model's mode is left as the caller set it.
    """
    x = x.detach()
    if cfg.steps == 0 or cfg.eps == 0:
        return x.clone()
    if not cfg.random_start:
        x_adv = x.clone()
    elif start_noise == "trades":
        x_adv = x + 0.001 * torch.randn_like(x)
    else:
        x_adv = x + torch.empty_like(x).uniform_(-cfg.eps, cfg.eps)
    x_adv = _project(x_adv, x, cfg.eps)
    if loss == "kl":
        if x_ref_logits is None:
            with torch.no_grad():
                x_ref_logits = model(x)
        p_ref = F.softmax(x_ref_logits.detach().float(), dim=1)
    with input_gradient_only(model):
        for _ in range(cfg.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            if loss == "kl":
                obj = F.kl_div(F.log_softmax(logits.float(), dim=1), p_ref, reduction="sum")
            else:
                obj = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(obj, x_adv)
            x_adv = _project(x_adv.detach() + cfg.step_size * grad.sign(), x, cfg.eps)
    return x_adv.detach()
