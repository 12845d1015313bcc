"""The public-style HYDRA step speed/gpu_check.py times ours against (its part 2).

NOT the suite's code path: a re-implementation of the public HYDRA training step, written from
the behaviour docs/methods.md describes ("the public code sorts all scores on every forward
pass, attack steps included; same mask, more work"), to measure what our once-per-step mask
saves. No public code was copied. tests/test_gpu_check.py checks that it computes our masks and
our score update. torch is imported inside functions throughout: gpu_check's --check-imports,
--bundle-deps and --merge run (and report) on a machine without it.
"""
from __future__ import annotations

import functools
import math


@functools.cache
def _public_style_classes():
    """(sorted-mask autograd function, conv layer, linear layer) of the public-style reference."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PublicStyleSortedMask(torch.autograd.Function):
        """Forward: keep all but the ``drop`` smallest |s|, found by a full sort on every call.
        Backward: straight through to |s| (autograd's abs then multiplies by sign(s))."""

        @staticmethod
        def forward(ctx, abs_scores, drop):
            order = torch.sort(abs_scores.flatten()).indices
            mask = torch.ones(abs_scores.numel(), device=abs_scores.device, dtype=abs_scores.dtype)
            mask[order[:drop]] = 0
            return mask.view_as(abs_scores)

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    class PublicStyleConv2d(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, self.weight * public_style_mask(self.scores, self.drop), self.bias)

    class PublicStyleLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * public_style_mask(self.scores, self.drop), self.bias)

    return PublicStyleSortedMask, PublicStyleConv2d, PublicStyleLinear


def public_style_mask(scores, drop: int):
    """The public-style layer's mask of ``scores``: a full sort of |scores|, every call."""
    return _public_style_classes()[0].apply(scores.abs(), drop)


def _public_style_layer(module, keep: float):
    """A Conv2d/Linear twin whose forward recomputes its mask from the scores on every call."""
    from torch import nn

    from benchmark.core.masking import kept_count

    _, conv, linear = _public_style_classes()
    if isinstance(module, nn.Conv2d):
        new = conv(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                   padding=module.padding, dilation=module.dilation, groups=module.groups,
                   bias=module.bias is not None, padding_mode=module.padding_mode,
                   device=module.weight.device)
    else:
        new = linear(module.in_features, module.out_features, bias=module.bias is not None,
                     device=module.weight.device)
    new.load_state_dict(module.state_dict())
    w = new.weight.detach()
    # HYDRA's scaled initialisation, as docs/methods.md states it: sqrt(6 / fan_in) * w / max|w|
    new.scores = nn.Parameter(math.sqrt(6.0 / w[0].numel()) * w / w.abs().max().clamp_min(1e-12))
    # the published count: a layer of n weights keeps n - floor((1 - k) n)
    new.drop = w.numel() - kept_count(w.numel(), keep)
    new.train(module.training)
    return new


def to_public_style(model, keep: float):
    """Replaces every Conv2d and Linear (first and last included) by its public-style twin."""
    from torch import nn

    for name, child in list(model.named_children()):
        if type(child) in (nn.Conv2d, nn.Linear):
            setattr(model, name, _public_style_layer(child, keep))
        else:
            to_public_style(child, keep)
    return model


class PublicStyleHydra:
    """The public-style search step: attack, loss, backward, SGD on scores and BatchNorm.

    The attack and loss are the suite's (RobustLoss), so that the only difference from our step is
    the mask machinery: a sort per layer per forward pass instead of a top-k per optimiser step,
    and the scores inside every attack graph instead of a folded, frozen product."""

    def __init__(self, model, cfg, device, *, bf16: bool = False, channels_last: bool = False):
        import torch
        from torch import nn

        from benchmark.training.loop import build_optimizer
        from benchmark.training.losses import RobustLoss

        self.bf16 = bf16 and device.type == "cuda"
        self.channels_last = channels_last and device.type == "cuda"
        if self.channels_last:  # laid out like its inputs, as our stages lay out theirs
            model = model.to(memory_format=torch.channels_last)
        self.model, self.cfg, self.device = model, cfg, device
        params = []
        for module in model.modules():
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            for pname, p in module.named_parameters(recurse=False):
                trains = pname == "scores" or (is_bn and cfg.train_bn)
                p.requires_grad_(trains)
                if trains:
                    params.append(p)
        self.optimizer = build_optimizer(params, cfg)
        self.loss = RobustLoss(cfg.loss, cfg.attack, trades_beta=cfg.trades_beta,
                               adv_eval_mode=cfg.adv_eval_mode)
        self._torch = torch

    def autocast(self):
        if self.bf16:
            return self._torch.autocast("cuda", dtype=self._torch.bfloat16)
        return self._torch.autocast("cpu", enabled=False)

    def step(self, x, y) -> float:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=self._torch.channels_last)
        with self.autocast():
            batch = self.loss.prepare(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, _ = self.loss.loss(self.model, batch)
        loss.backward()
        self.optimizer.step()
        return loss.item()  # a training loop that logs its loss reads it every step

    def epoch(self, dataset, seed: int) -> int:
        """One pass over ``dataset`` in the order our Trainer draws with the same seed."""
        from benchmark.training.loop import make_loader

        loader = make_loader(dataset, self.cfg.batch_size, shuffle=True,
                             generator=self._torch.Generator().manual_seed(seed),
                             drop_last=len(dataset) > self.cfg.batch_size)
        self.model.train()
        steps = 0
        for x, y in loader:
            loss = self.step(x, y)
            if not math.isfinite(loss):
                raise FloatingPointError(f"public-style HYDRA: loss is {loss}")
            steps += 1
        return steps


