"""The score-space perturbation z_l of S2AP's inner maximisation, one formula per norm.

It lives in the library, not with the S2AP plug-in (``methods/s2ap.py``), because the search
diagnostics measure mask stability and sharpness with the very perturbation S2AP trains against,
and the library never imports ``methods``.
"""
from __future__ import annotations

import torch

NORMS = {
    # z_l = gamma * ||s_l||_2 * g_l / (||g_l||_2 + 1e-12)       (the paper's layer-wise constraint)
    "l2": "gamma * ||s_l||_2 * g_l / (||g_l||_2 + 1e-12)",
    # z_l = gamma * ||s_l||_inf * sign(g_l)                     (the L-inf ball of the same relative size)
    "linf": "gamma * max|s_l| * sign(g_l)",
    # z_l = gamma * ||s_l||_2 * (|s_l| * g_l) / (|| |s_l| * g_l ||_2 + 1e-12)   (ASAM-style, scale-adaptive:
    #       scores near zero move less)
    "adaptive": "gamma * ||s_l||_2 * (|s_l| g_l) / (|| |s_l| g_l ||_2 + 1e-12)",
}


def perturbation(scores: torch.Tensor, grad: torch.Tensor | None, gamma: float, norm: str = "l2") -> torch.Tensor:
    """The per-layer score perturbation z_l (formulas in ``NORMS``). A layer with no or zero
    gradient gets z = 0, never NaN."""
    if grad is None:
        return torch.zeros_like(scores)
    if norm == "l2":
        return gamma * scores.norm() * grad / (grad.norm() + 1e-12)
    if norm == "linf":
        return gamma * scores.abs().max() * grad.sign()
    if norm == "adaptive":
        d = scores.abs() * grad
        return gamma * scores.norm() * d / (d.norm() + 1e-12)
    raise ValueError(f"unknown S2AP norm {norm!r}; valid choices: {', '.join(NORMS)}")
