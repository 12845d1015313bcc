"""LAMP: layer-adaptive magnitude pruning (Lee et al., ICLR 2021), then the standard finetune.

score(u) = w_u^2 / sum_{v in the same layer, w_v^2 >= w_u^2} w_v^2, and ONE top-k over the scores
of all layers, so every layer keeps a different fraction. Within a layer the score grows strictly
with |w|, so each layer's kept set is its magnitude top-k; LAMP only decides how many.

How it maps onto the shared mask machinery: the LAMP scores are stored as the layer's scores, the
global top-k decides a count per layer, and the layer's keep is set to a fraction that gives
exactly that count under HYDRA's rounding (``masking.keep_for_count``). The one mask function
then reproduces the global selection; ties at the global boundary go to the earlier layer and,
within a layer, to the lower index, the same rule ``topk_mask_count`` applies.

Not score-learning: S2AP's score step does not apply (n/a), AWP in the finetune does.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core.registry import register_method

from .base import PruningMethod, ScoreInitContext, keep_global_counts


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP scores of one layer (same shape as ``weight``, float32).

    Ties count fully in the denominator (">="), as in the paper's definition; the reference code's
    suffix sum over a sorted order would give tied weights different scores. Sums run in float64
    so a layer with millions of weights keeps its small scores distinct.
    """
    a = weight.detach().double().pow(2).flatten()
    sorted_a, _ = torch.sort(a)
    prefix = torch.cat([a.new_zeros(1), torch.cumsum(sorted_a, 0)])
    # sum over w_v^2 >= a_u = total - sum over w_v^2 < a_u
    first = torch.searchsorted(sorted_a, a, side="left")
    denom = prefix[-1] - prefix[first]
    scores = torch.where(denom > 0, a / denom.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(a))
    return scores.to(torch.float32).view_as(weight)


def lamp_allocation(model: nn.Module, keep: float) -> dict[str, int]:
    """Kept count per masked layer when LAMP's global top-k keeps ``keep`` of all weights."""
    layers = list(masking.masked_layers(model))
    total = sum(layer.weight.numel() for _, layer in layers)
    counts = masking.global_counts([lamp_scores(layer.weight) for _, layer in layers],
                           masking.kept_count(total, keep))
    return {name: c for (name, _), c in zip(layers, counts)}


@register_method("lamp", learns_scores=False, needs_pretrain=True, needs_finetune=True,
                 paper={"key": "Lee2021Layer",
                        "name": "Layer-adaptive Sparsity for the Magnitude-based Pruning",
                        "authors": "Jaeho Lee, Sejun Park, Sangwoo Mo, Sungsoo Ahn, Jinwoo Shin",
                        "venue": "ICLR 2021",
                        "link": "https://arxiv.org/abs/2010.07611"})
class Lamp(PruningMethod):
    @torch.no_grad()
    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        for _, layer in masking.masked_layers(model):
            if layer.granularity != "weight":
                raise ValueError("LAMP prunes individual weights; it has no channel variant")
            layer.scores.copy_(lamp_scores(layer.weight))

    def init_rates(self, model: nn.Module) -> None:
        # the allocation reads the stored (float32) scores, the very values the mask refresh
        # compares, so the per-layer top-k reproduces the global selection exactly
        keep_global_counts(model, (layer.scores for _, layer in masking.masked_layers(model)), self.keep)
