"""RST, Robust Scratch Tickets (Fu et al., NeurIPS 2021; GATECH-EIC/Robust-Scratch-Ticket).

HYDRA's score machinery on RANDOM, FROZEN weights: no pretrained model, no finetune; the searched
mask on the random weights is the final model. Layer-wise top-k (every layer keeps the same
fraction), scores learned with PGD-AT.

Published initialisation (the CIFAR configs of the public code, config_rst/*-cifar.yaml, which
build on Edge-Popup's "hidden-networks" code):
  weights  "signed constant": w = sign(r) * gain / sqrt(fan_in), gain = sqrt(2) (ReLU), every
           Conv2d and Linear (their classifier is a 1x1 conv built the same way); no biases.
           Option ``weight_init: kaiming_normal`` gives N(0, gain^2 / fan_in) instead (the public
           code's ImageNet configs, "ukn").
  scores   Edge-Popup's kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
           HYDRA's scaled init (``score_init: scaled``) is offered but is degenerate on signed
           constant weights: every |w| of a layer is equal, so its first mask would be the index
           order.
  BN       the public code uses NonAffineBatchNorm: running statistics, no learned affine. Our
           architectures keep affine BN, so by default the affine parameters stay at their
           identity init (weight 1, bias 0) and out of the optimiser (``train_bn_affine: false``).
Biases of Conv2d/Linear are zeroed, since the published layers have none; they stay frozen.
Every random draw comes from the generator the prune stage passes (seeded by the cell's seed), so
the weights are reproducible without a dense checkpoint.

Recipe of the public code (preset data, not set here): PGD-AT eps 8/255, 7 steps of 2/255, the
attack crafted with the model in train mode; SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256,
160 epochs, lr x0.1 at epochs 80 and 120; validation PGD-20.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core.registry import register_method
from benchmark.training.loop import TrainConfig

from .base import PruningMethod, ScoreInitContext

WEIGHT_INITS = ("signed_constant", "kaiming_normal")
SCORE_INITS = ("kaiming_uniform", "scaled")


@register_method("rst", learns_scores=True, needs_pretrain=False, needs_finetune=False,
                 paper={"key": "Fu2021Drawing",
                        "name": "Drawing Robust Scratch Tickets: Subnetworks with Inborn Robustness "
                                "Are Found within Randomly Initialized Networks",
                        "authors": "Yonggan Fu, Qixuan Yu, Yang Zhang, Shang Wu, Xu Ouyang, David Cox, "
                                   "Yingyan Lin",
                        "venue": "NeurIPS 2021",
                        "link": "https://arxiv.org/abs/2110.14068"})
class RobustScratchTicket(PruningMethod):
    default_options = {
        "weight_init": "signed_constant",
        "score_init": "kaiming_uniform",
        "train_bn_affine": False,
    }

    def __init__(self, sparsity: float, options: dict | None = None):
        super().__init__(sparsity, options)
        if self.options["weight_init"] not in WEIGHT_INITS:
            raise ValueError(f"rst: weight_init must be one of {WEIGHT_INITS}, got {self.options['weight_init']!r}")
        if self.options["score_init"] not in SCORE_INITS:
            raise ValueError(f"rst: score_init must be one of {SCORE_INITS}, got {self.options['score_init']!r}")

    @torch.no_grad()
    def prepare_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        """Random frozen weights; works on the plain model (the prune stage) or a masked one."""
        gain = nn.init.calculate_gain("relu")
        for _, layer in masking.prunable_layers(model):
            w = layer.weight
            std = gain / math.sqrt(masking.fan_in(layer))
            if self.options["weight_init"] == "signed_constant":
                sign = torch.randint(0, 2, w.shape, generator=generator, dtype=torch.int64) * 2 - 1
                new = sign.to(torch.float32) * std
            else:
                new = torch.randn(w.shape, generator=generator, dtype=torch.float32) * std
            w.copy_(new.to(w.device, w.dtype))
            if layer.bias is not None:
                layer.bias.zero_()

    @torch.no_grad()
    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        if self.options["score_init"] == "scaled":
            masking.scaled_score_init(model)
            return
        for _, layer in masking.masked_layers(model):
            bound = 1.0 / math.sqrt(masking.fan_in(layer))
            draw = (torch.rand(layer.scores.shape, generator=ctx.generator, dtype=torch.float32) * 2 - 1) * bound
            layer.scores.copy_(draw.to(layer.scores.device, layer.scores.dtype))

    def search_params(self, model: nn.Module, cfg: TrainConfig) -> list:
        if self.options["train_bn_affine"]:
            return super().search_params(model, cfg)
        # NonAffineBatchNorm in the public code: BN affine stays at identity. Turning requires_grad
        # off (rather than only leaving them out of the optimiser) also skips their gradients.
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)
        return [p for p in model.parameters() if p.requires_grad]
