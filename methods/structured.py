"""Structured (output-channel) masks: a pruned channel outputs exactly zero.

Masking a conv's filters (``granularity="channel"`` in ``benchmark.core.masking``) is not enough for
that: the BatchNorm that follows adds its bias (and a layer its own bias) to a channel whose input
is zero. A method that prunes channels (HARP with ``structured: true``) therefore hooks the
outputs while it searches and finetunes (``attach_channel_output_masks``), and zeroes what a
pruned channel still holds before the export (``zero_pruned_channel_params``), so that the plain
exported model, which has no hooks, computes the same function.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core.masking import MASKED_TYPES, MaskedMixin, masked_layers


def ste_mask(layer: MaskedMixin) -> torch.Tensor:
    """The layer's mask with the same straight-through terms ``effective_weight`` adds.

    Used where a channel mask is applied a second time (after a BatchNorm, or to a bias), so the
    scores and a learned rate also receive the gradient of that use.
    """
    m = layer.mask
    if layer.mode == "search" and layer.score_grad and torch.is_grad_enabled():
        a = layer.scores.abs()
        m = m + (a - a.detach())
        k = layer.keep_fraction()
        if isinstance(k, torch.Tensor):
            m = m + (k - k.detach())
    return m


def _has_prunable(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


def channel_bn_pairs(model: nn.Module) -> list[tuple[str, MaskedMixin, str, nn.Module]]:
    """(layer name, channel-masked layer, BN name, BatchNorm fed by it), found by module order.

    Within one parent, the BatchNorm registered after a channel-masked layer (parameter-free
    siblings such as ReLU or pooling may sit between them) normalises that layer's output in every
    architecture of the suite (ResNet, WRN's pre-activation blocks, VGG, the small CNN). The search
    stops at the next module that holds a prunable layer or any other parameters, and the number of
    features must match, so a BN that belongs to another layer is never paired.
    """
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            if not isinstance(child, MASKED_TYPES) or child.granularity != "channel":
                continue
            for sib_name, sib in children[i + 1:]:
                if isinstance(sib, nn.modules.batchnorm._BatchNorm):
                    if sib.num_features == child.weight.shape[0]:
                        prefix = f"{parent_name}." if parent_name else ""
                        pairs.append((prefix + name, child, prefix + sib_name, sib))
                    break
                if _has_prunable(sib) or any(True for _ in sib.parameters()):
                    break
    return pairs


class _ChannelOutputMask:
    """Forward hook that zeroes the pruned channels of a module's output.

    A callable object rather than a closure: ``copy.deepcopy`` of the model (AWP's proxy, say)
    then maps ``layer`` to the copy's layer instead of keeping the original's mask.
    ``kind`` 'bn' multiplies a BatchNorm's output (channel dim 1); 'bias' removes the layer's own
    bias from pruned channels (y - b * (1 - m)), whose weights the mask already zeroes.
    """

    def __init__(self, layer: MaskedMixin, kind: str):
        self.layer = layer
        self.kind = kind

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        layer = self.layer
        if layer.mode == "dense":
            return None
        m = ste_mask(layer).to(output.dtype)
        if self.kind == "bn":
            return output * m.view(1, -1, *([1] * (output.dim() - 2)))
        b = layer.bias
        if isinstance(layer, nn.Linear):  # features are the last dim, also for (B, T, C) inputs
            return output - b * (1.0 - m)
        return output - (b * (1.0 - m)).view(1, -1, *([1] * (output.dim() - 2)))


def attach_channel_output_masks(model: nn.Module) -> list[tuple[str, str]]:
    """Makes every pruned output channel of a channel-masked layer exactly zero.

    Masking a conv's filters is not enough: the BatchNorm that follows adds its bias (and the
    layer its own bias) to a channel whose input is zero. Hooks the BN found by
    ``channel_bn_pairs`` (or, without one, the layer's own bias). Idempotent; hooks are not part of
    the state_dict, so call this after ``to_masked`` whenever a channel-masked model is built.
    Returns the (layer, BN) pairs.
    """
    pairs = channel_bn_pairs(model)
    followed = {id(layer) for _, layer, _, _ in pairs}
    for _, layer in masked_layers(model):
        for handle in getattr(layer, "_channel_hook_handles", []):
            handle.remove()
        layer._channel_hook_handles = []
    for _, layer, _, bn in pairs:
        layer._channel_hook_handles.append(bn.register_forward_hook(_ChannelOutputMask(layer, "bn")))
    for _, layer in masked_layers(model):
        if layer.granularity == "channel" and layer.bias is not None and id(layer) not in followed:
            layer._channel_hook_handles.append(layer.register_forward_hook(_ChannelOutputMask(layer, "bias")))
    return [(a, b) for a, _, b, _ in pairs]


@torch.no_grad()
def zero_pruned_channel_params(model: nn.Module) -> None:
    """Zeroes what a pruned channel still holds: its bias and its BatchNorm's affine parameters.

    The hooks above already give exact zeros in the masked model; this makes the exported plain
    model (no hooks) output exact zeros too: BN computes (x - mean) / std * 0 + 0. Running
    statistics are reset so they stay finite.
    """
    for _, layer, _, bn in channel_bn_pairs(model):
        pruned = layer.mask == 0
        if bn.affine:
            bn.weight[pruned] = 0.0
            bn.bias[pruned] = 0.0
        if bn.track_running_stats and bn.running_mean is not None:
            bn.running_mean[pruned] = 0.0
            bn.running_var[pruned] = 1.0
    for _, layer in masked_layers(model):
        if layer.granularity == "channel" and layer.bias is not None:
            layer.bias[layer.mask == 0] = 0.0
