"""Robust training losses: PGD-AT (Madry et al.) and TRADES (Zhang et al., beta 6).

A loss is split in two so that a plug-in can reuse one adversarial batch for several gradient
passes (S2AP's second pass at s + z, AWP's perturbed pass):
  prepare(model, x, y) -> AdvBatch   generates the adversarial inputs;
  loss(model, batch)   -> Tensor     the training objective on that batch.
Adversarial examples are generated with the model in eval mode and with no gradient reaching
the scores (the TRADES reference code, HYDRA and HARP do this); the loss is taken in train mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.masking import scores_frozen
from benchmark.evaluation.attacks import AttackConfig, pgd_linf

LOSSES = ("pgd_at", "trades", "clean")


@dataclass
class AdvBatch:
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor


class RobustLoss:
    def __init__(self, kind: str, attack: AttackConfig, *, trades_beta: float = 6.0,
                 adv_eval_mode: bool = True):
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; valid choices: {', '.join(LOSSES)}")
        self.kind = kind
        self.attack = attack
        self.trades_beta = trades_beta
        self.adv_eval_mode = adv_eval_mode

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdvBatch:
        if self.kind == "clean":
            return AdvBatch(x, y, x)
        was_training = model.training
        if self.adv_eval_mode:
            model.eval()
        try:
            with scores_frozen(model):
                if self.kind == "trades":
                    x_adv = pgd_linf(model, x, y, self.attack, loss="kl", start_noise="trades")
                else:
                    x_adv = pgd_linf(model, x, y, self.attack, loss="ce", start_noise="uniform")
        finally:
            model.train(was_training)
        return AdvBatch(x, y, x_adv)

    def loss(self, model: nn.Module, batch: AdvBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss, logits on the adversarial input)."""
        if self.kind == "trades":
            logits_nat = model(batch.x)
            logits_adv = model(batch.x_adv)
            natural = F.cross_entropy(logits_nat.float(), batch.y)
            robust = F.kl_div(F.log_softmax(logits_adv.float(), dim=1),
                              F.softmax(logits_nat.float(), dim=1), reduction="batchmean")
            return natural + self.trades_beta * robust, logits_adv
        logits = model(batch.x_adv)
        return F.cross_entropy(logits.float(), batch.y), logits
