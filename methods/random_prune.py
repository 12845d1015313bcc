"""Random pruning: a uniformly random mask with the same fraction kept in every layer, then the
standard finetune. The floor every table needs: a method must beat it to have learned anything.

The scores are i.i.d. uniform draws from the generator the prune stage passes (seeded by the
cell's seed), so a mask is reproducible from (seed, architecture) and independent of the global
torch RNG; the shared top-k then keeps the layer-wise count.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core.registry import register_method

from .base import PruningMethod, ScoreInitContext


@register_method("random", learns_scores=False, needs_pretrain=True, needs_finetune=True)
class RandomPrune(PruningMethod):
    @torch.no_grad()
    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        for _, layer in masking.masked_layers(model):
            # drawn on the CPU: a CPU generator cannot fill a CUDA tensor, and the draw must not
            # depend on the device the job runs on
            draw = torch.rand(layer.scores.shape, generator=ctx.generator, dtype=torch.float32)
            layer.scores.copy_(draw.to(layer.scores.device, layer.scores.dtype))
