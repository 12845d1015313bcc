"""Score-based masks for every Conv2d and Linear weight.

Long because the masked layers, their straight-through mask and the mask utilities (export, load,
report) share one layer contract that every method relies on.

One mask function (``topk_mask_count`` of a layer's scores at its ``kept_target``) serves every
method, the layer-wise magnitude baseline and the export. A masked layer holds its dense
``weight``, one importance score per weight (or per output channel for structured pruning) and a
``mask`` buffer. The mask is recomputed from the scores only when they change (``refresh_masks``
once per optimiser step), never on every forward pass; inside the attack the scores receive no
gradient, so the layer multiplies by the stored mask alone. Structured masks' extra machinery
(pruned channels output exactly zero) lives with the methods that use it (methods/structured.py).

Modes:
  dense     forward uses ``weight`` (pretraining);
  search    weights frozen, scores trainable; forward uses ``weight * mask`` and the gradient reaches
            the scores straight through the top-k: dL/ds = dL/d(w*m) * w * sign(s);
  finetune  mask fixed, weights trainable; forward uses ``weight * mask``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core import fastpaths

MODES = ("dense", "search", "finetune")


def kept_count(n: int, keep: float) -> int:
    """HYDRA's count: a layer of n weights at keep-fraction k keeps n - floor((1 - k) * n).

    At least one weight survives whenever k > 0. The 1e-9 guards against (1 - k) * n landing just
    below an integer in floating point (1 - 0.9 is 0.09999999999999998).
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep fraction must be in [0, 1], got {keep}")
    if keep == 0.0:
        return 0
    return max(1, n - math.floor((1.0 - keep) * n + 1e-9))


def topk_mask_count(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Mask (same shape, float) keeping exactly ``count`` entries of largest |score|.

    Ties are broken by index (lower flat index wins), so the count is exact even when scores tie;
    a threshold from kthvalue alone would keep every tied entry. Cost is O(n): one kthvalue and a
    cumulative sum, no sort.
    """
    flat = scores.detach().abs().flatten()
    n = flat.numel()
    if count >= n:
        return torch.ones_like(scores, dtype=torch.float32)
    if count <= 0:
        return torch.zeros_like(scores, dtype=torch.float32)
    if flat.device.type == "cuda":
        # CUDA's kthvalue sorts; topk is a radix select, several times faster on large layers
        threshold = torch.topk(flat, count, sorted=False).values.min()
    else:
        threshold = torch.kthvalue(flat, n - count + 1).values
    above = flat > threshold
    tied = flat == threshold
    # kept on the device: an int() here would stall the GPU once per layer per step
    need = count - above.sum()
    keep_tied = tied & (torch.cumsum(tied.to(torch.int64), 0) <= need)
    return (above | keep_tied).to(torch.float32).view_as(scores)


def topk_mask_rows(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Like ``topk_mask_count``, but every row (dim 0: a classifier's class) keeps its entry of
    largest |score| (lowest index on ties) whenever ``count`` allows one per row; the other
    ``count - rows`` entries are the largest of the rest. When top-k already keeps something in
    every row, this is exactly top-k: a row's best entry is then among the kept."""
    rows = scores.shape[0]
    if count < rows or scores.dim() < 2:
        return topk_mask_count(scores, count)
    a = scores.detach().abs().flatten(1)
    best = torch.zeros_like(a, dtype=torch.bool)
    best[torch.arange(rows, device=a.device), a.argmax(1)] = True
    # lift each row's best above every other entry, so the one top-k keeps all of them
    lifted = a + best.to(a.dtype) * (a.max() + 1.0)
    return topk_mask_count(lifted.view_as(scores), count)


def topk_mask(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """Mask keeping HYDRA's count (``kept_count``) of largest |score| at keep fraction ``keep``."""
    return topk_mask_count(scores, kept_count(scores.numel(), keep))


def global_counts(scores: list[torch.Tensor], total_kept: int) -> list[int]:
    """Per-tensor counts of ONE top-``total_kept`` over the |values| of all tensors.

    O(n): a kthvalue threshold, then the tied entries at the threshold go to the earlier tensor
    first (and, within a tensor, ``topk_mask_count`` takes the lower indices): the same result as a
    stable descending sort of the concatenation.
    """
    flat = [s.detach().abs().flatten().float().cpu() for s in scores]
    n = sum(f.numel() for f in flat)
    if not 0 <= total_kept <= n:
        raise ValueError(f"cannot keep {total_kept} of {n} entries")
    if total_kept == 0:
        return [0] * len(flat)
    if total_kept == n:
        return [f.numel() for f in flat]
    threshold = torch.kthvalue(torch.cat(flat), n - total_kept + 1).values
    above = [int((f > threshold).sum()) for f in flat]
    need = total_kept - sum(above)
    counts = []
    for f, c in zip(flat, above):
        tied = int((f == threshold).sum())
        take = min(tied, need)
        need -= take
        counts.append(c + take)
    return counts


class MaskedMixin:
    """Shared behaviour of MaskedConv2d and MaskedLinear (see the module docstring)."""

    weight: nn.Parameter

    def _setup_mask(self, granularity: str = "weight") -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        self.granularity = granularity
        axis = _SCORE_AXIS[granularity]
        shape = self.weight.shape if axis is None else self.weight.shape[axis:axis + 1]
        self.scores = nn.Parameter(torch.zeros(shape, dtype=self.weight.dtype,
                                               device=self.weight.device), requires_grad=False)
        self.register_buffer("mask", torch.ones(shape, dtype=self.weight.dtype, device=self.weight.device))
        self.mode = "dense"
        # keep fraction of this layer: a float for fixed-rate methods; HARP sets rate_logit instead
        self.keep = 1.0
        self.rate_logit: nn.Parameter | None = None
        self.rate_floor = 0.0
        self.score_grad = False  # True only while the scores are being trained outside an attack
        self.in_attack = False  # True inside an attack's passes (``scores_frozen``)
        # every row (a classifier's class) keeps at least one weight when the count allows it
        # (HARP sets it on the classifier; ``topk_mask_rows``)
        self.one_per_row = False
        # the fewest weights the layer keeps whatever its keep fraction (the unit floor of the
        # fixed-rate methods sets it to the row count, so that no output unit is left dead)
        self.min_kept = 0
        self._folded: tuple | None = None

    # -- keep fraction -------------------------------------------------------------------------
    def keep_fraction(self) -> torch.Tensor | float:
        """The layer's keep fraction; a differentiable tensor when the rate is learned (HARP)."""
        if self.rate_logit is None:
            return self.keep
        return torch.sigmoid(self.rate_logit) * (1.0 - self.rate_floor) + self.rate_floor

    def kept_target(self) -> int:
        k = self.keep_fraction()
        k = float(k.detach()) if isinstance(k, torch.Tensor) else float(k)
        count = kept_count(self.scores.numel(), min(max(k, 0.0), 1.0))
        return min(self.scores.numel(), max(count, self.min_kept))

    def select_mask(self, scores: torch.Tensor) -> torch.Tensor:
        """The layer's mask rule applied to ``scores`` (its own, or perturbed ones): top-k at
        ``kept_target``, one entry per row first when ``one_per_row`` is set."""
        select = topk_mask_rows if self.one_per_row and self.granularity == "weight" else topk_mask_count
        return select(scores, self.kept_target()).to(self.mask.dtype)

    @torch.no_grad()
    def refresh_mask(self) -> None:
        self.mask.copy_(self.select_mask(self.scores))

    # -- forward -------------------------------------------------------------------------------
    def _broadcast(self, t: torch.Tensor) -> torch.Tensor:
        axis = _SCORE_AXIS[self.granularity]
        if axis is None:
            return t
        shape = [1] * self.weight.dim()
        shape[axis] = -1
        return t.view(shape)

    def effective_weight(self) -> torch.Tensor:
        if self.mode == "dense":
            return self.weight
        if self.mode == "search":
            if self.score_grad and torch.is_grad_enabled():
                k = self.keep_fraction()
                return _StraightThroughMask.apply(self.weight, self._broadcast(self.mask), self.scores,
                                                  k if isinstance(k, torch.Tensor) else None)
            # weights are frozen in the search and the mask changes only at a refresh, so the
            # attack's forward passes reuse one folded product per optimiser step
            return self._folded_product()
        if self.in_attack and fastpaths.fast():
            # finetune: the weights change only at the optimiser step and an attack takes no
            # weight gradient, so its passes share one product (the same values: the same
            # multiplication, done once instead of once per pass)
            return self._folded_product()
        return self.weight * self._broadcast(self.mask)

    def _folded_product(self) -> torch.Tensor:
        key = self._fold_key()
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, (self.weight * self._broadcast(self.mask)).detach())
        return self._folded[1]

    def _fold_key(self) -> tuple:
        # tensor versions bump on every in-place write (refresh, load_state_dict, optimiser)
        return (self.weight._version, self.mask._version, self.weight.data_ptr(), self.mask.data_ptr(),
                self.weight.requires_grad)


class _StraightThroughMask(torch.autograd.Function):
    """w * m in the forward; in the backward, with G = dL/d(w * m) and dL/dm = G * w:
    dL/dw = G * m,  dL/ds = dL/dm * sign(s) (summed over a channel's weights),
    dL/dk = sum(dL/dm) (HARP's learned keep fraction).
    One node instead of the m + (|s| - |s|.detach()) + (k - k.detach()) chain: the same numbers
    with fewer kernels, which is what a small layer's step time is made of on a GPU."""

    @staticmethod
    def forward(ctx, weight, mask, scores, keep):
        ctx.save_for_backward(weight, mask, scores)
        ctx.has_keep = keep is not None
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask, scores = ctx.saved_tensors
        g_weight = grad * mask if ctx.needs_input_grad[0] else None
        g_mask = grad * weight
        g_scores = g_keep = None
        if ctx.needs_input_grad[2]:
            if scores.dim() == weight.dim():
                g_s = g_mask
            else:  # one score per channel: the channel's weights' gradients add up
                dims = [d for d in range(weight.dim()) if mask.shape[d] == 1]
                g_s = g_mask.sum(dim=dims).reshape(scores.shape)
            g_scores = g_s * torch.sign(scores)
        if ctx.has_keep and ctx.needs_input_grad[3]:
            g_keep = g_mask.sum()
        return g_weight, None, g_scores, g_keep


#: mask granularities: one score per weight, per output channel (dim 0 of the weight), or per
#: input channel (dim 1: the public HARP code's channel pruning)
GRANULARITIES = ("weight", "channel", "in_channel")
_SCORE_AXIS = {"weight": None, "channel": 0, "in_channel": 1}


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class MaskedLinear(MaskedMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


MASKED_TYPES = (MaskedConv2d, MaskedLinear)


def _masked_copy(module: nn.Module, granularity: str) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        new = MaskedConv2d(module.in_channels, module.out_channels, module.kernel_size,
                           stride=module.stride, padding=module.padding, dilation=module.dilation,
                           groups=module.groups, bias=module.bias is not None,
                           padding_mode=module.padding_mode,
                           device=module.weight.device, dtype=module.weight.dtype)
    else:
        new = MaskedLinear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.weight.device, dtype=module.weight.dtype)
    new.load_state_dict(module.state_dict())
    new._setup_mask(granularity)
    new.train(module.training)
    return new


def to_masked(model: nn.Module, granularity: str = "weight") -> nn.Module:
    """Replaces every Conv2d and Linear (first conv and classifier included) by its masked twin.

    Module names are kept, so ``weight`` and ``bias`` keys of the state_dict do not change.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, MASKED_TYPES):
            continue
        # exact types only: a subclass with its own forward (nn.MultiheadAttention's out_proj, say)
        # reads .weight directly and would bypass the mask
        if type(child) in (nn.Conv2d, nn.Linear):
            setattr(model, name, _masked_copy(child, granularity))
        else:
            to_masked(child, granularity)
    return model


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedMixin]]:
    for name, module in model.named_modules():
        if isinstance(module, MASKED_TYPES):
            yield name, module


def prunable_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Conv2d and Linear layers of a plain or masked model."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            yield name, module


def set_mode(model: nn.Module, mode: str, *, train_bn: bool = True) -> None:
    """Switches every masked layer and sets which parameters train.

    search:   only scores (and learned rates) train, plus BatchNorm affine parameters unless
              ``train_bn`` is False (HYDRA's default keeps BN training during the mask search).
    finetune: every parameter but scores and rates trains.
    dense:    every parameter but scores and rates trains.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    layers = dict(masked_layers(model))
    if not layers and mode != "dense":
        raise ValueError("set_mode: the model has no masked layers; call to_masked first")
    score_params = set()
    for layer in layers.values():
        layer.mode = mode
        layer.score_grad = mode == "search"
        score_params.add(id(layer.scores))
        if layer.rate_logit is not None:
            score_params.add(id(layer.rate_logit))
    for module in model.modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) or isinstance(module, nn.LayerNorm)
        for p in module.parameters(recurse=False):
            if id(p) in score_params:
                p.requires_grad_(mode == "search")
            elif mode == "search":
                p.requires_grad_(is_bn and train_bn)
            else:
                p.requires_grad_(True)


@contextlib.contextmanager
def scores_frozen(model: nn.Module):
    """Inside an attack the scores take no gradient: the forward is a plain masked product, and
    one product serves every pass of the attack (the weights do not change within it)."""
    layers = [layer for _, layer in masked_layers(model)]
    saved = [(layer.score_grad, layer.in_attack) for layer in layers]
    for layer in layers:
        layer.score_grad = False
        layer.in_attack = True
    try:
        yield
    finally:
        for layer, (flag, attacking) in zip(layers, saved):
            layer.score_grad, layer.in_attack = flag, attacking


@torch.no_grad()
def refresh_masks(model: nn.Module) -> None:
    for _, layer in masked_layers(model):
        layer.refresh_mask()


def set_keep(model: nn.Module, keep: float | dict[str, float]) -> None:
    """Sets every layer's keep fraction: one value for all (layer-wise uniform) or a dict by name."""
    for name, layer in masked_layers(model):
        layer.keep = float(keep[name] if isinstance(keep, dict) else keep)


def fan_in(layer: nn.Module) -> int:
    w = layer.weight
    return int(w[0].numel())


@torch.no_grad()
def scaled_score_init(model: nn.Module) -> None:
    """HYDRA's init s = sqrt(6 / fan_in) * w / max|w|: the first mask is layer-wise magnitude."""
    for _, layer in masked_layers(model):
        w = layer.weight.detach()
        if layer.granularity == "channel":
            w = w.flatten(1).norm(dim=1)
        elif layer.granularity == "in_channel":
            w = w.transpose(0, 1).flatten(1).norm(dim=1)
        denom = w.abs().max().clamp_min(1e-12)
        layer.scores.copy_(math.sqrt(6.0 / fan_in(layer)) * w / denom)


@torch.no_grad()
def apply_masks_to_weights(model: nn.Module) -> None:
    """Sets pruned weights to exactly zero (finetune keeps them there after each step)."""
    for _, layer in masked_layers(model):
        layer.weight.mul_(layer._broadcast(layer.mask))


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weight-shaped boolean masks by layer name (channel masks are expanded)."""
    out = {}
    for name, layer in masked_layers(model):
        m = layer._broadcast(layer.mask).expand_as(layer.weight)
        out[name] = m.detach().to(torch.bool).cpu().clone()
    return out


@torch.no_grad()
def load_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    layers = dict(masked_layers(model))
    missing = set(layers) - set(masks)
    if missing:
        raise KeyError(f"masks missing for layers: {sorted(missing)}")
    for name, layer in layers.items():
        m = masks[name].to(layer.mask.device)
        if layer.granularity == "channel":
            m = m.flatten(1).any(dim=1)
        elif layer.granularity == "in_channel":
            m = m.transpose(0, 1).flatten(1).any(dim=1)
        layer.mask.copy_(m.to(layer.mask.dtype))


def export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain-architecture state_dict: pruned weights zero, no scores, masks or rates."""
    masked = dict(masked_layers(model))
    out = {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in masked:
            if leaf in ("scores", "mask", "rate_logit"):
                continue
            if leaf == "weight":
                layer = masked[owner]
                value = value * layer._broadcast(layer.mask).to(value.dtype)
        out[key] = value.detach().cpu().clone()
    return out


def sparsity_report(masks: dict[str, torch.Tensor]) -> dict:
    """Mask counts: masked-out weights over all masked weights (what a search chose). The
    sparsity a result reports is ``measure_sparsity``'s, taken from the weights themselves."""
    layers = {}
    total = kept = 0
    for name, m in masks.items():
        n, k = m.numel(), int(m.sum())
        layers[name] = {"total": n, "kept": k, "sparsity": 1.0 - k / n}
        total += n
        kept += k
    return {"global": 1.0 - kept / max(total, 1), "total": total, "kept": kept, "layers": layers}


class SparsityError(ValueError):
    """A model whose weights contradict its masks, or that holds NaN or infinite values."""


def _check_finite(model: nn.Module) -> None:
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise SparsityError(f"{kind} {name} holds {bad} NaN or infinite value(s): the "
                                    f"model is broken and is not evaluated")


def _as_bool_mask(name: str, mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(mask):
        raise SparsityError(f"mask of layer {name} is a {type(mask).__name__}, not a tensor")
    if tuple(mask.shape) != tuple(weight.shape):
        # never broadcast: a channel-shaped or transposed mask would silently count other weights
        raise SparsityError(f"mask of layer {name} has shape {tuple(mask.shape)}, its weight "
                            f"{tuple(weight.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise SparsityError(f"mask of layer {name} holds values other than 0 and 1")
        mask = mask != 0
    return mask.to(weight.device)


@torch.no_grad()
def measure_sparsity(model: nn.Module, masks: dict[str, torch.Tensor] | None = None,
                     granularity: str | None = None) -> dict:
    """Sparsity of the model as it will be attacked: zero Conv2d/Linear weights over all of them,
    globally and per layer, with the mask count beside it when masks are given.

    Refused (SparsityError): NaN or infinite parameters or buffers; masks that do not name exactly
    the model's Conv2d/Linear layers; a mask whose shape differs from its layer's weight; a
    non-zero weight outside its mask (a dense model with a mask attached would otherwise be
    published as sparse with the dense model's accuracy); with ``granularity='channel'``, a mask
    that prunes part of an output channel. ``kept_zero`` counts weights the mask keeps that are
    zero (so zeros = pruned + kept_zero).

    Returns {"measured", "zeros", "total", "mask": {"kept", "sparsity"} | None, "kept_zero",
    "layers": {name: {"total", "zeros", "sparsity", "mask_kept"}}}.
    """
    _check_finite(model)
    layers = dict(prunable_layers(model))
    if not layers:
        raise SparsityError("the model has no Conv2d or Linear layer to measure")
    if masks is not None:
        missing, extra = sorted(set(layers) - set(masks)), sorted(set(masks) - set(layers))
        if missing or extra:
            raise SparsityError(f"masks do not match the model's Conv2d/Linear layers: missing "
                                f"{missing}, unknown {extra}")
    out_layers = {}
    zeros = total = kept = kept_zero = 0
    for name, layer in layers.items():
        w = layer.weight.detach()
        is_zero = w == 0
        n, z = w.numel(), int(is_zero.sum())
        entry = {"total": n, "zeros": z, "sparsity": z / n, "mask_kept": None}
        if masks is not None:
            m = _as_bool_mask(name, masks[name], w)
            outside = int((~is_zero & ~m).sum())
            if outside:
                raise SparsityError(
                    f"layer {name}: {outside} weight(s) outside its mask are non-zero; the model "
                    f"is not the pruned model its masks describe (a dense model with a mask "
                    f"attached?). Export it with benchmark.core.masking.export_state_dict")
            if granularity in ("channel", "in_channel"):
                rows = m.flatten(1) if granularity == "channel" else m.transpose(0, 1).flatten(1)
                if not bool((rows.all(dim=1) | ~rows.any(dim=1)).all()):
                    which = "an output" if granularity == "channel" else "an input"
                    raise SparsityError(f"layer {name}: the model is declared channel-pruned but "
                                        f"its mask prunes part of {which} channel")
            entry["mask_kept"] = int(m.sum())
            kept += entry["mask_kept"]
            kept_zero += int((is_zero & m).sum())
        out_layers[name] = entry
        zeros += z
        total += n
    return {"measured": zeros / total, "zeros": zeros, "total": total,
            "mask": None if masks is None else {"kept": kept, "sparsity": 1.0 - kept / total},
            "kept_zero": None if masks is None else kept_zero, "layers": out_layers}


# ---------------------------------------------------------------- count-allocating methods (LAMP, global top-k)
def keep_for_count(n: int, count: int) -> float:
    """A keep fraction k with ``kept_count(n, k) == count`` exactly.

    count / n can land one weight off after HYDRA's floor (floating point in (1 - k) * n), so the
    value is nudged until the count matches: methods that allocate counts (LAMP, a global top-k)
    then reproduce them through the one mask function.
    """
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, {n}], got {count}")
    if count == 0:
        return 0.0
    if count == n:
        return 1.0
    k = count / n
    for _ in range(64):
        got = kept_count(n, k)
        if got == count:
            return k
        k = math.nextafter(k, 2.0 if got < count else -1.0)
    raise ArithmeticError(f"no keep fraction gives {count} of {n}")  # unreachable in practice
