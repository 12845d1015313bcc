"""Robust training losses: PGD-AT (Madry et al.), TRADES (Zhang et al., beta 6) and free
adversarial training (Shafahi et al. 2019).

A loss is split in two so that a plug-in can reuse one adversarial batch for several gradient
passes (S2AP's second pass at s + z, AWP's perturbed pass):
  prepare(model, x, y) -> AdvBatch   generates the adversarial inputs;
  loss(model, batch)   -> Tensor     the training objective on that batch.
Adversarial examples are generated with the model in eval mode and with no gradient reaching
the scores (the TRADES reference code, HYDRA and HARP do this); the loss is taken in train mode.

Free adversarial training has no inner attack: every minibatch is replayed ``replays`` times (one
optimiser step each, ``benchmark.training.loop.Trainer.train_step``), and the perturbation is ascended
by eps * sign(gradient) from the same backward pass that trains the model (``after_backward``),
clipped to the eps-ball, and carried to the next replay and the next minibatch; it starts at zero
each epoch, as the public HYDRA/HARP trainer/freeadv.py allocate it per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.masking import scores_frozen
from benchmark.evaluation.attacks import AttackConfig, pgd_linf

LOSSES = ("pgd_at", "trades", "clean", "free")


@dataclass
class AdvBatch:
    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor


class RobustLoss:
    def __init__(self, kind: str, attack: AttackConfig, *, trades_beta: float = 6.0,
                 adv_eval_mode: bool = True, replays: int = 1):
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; valid choices: {', '.join(LOSSES)}")
        if int(replays) < 1:
            raise ValueError(f"free adversarial training replays each minibatch at least once, got "
                             f"replays={replays}")
        if kind != "free" and int(replays) != 1:
            raise ValueError(f"replays={replays} applies to loss 'free' only, not {kind!r}")
        self.kind = kind
        self.attack = attack
        self.trades_beta = trades_beta
        self.adv_eval_mode = adv_eval_mode
        #: optimiser steps per minibatch (free adversarial training's m; 1 otherwise)
        self.replays = int(replays)
        self._delta: torch.Tensor | None = None  # the carried perturbation (free)
        self._leaf: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None

    def start_epoch(self) -> None:
        """Free adversarial training starts each epoch from a zero perturbation."""
        self._delta = None

    def _capture(self, grad: torch.Tensor) -> None:
        # the first backward through the batch is the training pass; a plug-in's second pass
        # (S2AP at s + z, AWP's perturbed weights) must not steer the perturbation
        if self._grad is None:
            self._grad = grad.detach().clone()

    def _free_prepare(self, x: torch.Tensor, y: torch.Tensor) -> AdvBatch:
        if self._leaf is not None and self._leaf.shape == x.shape:
            # asked again within one step (S2AP's regenerate option): the same perturbation, and
            # the gradient captured from the step's first backward stays
            return AdvBatch(x, y, (x + self._leaf).clamp(0.0, 1.0))
        n = x.shape[0]
        if self._delta is None or self._delta.shape[0] < n or self._delta.shape[1:] != x.shape[1:]:
            self._delta = torch.zeros_like(x)
        leaf = self._delta[:n].clone().requires_grad_(True)
        leaf.register_hook(self._capture)
        self._leaf, self._grad = leaf, None
        return AdvBatch(x, y, (x + leaf).clamp(0.0, 1.0))

    def after_backward(self) -> None:
        """Free adversarial training: ascend the carried perturbation with the gradient of the
        backward pass just taken (a no-op for the other losses)."""
        if self.kind != "free" or self._leaf is None:
            return
        n, eps = self._leaf.shape[0], float(self.attack.eps)
        if self._grad is not None:
            with torch.no_grad():
                self._delta[:n] += eps * self._grad.sign()
                self._delta.clamp_(-eps, eps)
        self._leaf, self._grad = None, None

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AdvBatch:
        if self.kind == "clean":
            return AdvBatch(x, y, x)
        if self.kind == "free":
            return self._free_prepare(x, y)
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
