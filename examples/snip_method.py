"""SNIP on the adversarial loss: scores start at |w * dL_adv/dw| of one adversarial batch.

"snip_adv" is the worked example of a DATA-DRIVEN score initialisation. It uses only what
``init_scores(model, ctx)`` receives (``benchmark.score_init.ScoreInitContext``): the first
training batch of the search seed (``ctx.first_batch``), attacked with the search's own robust
loss (``ctx.adversarial_batch``), the loss itself (``ctx.robust_loss.loss``) and the device. The
dense weights are already loaded and every masked layer is still in "dense" mode when
``init_scores`` runs, so the gradient reaches the full weights: no training hook, no switching of
layer modes.

Scores. Per layer l, s_l = sqrt(6 / fan_in_l) * a_l / max(a_l) with a_l = |w_l * g_l| and
g = dL_adv/dw at the dense weights: SNIP's connection sensitivity (Lee et al., ICLR 2019) taken on
the robust training loss (PGD-AT or TRADES, whatever the preset trains with) instead of the clean
one. The per-layer rescaling to HYDRA's score scale leaves each layer's ranking, hence its first
mask (every layer keeps the same fraction), unchanged, and lets the search's learning rate mean
what it means for HYDRA. The gradient is taken with the model in eval mode: BatchNorm normalises
with the dense model's running statistics (which stay untouched), so the saliency depends on the
weights and the batch only.

Why it learns scores (``learns_scores=True``) instead of pruning once, as SNIP does:
  * |w * g| estimates to first order what removing ONE weight costs on ONE batch; at 90-99 %
    sparsity the removed set is large and the estimate is poor, which is what a score search
    under the robust loss corrects (HYDRA's finding: optimised scores beat one-shot criteria);
  * "snip_adv" then differs from "hydra" in the starting scores only, so the leaderboard's
    snip_adv vs hydra rows answer one question: does a data-driven start help the search?
  * S2AP applies to score-learning methods only, so the example also shows a user method with
    S2AP off and on. (A one-shot variant is the same class with ``learns_scores=False``: the
    searched mask is then this initial mask, and S2AP is n/a.)

Use it like the other example:

    method_files: [examples/snip_method.py]
    grid:
      methods: [hydra, snip_adv]
      s2ap: ["off", "on"]
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from benchmark import masking
from benchmark.registry import register_method
from methods.base import PruningMethod, ScoreInitContext


def adversarial_saliency(model: nn.Module, ctx: ScoreInitContext) -> list[torch.Tensor]:
    """|w * dL_adv/dw| of every masked layer (in ``masked_layers`` order), on the first training
    batch of ``ctx`` attacked with its robust loss; the model is left as it was found."""
    layers = [layer for _, layer in masking.masked_layers(model)]
    training = [(m, m.training) for m in model.modules()]
    grad_flags = [(layer.weight, layer.weight.requires_grad) for layer in layers]
    model.eval()
    try:
        with torch.enable_grad():  # PGD and the weight gradient, even under a caller's no_grad
            batch = ctx.adversarial_batch(model)
            for layer in layers:
                layer.weight.requires_grad_(True)
            loss, _ = ctx.robust_loss.loss(model, batch)
            grads = torch.autograd.grad(loss, [layer.weight for layer in layers], allow_unused=True)
    finally:
        for weight, flag in grad_flags:
            weight.requires_grad_(flag)
        for module, flag in training:
            module.training = flag
    return [(layer.weight.detach() * g).abs() if g is not None else torch.zeros_like(layer.weight)
            for layer, g in zip(layers, grads)]


@register_method("snip_adv", learns_scores=True, needs_pretrain=True, needs_finetune=True)
class SnipAdversarial(PruningMethod):

    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        for name, layer in masking.masked_layers(model):
            if layer.granularity != "weight":
                raise ValueError(f"snip_adv scores individual weights; layer {name} is "
                                 f"{layer.granularity!r}-masked")
        saliency = adversarial_saliency(model, ctx)
        with torch.no_grad():
            for (_, layer), a in zip(masking.masked_layers(model), saliency):
                scale = math.sqrt(6.0 / masking.fan_in(layer))
                layer.scores.copy_(scale * a / a.max().clamp_min(1e-12))
