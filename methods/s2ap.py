"""S2AP: sharpness-aware adversarial pruning (Piras et al., arXiv 2510.18381), as a plug-in.

S2AP has no public code. The paper states the objective

    min_s  max_{z : ||z_l|| <= gamma ||s_l|| for every layer l}  L( w * M(s + z, k) )

and two ingredients: sharpness minimisation in score space during the mask search (after a
warm-up), and adversarial weight perturbation (AWP) on the unpruned weights during finetuning.
This file is OUR realisation; every unknown is an option, and the defaults are argued here.

Score step (``ScoreSharpness``), one SAM-style ascent step per optimiser step:
  1. pass 1: g = grad_s L(s) on the adversarial batch (the base method's own pass: BatchNorm
     statistics update, non-score parameters such as BN affine and HARP's rates take their
     gradients from this pass);
  2. z_l from g_l per layer (``perturbation``; the default l2 form is the published constraint
     with the constraint active: z_l = gamma * ||s_l|| * g_l / (||g_l|| + 1e-12));
  3. pass 2 at s + z, the mask recomputed from s + z (so the perturbation can move weights across
     the top-k boundary), on the SAME adversarial batch (option ``regenerate`` attacks s + z anew);
     its score gradient g' replaces g; nothing else changes: BatchNorm buffers are restored, the
     RNG is replayed from the state pass 1 saw (same dropout masks) and restored afterwards, HARP's
     rates stay fixed, and the scores and masks are copied back exactly;
  4. the optimiser applies g' to the unperturbed s.
  Why one step and a reused batch: it matches the paper's cost figure (about 15 % more pruning
  time; one extra forward/backward is about 9 % of a PGD-10 step), and with gamma = 0 it is
  bit-for-bit the base method (tested).

Does the step act? Under the straight-through estimator the score gradient at s + z equals the one
at s unless M(s + z) differs from M(s): a step whose perturbation flips no mask entry changes
nothing. Every post-warm-up step therefore counts the kept weights the perturbation flips,
|M(s + z) xor M(s)| / 2 over the kept count (a flip moves one weight out and one in), and whether it
flipped none; the counts stay on the device and are read once per epoch (epoch records
``s2ap_flip_fraction``, ``s2ap_noflip_steps``, ``s2ap_steps``; the search's diagnostics sum them
up, and the leaderboard flags a run "S2AP inactive" when more than half of its steps flip nothing).

Finetune step (``AWP``): Wu et al.'s adversarial weight perturbation, restricted to kept weights.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from benchmark.core.choices import S2AP_GAMMA_STATUS
from benchmark.core.masking import masked_layers
from benchmark.training.loop import TrainHook
from benchmark.training.score_perturbation import NORMS, perturbation


def _bn_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in m.buffers(recurse=False)]


def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """dst[i].copy_(src[i]) for every i, as one multi-tensor copy per (device, dtype): a foreach
    call over mixed dtypes (float scores and buffers, int64 BatchNorm counters) takes PyTorch's
    per-tensor slow path, one kernel per tensor again."""
    groups: dict[tuple, tuple[list, list]] = {}
    for d, s in zip(dst, src):
        g = groups.setdefault((d.device, d.dtype), ([], []))
        g[0].append(d)
        g[1].append(s)
    for d, s in groups.values():
        torch._foreach_copy_(d, s)


class ScoreSharpness(TrainHook):
    overrides_backward = True
    # gamma 0.01: a default, not a selection (the paper's values are not public); presets store the
    # value their own gamma sweep chose per method (methods.<name>.s2ap, results/offline/gamma_sweep.md)
    # gamma_status (selected / unselected) labels where gamma came from; it changes nothing here
    defaults = {"gamma": 0.01, "warmup": 0.25, "norm": "l2", "regenerate": False,
                "gamma_status": "unselected"}
    # the paper of the plug-in (RobustBench export; read from source by benchmark.core.papers)
    paper = {"key": "Piras2025S2AP",
             "name": "S2AP: Score-space Sharpness Minimization for Adversarial Pruning",
             "authors": "Giorgio Piras, Qi Zhao, Fabio Brau, Maura Pintor, Christian Wressnegger, "
                        "Battista Biggio",
             "venue": "arXiv, Oct 2025", "link": "https://arxiv.org/abs/2510.18381"}

    def __init__(self, cfg: dict | None, total_epochs: int):
        cfg = {**self.defaults, **(cfg or {})}
        unknown = set(cfg) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown s2ap options {sorted(unknown)}; valid: {sorted(self.defaults)}")
        if cfg["norm"] not in NORMS:
            raise ValueError(f"unknown S2AP norm {cfg['norm']!r}; valid choices: {', '.join(NORMS)}")
        if cfg["gamma_status"] not in S2AP_GAMMA_STATUS:
            raise ValueError(f"s2ap.gamma_status must be one of {S2AP_GAMMA_STATUS}, got {cfg['gamma_status']!r}")
        if not 0.0 <= float(cfg["warmup"]) <= 1.0:
            raise ValueError(f"s2ap.warmup is a fraction of the search epochs in [0, 1], got {cfg['warmup']}")
        self.gamma = float(cfg["gamma"])
        self.norm = cfg["norm"]
        self.regenerate = bool(cfg["regenerate"])
        # the paper switches S2AP on after 5 of 20 search epochs; a fraction keeps short presets alike
        self.warmup_epochs = int(math.floor(float(cfg["warmup"]) * total_epochs + 1e-9))
        self.active = False
        self._reset_counts()

    def _reset_counts(self) -> None:
        # device tensors, created at the first active step: no host sync per step
        self._flip_sum: torch.Tensor | None = None  # sum over steps of the flipped fraction
        self._noflip: torch.Tensor | None = None  # steps that flipped nothing
        self._steps = 0

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.warmup_epochs
        self._reset_counts()

    @staticmethod
    def _live_state(layers, model) -> list[torch.Tensor]:
        """What pass 2 changes and the step puts back: scores, masks, BatchNorm buffers. Detached
        views share the version counters, so the folded search weights see the restore."""
        return ([layer.scores.detach() for layer in layers] + [layer.mask.detach() for layer in layers]
                + [b.detach() for b in _bn_buffers(model)])

    def _scratch(self, live: list[torch.Tensor]) -> list[torch.Tensor]:
        # one set of copies for the whole search, filled by one multi-tensor copy per step: on a
        # GPU, 2 x (2 x layers + BN buffers) single-tensor clones and copies were as many kernel
        # launches per step in a launch-bound loop (docs/gpu_speed.md); the bytes are the same
        shapes = [(t.shape, t.dtype, t.device) for t in live]
        if getattr(self, "_saved_shapes", None) != shapes:
            self._saved = [torch.empty_like(t) for t in live]
            self._saved_shapes = shapes
        return self._saved

    def _count_flips(self, layers, saved_masks) -> None:
        # masks hold 0 and 1: the L1 norm of the difference counts the flipped entries exactly
        # (integers below 2**24 in float32), one multi-tensor call instead of two per layer
        live = [layer.mask for layer in layers]
        if any(m.dtype not in (torch.float32, torch.float64) for m in live):  # half masks: inexact
            live, saved_masks = [m.float() for m in live], [m.float() for m in saved_masks]
        flipped = torch.stack(torch._foreach_norm(torch._foreach_sub(live, saved_masks), 1)).sum()
        kept = torch.stack(torch._foreach_norm(saved_masks, 1)).sum()
        fraction = flipped.double() / (2.0 * kept.double()).clamp_min(1.0)
        none = (flipped == 0).to(torch.int64)
        if self._flip_sum is None:
            self._flip_sum, self._noflip = fraction, none
        else:
            self._flip_sum = self._flip_sum + fraction
            self._noflip = self._noflip + none
        self._steps += 1

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> None:
        if not self.active or not self._steps:
            return
        record.update({"s2ap_flip_fraction": float(self._flip_sum) / self._steps,
                       "s2ap_noflip_steps": int(self._noflip), "s2ap_steps": self._steps})

    def summary(self, history: list[dict]) -> dict:
        """Over the post-warm-up epochs: steps, steps without a flip (count and fraction), the mean
        flipped fraction per step, and that fraction per epoch (None during the warm-up)."""
        active = [r for r in history if "s2ap_steps" in r]
        steps = sum(r["s2ap_steps"] for r in active)
        if not steps:
            return {"s2ap_gamma": self.gamma, "s2ap_steps": 0}
        noflip = sum(r["s2ap_noflip_steps"] for r in active)
        return {"s2ap_gamma": self.gamma, "s2ap_steps": steps, "s2ap_noflip_steps": noflip,
                "s2ap_noflip_fraction": noflip / steps,
                "s2ap_flip_fraction": sum(r["s2ap_flip_fraction"] * r["s2ap_steps"] for r in active) / steps,
                "s2ap_flip_fraction_by_epoch": [r.get("s2ap_flip_fraction") for r in history]}

    def backward(self, trainer, batch) -> torch.Tensor:
        model = trainer.model
        if not self.active:
            loss = trainer.compute_loss(batch)
            loss.backward()
            return loss.detach()
        layers = [layer for _, layer in masked_layers(model) if layer.scores.requires_grad]
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        rng_before = torch.get_rng_state()
        cuda_before = torch.cuda.get_rng_state_all() if devices else None

        loss = trainer.compute_loss(batch)  # pass 1: the base method's pass
        loss.backward()
        live = self._live_state(layers, model)
        saved = self._scratch(live)
        _copy_all(saved, live)
        saved_masks = saved[len(layers):2 * len(layers)]
        rng_after = torch.get_rng_state()
        cuda_after = torch.cuda.get_rng_state_all() if devices else None
        with torch.no_grad():
            for layer in layers:
                layer.scores.add_(perturbation(layer.scores, layer.scores.grad, self.gamma, self.norm))
                layer.refresh_mask()
            self._count_flips(layers, saved_masks)
        try:
            # replay the RNG pass 1 saw: same dropout masks, and pass 2 consumes nothing
            torch.set_rng_state(rng_before)
            if devices:
                torch.cuda.set_rng_state_all(cuda_before)
            if self.regenerate:
                with trainer.autocast():
                    batch = trainer.robust_loss.prepare(model, batch.x, batch.y)
            # pass 2 at s + z: only the score gradient is taken, so every other parameter keeps
            # the gradient of pass 1 (BN affine, HARP's rates) and no work is spent on theirs
            scores = [layer.scores for layer in layers]
            grads = torch.autograd.grad(trainer.compute_loss(batch), scores, allow_unused=True)
        finally:
            torch.set_rng_state(rng_after)
            if devices:
                torch.cuda.set_rng_state_all(cuda_after)
            with torch.no_grad():
                _copy_all(live, saved)
        for layer, g in zip(layers, grads):
            layer.scores.grad = g if g is not None else torch.zeros_like(layer.scores)
        return loss.detach()

    def state_dict(self) -> dict:
        return {"active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state.get("active", False))


class AWP(TrainHook):
    """Adversarial weight perturbation (Wu et al., NeurIPS 2020) on the kept weights only.

    A proxy copy of the model takes one SGD step (lr ``proxy_lr``) that increases the robust loss
    on the adversarial batch; the weight difference v, multiplied by the mask, is rescaled per
    layer to gamma * ||w_l * m_l||; 1-D parameters (BatchNorm, biases) are skipped. The training
    gradient is taken at w + v, then w is copied back exactly ((w + v) - v != w in floating point)
    before the optimiser step. BatchNorm running statistics come from the proxy's forward on the
    unperturbed weights, never from the perturbed pass.
    """

    overrides_backward = True
    defaults = {"gamma": 0.01, "warmup_epochs": 0, "proxy_lr": 0.01}

    def __init__(self, cfg: dict | None):
        cfg = {**self.defaults, **(cfg or {})}
        unknown = set(cfg) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown awp options {sorted(unknown)}; valid: {sorted(self.defaults)}")
        self.gamma = float(cfg["gamma"])
        self.warmup_epochs = int(cfg["warmup_epochs"])
        self.proxy_lr = float(cfg["proxy_lr"])
        self.active = False
        self.proxy: nn.Module | None = None
        self._target_list: list | None = None

    def on_fit_start(self, trainer) -> None:
        self.proxy = copy.deepcopy(trainer.model)
        for p in self.proxy.parameters():
            p.requires_grad_(p.dim() > 1)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.active = epoch >= self.warmup_epochs

    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Parameter, torch.Tensor | None]]:
        """(name, parameter, broadcastable mask or None) of every perturbed parameter. Built once:
        the masks are buffers updated in place, so the list stays valid for the whole finetune."""
        if getattr(self, "_target_list", None) is None:
            layers = dict(masked_layers(model))
            out = []
            for name, p in model.named_parameters():
                if p.dim() <= 1 or not p.requires_grad:
                    continue
                owner, _, leaf = name.rpartition(".")
                layer = layers.get(owner) if leaf == "weight" else None
                out.append((name, p, None if layer is None else layer._broadcast(layer.mask)))
            self._target_list = out
        return self._target_list

    @torch.no_grad()
    def weight_perturbation(self, trainer, batch) -> dict[str, torch.Tensor]:
        """v per parameter name: the proxy's ascent direction, masked and rescaled."""
        model, proxy = trainer.model, self.proxy
        proxy.load_state_dict(model.state_dict())
        proxy.train()
        with torch.enable_grad():
            loss, _ = trainer.robust_loss.loss(proxy, batch)
            params = [p for p in proxy.parameters() if p.requires_grad]
            grads = torch.autograd.grad(-loss, params, allow_unused=True)
        # the unperturbed forward of the proxy is where BatchNorm statistics move
        for b_model, b_proxy in zip(_bn_buffers(model), _bn_buffers(proxy)):
            b_model.copy_(b_proxy)
        proxy_params = dict(proxy.named_parameters())
        gmap = {id(p): g for p, g in zip(params, grads)}
        v = {}
        for name, p, m in self._targets(model):
            g = gmap.get(id(proxy_params[name]))
            if g is None:
                continue
            diff = -self.proxy_lr * g  # one SGD step on -loss, i.e. ascent on the loss
            w = p.detach()
            if m is not None:
                diff = diff * m
                w = w * m
            v[name] = diff * (self.gamma * w.norm() / (diff.norm() + 1e-20))
        return v

    def backward(self, trainer, batch) -> torch.Tensor:
        model = trainer.model
        if not self.active or self.gamma == 0.0:
            loss = trainer.compute_loss(batch)
            loss.backward()
            return loss.detach()
        v = self.weight_perturbation(trainer, batch)
        params = dict(model.named_parameters())
        saved = {name: params[name].detach().clone() for name in v}
        saved_bn = [b.detach().clone() for b in _bn_buffers(model)]
        with torch.no_grad():
            for name, delta in v.items():
                params[name].add_(delta)
        try:
            loss = trainer.compute_loss(batch)
            loss.backward()
        finally:
            with torch.no_grad():
                for name, w in saved.items():
                    params[name].copy_(w)
                for b, s in zip(_bn_buffers(model), saved_bn):
                    b.copy_(s)
        return loss.detach()

    def state_dict(self) -> dict:
        return {"active": self.active}

    def load_state_dict(self, state: dict) -> None:
        self.active = bool(state.get("active", False))
