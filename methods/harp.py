"""HARP, Holistic Adversarially Robust Pruning (Zhao & Wressnegger, ICLR 2023; intellisec/harp).

Long because the method contract keeps one pruner in one file: HARP's layer allocations, budgets,
rate hinge and hooks belong together.

HYDRA's scaled scores plus ONE learnable keep-rate per layer,

    k_l = sigmoid(r_l) * (1 - k_min) + k_min,    k_min = alpha * target_keep  (alpha 0.1),

trained together with the scores. The mask keeps kept_count(n_l, k_l) entries of largest |score|
(``MaskedMixin.kept_target``), recomputed after every optimiser step (``RefreshMasks``); the
straight-through backward gives d loss / d k_l = sum of the mask's gradient (``effective_weight``).
The search loss adds the rate hinge

    gamma_t * max(current / target - 1, 0)

with gamma_t = (epoch + 1) * gamma until the hinge is 0 at an epoch end; from then on gamma_t stays
at the value it had (``RateHinge``; resumable). What "current" and "target" count is the budget:

  params  (unstructured; the public code's utils/hw.py, hw_loss) the parameter-weighted mean of the
          k_l against the target keep fraction;
  flops   (structured; utils/hw.py, hw_flops_loss) FLOPs: a layer with c_in input and c_out output
          channels, P output positions (H x W of a conv, tokens of a linear) and a kh x kw kernel
          costs P * c_out * (2 * kh * kw * c_in + 1) (multiply-adds, bias and activation, as the
          public count_flops_conv/count_flops_dense count them). P is measured by forward hooks on
          one training image at the start of the search (``probe_positions``), not read from
          per-architecture tables. With input-channel scores (the public code) layer l keeps
          c_in * k_l inputs and c_out * k_{l+1} outputs, l + 1 being the next masked layer in
          module order, as the public code pairs them; the last layer keeps all its outputs. The
          target is the FLOPs of every layer at round(c_in * k) inputs and round(c_out * k)
          outputs, k the nominal keep (so about k^2 of the dense FLOPs).

Structured pruning (``structured: true``) means what the public code means: one score per INPUT
channel of every Conv2d/Linear (its popup_scores of shape (1, C_in, 1, 1), models/layers.py; the
mask keeps a layer's top input channels; granularity "in_channel"), the search starts from dense
(its "original" strategy, every rate 1.0 clipped to 0.99), a shortcut conv shares the rate of its
block's first conv (utils/model.py, map_shortcut_rate), and the hinge counts FLOPs. Pruning input
channels zeroes whole weight columns, so the exported plain model computes exactly what the masked
one did, with no output hooks. The public scaled init reshapes the weight to (C_in, -1) without a
transpose, which groups consecutive filters rather than input channels; we use the L2 norm of each
input channel's weights (the intent), documented here as a difference. ``channel_axis: output``
keeps our per-output-channel variant (one score per filter; a pruned filter's BatchNorm and bias
are masked too, see methods/structured.py), with the params hinge counting channels or the flops
hinge with c_in from the previous layer's rate.

Options (presets: methods.harp.options) and why the defaults:
  gamma            0.01   the paper's CIFAR/SVHN value (ImageNet: 0.1). Its push per epoch scales
                   with the steps per epoch: a small training set needs a larger gamma to walk
                   the rates down to a 1 % budget in the same number of epochs.
  alpha            0.1    floor k_min = alpha * target, as published.
  init             "uniform" | "lamp" | "erk": the starting allocation of the rates.
                   uniform: every layer at ``init_keep``; lamp: the per-layer fractions of LAMP's
                   global top-k at the target; erk: Erdos-Renyi-Kernel densities scaled to the
                   target (layers that would exceed 1 are kept dense, as in RigL).
  init_keep        null = the public code's start: 0.1 ("010_uni", its README prunes to 1 % from
                   there) for weights, 1.0 ("original", from dense) for channels. A start below
                   the target is raised to the target (the budget is an upper bound; 010_uni is
                   only used for targets of at most 10 %).
  on_over_budget   "project" | "fail": what happens when the search ends above its budget (a
                   short search, or a gamma too small). project adds one common shift s to every
                   rate logit, the largest s (found by bisection) whose realised budget (counts, or
                   FLOPs of the counts) is at most the target; every layer stays at or above its
                   floor (k_min; the classifier's below). The result records the projection and
                   the leaderboard flags it: a projected mask is not what the search learned.
                   fail raises.
  budget_tolerance 0.01   relative: the search's realised budget may exceed the target by 1 % of
                   the target (per-layer rounding of counts, a hinge that froze at 4 decimals)
                   before it counts as over budget.
  rate_weight_decay 5e-4  weight decay on the rate logits, in a parameter group of their own: the
                   public code's single SGD applies its weight decay (5e-4) to them too.
  class_floor      true   (weights only) the classifier keeps at least one weight per class: its
                   rate floor is max(k_min, classes / n) and its mask keeps each class's weight of
                   largest |score| (``masking.topk_mask_rows``). Without it a 99 % search can leave
                   a class with no weight at all, which is a failed model, not a sparse one.
  structured       false. true prunes channels (see above).
  channel_axis     "input" (the public code) | "output" (ours): which channels a score prunes.
  hinge            null = "flops" when structured, else "params".
  share_shortcut_rate true (structured only): a residual shortcut conv (a module named shortcut,
                   downsample or convShortcut) uses the SAME rate parameter as the first conv of
                   its block, as the public code does; gradients of both uses add up.
  keep_classifier  true (structured, output channels only): the classifier keeps all its
                   outputs, which are the class logits, not channels; it holds no rate and counts
                   as fully kept in the budget.

Known defects of the public code that this file avoids: its dense export re-applies the global k
in every layer (ignoring the learned rates); here the masks are exported as searched, and
finalize_search guarantees per-layer counts = kept_count(n_l, k_l) of the final rates.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core.registry import register_method
from benchmark.training.loop import TrainConfig, TrainHook

from . import structured
from .base import PruningMethod, RefreshMasks, ScoreInitContext
from .lamp import lamp_allocation

logger = logging.getLogger(__name__)

INITS = ("uniform", "lamp", "erk")
OVER_BUDGET = ("project", "fail")
CHANNEL_AXES = ("input", "output")
HINGES = ("params", "flops")
SHORTCUT_NAMES = ("shortcut", "downsample", "convShortcut")
# HARP counts the target as reached when round(hinge, 4) == 0 at an epoch end
FREEZE_BELOW = 5e-5
# rate_init_func of the public code clips (k - k_min) / (1 - k_min) at 0.99 so a layer that
# starts dense keeps a usable sigmoid gradient; the lower clip only avoids log(0)
INIT_CLIP = (1e-6, 0.99)
# the public code's starting strategies: "010_uni" for weights, "original" (dense) for channels
DEFAULT_INIT_KEEP = {"weight": 0.1, "channel": 1.0}


# ---------------------------------------------------------------- allocations
def erk_keep(shapes: list[tuple[int, ...]], keep: float) -> list[float]:
    """Erdos-Renyi-Kernel keep fractions whose parameter-weighted mean is ``keep``.

    Density of a layer proportional to sum(shape) / prod(shape) (kernel dims included); layers
    whose density would exceed 1 are made dense and the rest rescaled, until none exceeds 1.
    """
    n = [math.prod(s) for s in shapes]
    raw = [sum(s) / math.prod(s) for s in shapes]
    budget = keep * sum(n)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(n)) if i not in dense]
        if not free:
            return [1.0] * len(n)
        eps = (budget - sum(n[i] for i in dense)) / sum(raw[i] * n[i] for i in free)
        worst = max(free, key=lambda i: raw[i])
        if eps * raw[worst] <= 1.0:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(n))]
        dense.add(worst)


def _shortcut_owner(names: list[str]) -> dict[str, str]:
    """Shortcut layer -> first non-shortcut layer of the same block (registration order)."""
    out = {}
    for name in names:
        parts = name.split(".")
        idx = next((i for i, p in enumerate(parts) if p in SHORTCUT_NAMES), None)
        if idx is None:
            continue
        block = ".".join(parts[:idx])
        prefix = f"{block}." if block else ""
        for other in names:
            rest = other[len(prefix):].split(".") if other.startswith(prefix) else None
            if rest is not None and not any(p in SHORTCUT_NAMES for p in rest):
                out[name] = other
                break
    return out


@torch.no_grad()
def probe_positions(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Output positions of every masked layer for one input (forward hooks, eval mode, the
    model's train/eval flags restored): H x W of a conv's output, the tokens of a linear's."""
    seen: dict[str, int] = {}
    handles = []
    for name, layer in masking.masked_layers(model):
        def hook(module, inputs, output, name=name):
            per_channel = output.shape[1] if isinstance(module, nn.Conv2d) else output.shape[-1]
            seen.setdefault(name, output.numel() // (output.shape[0] * per_channel))
        handles.append(layer.register_forward_hook(hook))
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    missing = [n for n, _ in masking.masked_layers(model) if n not in seen]
    if missing:
        raise ValueError(f"harp: the FLOPs probe never ran layers {missing}; the hinge cannot "
                         f"count their FLOPs (use hinge: params)")
    return seen


# ---------------------------------------------------------------- budgets
class ParamBudget:
    """The public hw_loss: kept units (weights, or channels) over all units; layers without a
    rate count with their fixed keep."""

    kind = "params"

    def __init__(self, layers: list[masking.MaskedMixin], target: float):
        if target <= 0:
            raise ValueError(f"target keep must be positive, got {target}")
        self.layers = list(layers)
        self.sizes = [float(layer.scores.numel()) for layer in self.layers]
        self.total = sum(self.sizes)
        self.target = float(target)
        self.target_count = masking.kept_count(int(self.total), self.target)
        # the realised target: HYDRA's count of the whole model
        self.target_realised = self.target_count / self.total

    def current(self) -> torch.Tensor:
        # one stacked expression instead of a few kernels per layer: on a GPU the hinge would
        # otherwise cost more in launches than it computes (same formula as keep_fraction)
        learned = [(layer, n) for layer, n in zip(self.layers, self.sizes) if layer.rate_logit is not None]
        fixed = sum(n * float(layer.keep) for layer, n in zip(self.layers, self.sizes)
                    if layer.rate_logit is None)
        if not learned:
            return torch.tensor(fixed / self.total)
        logits = torch.stack([layer.rate_logit for layer, _ in learned])
        key = (logits.device, logits.dtype)
        if getattr(self, "_consts_key", None) != key:
            self._sizes_t = torch.tensor([n for _, n in learned], device=logits.device, dtype=logits.dtype)
            self._floors_t = torch.tensor([layer.rate_floor for layer, _ in learned], device=logits.device,
                                          dtype=logits.dtype)
            self._consts_key = key
        k = torch.sigmoid(logits) * (1.0 - self._floors_t) + self._floors_t
        return ((self._sizes_t * k).sum() + fixed) / self.total

    def kept(self) -> int:
        return sum(layer.kept_target() for layer in self.layers)

    def realised(self) -> float:
        """The budget of the counts the masks keep now."""
        return self.kept() / self.total


class FlopsBudget:
    """The public hw_flops_loss (module docstring): FLOPs kept over dense FLOPs."""

    kind = "flops"

    def __init__(self, layers: list[masking.MaskedMixin], positions: list[int], target: float,
                 axis: str):
        if target <= 0:
            raise ValueError(f"target keep must be positive, got {target}")
        if axis not in CHANNEL_AXES:
            raise ValueError(f"channel axis must be one of {CHANNEL_AXES}, got {axis!r}")
        self.layers, self.axis, self.target_keep = list(layers), axis, float(target)
        self.positions = [float(p) for p in positions]
        self.c_out = [float(layer.weight.shape[0]) for layer in self.layers]
        self.c_in = [float(layer.weight.shape[1]) for layer in self.layers]
        self.kernel = [float(math.prod(layer.weight.shape[2:])) for layer in self.layers]
        self.total = sum(self._flops(i, self.c_in[i], self.c_out[i]) for i in range(len(self.layers)))
        k = self.target_keep
        self.target = sum(self._flops(i, round(self.c_in[i] * k), round(self.c_out[i] * k))
                          for i in range(len(self.layers))) / self.total
        self.target_realised = self.target

    def _flops(self, i: int, c_in, c_out):
        return self.positions[i] * c_out * (2.0 * self.kernel[i] * c_in + 1.0)

    def _in_out(self, keeps: list) -> list[tuple]:
        last = len(keeps) - 1
        if self.axis == "input":
            return [(keeps[i], keeps[i + 1] if i < last else 1.0) for i in range(len(keeps))]
        return [(keeps[i - 1] if i > 0 else 1.0, keeps[i]) for i in range(len(keeps))]

    def _fraction(self, keeps: list):
        flops = [self._flops(i, self.c_in[i] * kin, self.c_out[i] * kout)
                 for i, (kin, kout) in enumerate(self._in_out(keeps))]
        return sum(flops) / self.total

    def current(self) -> torch.Tensor:
        out = self._fraction([layer.keep_fraction() for layer in self.layers])
        return out if isinstance(out, torch.Tensor) else torch.tensor(float(out))

    def realised(self) -> float:
        """FLOPs of the counts the masks keep now (each layer's kept fraction of its channels)."""
        return float(self._fraction([layer.kept_target() / layer.scores.numel() for layer in self.layers]))

    def kept(self) -> int:
        return sum(layer.kept_target() for layer in self.layers)


# ---------------------------------------------------------------- the hinge
class RateHinge(TrainHook):
    """gamma_t * max(current / target - 1, 0); gamma_t grows per epoch until the target is met.

    ``budget`` says what current and target count (``ParamBudget`` by default, ``FlopsBudget``),
    differentiable in the rate logits. gamma_t = (epoch + 1) * gamma while not frozen; at an epoch
    end where the hinge is (to 4 decimals) 0, gamma_t freezes at its current value for the rest of
    the search.
    """

    def __init__(self, layers: list[masking.MaskedMixin], target: float, gamma: float,
                 budget: ParamBudget | FlopsBudget | None = None):
        self.budget = budget if budget is not None else ParamBudget(layers, target)
        self.layers = self.budget.layers
        self.target = self.budget.target
        self.gamma = float(gamma)
        self.frozen_gamma: float | None = None
        self.gamma_t = self.gamma

    def current_rate(self) -> torch.Tensor:
        return self.budget.current()

    def hinge(self) -> torch.Tensor:
        return torch.clamp(self.current_rate() / self.target - 1.0, min=0.0)

    def gamma_for_epoch(self, epoch: int) -> float:
        return self.frozen_gamma if self.frozen_gamma is not None else (epoch + 1) * self.gamma

    # -- hooks ---------------------------------------------------------------------------------
    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.gamma_t = self.gamma_for_epoch(epoch)

    def extra_loss(self, trainer) -> torch.Tensor | None:
        if self.gamma_t == 0.0:
            return None
        return self.gamma_t * self.hinge()

    def on_epoch_end(self, trainer, epoch: int, record: dict) -> None:
        with torch.no_grad():
            rate = float(self.current_rate())
            hinge = float(self.hinge())
        if self.frozen_gamma is None and hinge < FREEZE_BELOW:
            self.frozen_gamma = self.gamma_t
        record.update({"harp_rate": rate, "harp_hinge": hinge, "harp_gamma": self.gamma_t,
                       "harp_frozen": self.frozen_gamma is not None})

    def selection_allowed(self, trainer) -> bool:
        # keep: best_val counts an epoch only once the budget was met (public train.py: reach_hw)
        return self.frozen_gamma is not None

    def summary(self, history: list[dict]) -> dict:
        last = history[-1] if history else {}
        return {k: last[k] for k in ("harp_rate", "harp_hinge", "harp_gamma", "harp_frozen") if k in last}

    def state_dict(self) -> dict:
        return {"frozen_gamma": self.frozen_gamma, "gamma_t": self.gamma_t}

    def load_state_dict(self, state: dict) -> None:
        frozen = state.get("frozen_gamma")
        self.frozen_gamma = None if frozen is None else float(frozen)
        self.gamma_t = float(state.get("gamma_t", self.gamma))


class ZeroPrunedChannels(TrainHook):
    """Structured finetune: pruned channels' biases and BN affine stay exactly zero."""

    def on_fit_start(self, trainer) -> None:
        structured.zero_pruned_channel_params(trainer.model)

    def after_step(self, trainer) -> None:
        structured.zero_pruned_channel_params(trainer.model)


# ---------------------------------------------------------------- the method
@register_method("harp", learns_scores=True, needs_pretrain=True, needs_finetune=True,
                 paper={"key": "Zhao2023Holistic",
                        "name": "Holistic Adversarially Robust Pruning",
                        "authors": "Qi Zhao, Christian Wressnegger",
                        "venue": "ICLR 2023",
                        "link": "https://openreview.net/forum?id=sAJDi9lD06L"})
class Harp(PruningMethod):
    default_options: dict[str, Any] = {
        "gamma": 0.01,
        "alpha": 0.1,
        "init": "uniform",
        "init_keep": None,
        "on_over_budget": "project",
        "budget_tolerance": 0.01,
        "rate_weight_decay": 5e-4,
        "class_floor": True,
        "structured": False,
        "channel_axis": "input",
        "hinge": None,
        "share_shortcut_rate": True,
        "keep_classifier": True,
    }

    def __init__(self, sparsity: float, options: dict | None = None):
        super().__init__(sparsity, options)
        o = self.options
        if o["init"] not in INITS:
            raise ValueError(f"harp: init must be one of {INITS}, got {o['init']!r}")
        if o["on_over_budget"] not in OVER_BUDGET:
            raise ValueError(f"harp: on_over_budget must be one of {OVER_BUDGET}, got {o['on_over_budget']!r}")
        if o["channel_axis"] not in CHANNEL_AXES:
            raise ValueError(f"harp: channel_axis must be one of {CHANNEL_AXES}, got {o['channel_axis']!r}")
        if o["hinge"] is not None and o["hinge"] not in HINGES:
            raise ValueError(f"harp: hinge must be one of {HINGES} or null, got {o['hinge']!r}")
        if not 0.0 <= float(o["alpha"]) < 1.0:
            raise ValueError(f"harp: alpha must be in [0, 1), got {o['alpha']}")
        if float(o["gamma"]) < 0:
            raise ValueError(f"harp: gamma must be non-negative, got {o['gamma']}")
        if o["init_keep"] is not None and not 0.0 < float(o["init_keep"]) <= 1.0:
            raise ValueError(f"harp: init_keep must be in (0, 1], got {o['init_keep']}")
        if float(o["budget_tolerance"]) < 0:
            raise ValueError(f"harp: budget_tolerance must be non-negative, got {o['budget_tolerance']}")
        if float(o["rate_weight_decay"]) < 0:
            raise ValueError(f"harp: rate_weight_decay must be non-negative, got {o['rate_weight_decay']}")
        self.structured = bool(o["structured"])
        if self.structured and o["init"] != "uniform":
            raise ValueError("harp: structured pruning starts from init 'uniform' (set init_keep; "
                             "1.0, the default, is the public code's 'original' channel strategy)")
        self.axis = o["channel_axis"] if self.structured else None
        self.hinge_kind = o["hinge"] or ("flops" if self.structured else "params")
        if self.hinge_kind == "flops" and not self.structured:
            raise ValueError("harp: the flops hinge counts channels; set structured: true (or hinge: params)")
        # read by the stages before set-up, so an instance attribute set from the options
        self.granularity = {None: "weight", "output": "channel", "input": "in_channel"}[self.axis]
        self.rate_floor = float(o["alpha"]) * self.keep
        self.positions: dict[str, int] | None = None
        self._budget: ParamBudget | FlopsBudget | None = None
        self.last_report: dict = {}

    # -- set-up ------------------------------------------------------------------------------
    def setup_layers(self, model: nn.Module) -> None:
        layers = list(masking.masked_layers(model))
        if not layers:
            raise ValueError("harp: the model has no masked layers; call masking.to_masked first")
        for name, layer in layers:
            if layer.granularity != self.granularity:
                raise ValueError(f"harp: layer {name} has granularity {layer.granularity!r}, "
                                 f"the method expects {self.granularity!r}")
        fixed = {layers[-1][0]} if self.axis == "output" and self.options["keep_classifier"] else set()
        for name, layer in layers:
            if name in fixed:
                layer.rate_logit = None
                layer.keep = 1.0
                continue
            layer.rate_logit = nn.Parameter(torch.zeros((), dtype=torch.float32, device=layer.weight.device))
            layer.rate_floor = self.rate_floor
        classifier = layers[-1][1]
        if self.options["class_floor"] and not self.structured and classifier.weight.dim() == 2:
            # one weight per class at least: the floor of its rate and its mask both see to it
            rows, n = classifier.weight.shape[0], classifier.weight.numel()
            classifier.one_per_row = True
            if classifier.rate_logit is not None:
                classifier.rate_floor = max(self.rate_floor, min(1.0, rows / n))
        if self.structured and self.options["share_shortcut_rate"]:
            by_name = dict(layers)
            for shortcut, owner in _shortcut_owner([n for n, _ in layers]).items():
                if by_name[owner].rate_logit is not None and by_name[shortcut].rate_logit is not None:
                    by_name[shortcut].rate_logit = by_name[owner].rate_logit
                    by_name[shortcut].rate_floor = by_name[owner].rate_floor
        if self.axis == "output":
            structured.attach_channel_output_masks(model)

    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        super().init_scores(model, ctx)
        if self.hinge_kind == "flops":
            x, _ = ctx.first_batch()
            self.positions = probe_positions(model, x[:1])

    def rate_params(self, model: nn.Module) -> list[tuple[masking.MaskedMixin, nn.Parameter]]:
        """(first layer holding it, parameter) for every distinct rate parameter."""
        seen, out = set(), []
        for _, layer in masking.masked_layers(model):
            p = layer.rate_logit
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                out.append((layer, p))
        return out

    def initial_keeps(self, model: nn.Module) -> dict[str, float]:
        layers = list(masking.masked_layers(model))
        strategy = self.options["init"]
        if strategy == "uniform":
            k0 = self.options["init_keep"]
            if k0 is None:
                k0 = DEFAULT_INIT_KEEP["channel" if self.structured else "weight"]
            return {name: max(float(k0), self.keep) for name, _ in layers}
        if strategy == "lamp":
            counts = lamp_allocation(model, self.keep)
            return {name: counts[name] / layer.weight.numel() for name, layer in layers}
        keeps = erk_keep([tuple(layer.weight.shape) for _, layer in layers], self.keep)
        return {name: k for (name, _), k in zip(layers, keeps)}

    @torch.no_grad()
    def init_rates(self, model: nn.Module) -> None:
        keeps = self.initial_keeps(model)
        names = {id(layer): name for name, layer in masking.masked_layers(model)}
        for layer, p in self.rate_params(model):
            k0 = keeps[names[id(layer)]]
            floor = layer.rate_floor
            u = min(max((k0 - floor) / (1.0 - floor), INIT_CLIP[0]), INIT_CLIP[1])
            p.fill_(math.log(u / (1.0 - u)))
            # float32 sigmoid can put the count one off HYDRA's at the same k; nudge the logit so
            # that a uniform start at the target gives exactly HYDRA's first mask
            want = masking.kept_count(layer.scores.numel(), floor + u * (1.0 - floor))
            _fit_logit(layer, p, want)
            layer.keep = float(layer.keep_fraction().detach())

    # -- mask search -------------------------------------------------------------------------
    def search_params(self, model: nn.Module, cfg: TrainConfig) -> list:
        rates = [p for _, p in self.rate_params(model) if p.requires_grad]
        rate_ids = {id(p) for p in rates}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in rate_ids]
        groups = [{"params": others}] if others else []
        if rates:
            groups.append({"params": rates, "weight_decay": float(self.options["rate_weight_decay"])})
        return groups

    def budget_of(self, model: nn.Module) -> ParamBudget | FlopsBudget:
        """The budget the hinge and the end of the search count (built once per model)."""
        layers = list(masking.masked_layers(model))
        if self._budget is not None and [id(b) for b in self._budget.layers] == [id(l) for _, l in layers]:
            return self._budget
        if self.hinge_kind == "params":
            self._budget = ParamBudget([l for _, l in layers], self.keep)
        else:
            if self.positions is None:
                raise ValueError("harp: the flops hinge needs the layers' output positions, measured "
                                 "in init_scores from one training image; call prepare_search_model "
                                 "(or init_scores with a ScoreInitContext that has batches) first")
            self._budget = FlopsBudget([l for _, l in layers], [self.positions[n] for n, _ in layers],
                                       self.keep, self.axis)
        return self._budget

    def search_hooks(self, model: nn.Module, cfg: TrainConfig) -> list[TrainHook]:
        budget = self.budget_of(model)
        return [RefreshMasks(), RateHinge(budget.layers, self.keep, float(self.options["gamma"]), budget)]

    def finetune_hooks(self, model: nn.Module, cfg: TrainConfig) -> list[TrainHook]:
        hooks = super().finetune_hooks(model, cfg)
        if self.axis == "output":
            hooks.append(ZeroPrunedChannels())
        return hooks

    # -- the end of the search ---------------------------------------------------------------
    def budget(self, model: nn.Module) -> tuple[int, int, int]:
        """(total units, target count, largest allowed count) over all masked layers (the params
        budget; the tolerance is relative to the target)."""
        total = sum(layer.scores.numel() for _, layer in masking.masked_layers(model))
        target = masking.kept_count(total, self.keep)
        allowed = max(target, math.floor(target * (1.0 + float(self.options["budget_tolerance"])) + 1e-9))
        return total, target, allowed

    @staticmethod
    def kept_total(model: nn.Module) -> int:
        return sum(layer.kept_target() for _, layer in masking.masked_layers(model))

    def _over(self, budget, value: float) -> bool:
        return value > budget.target_realised * (1.0 + float(self.options["budget_tolerance"])) + 1e-12

    @torch.no_grad()
    def project_rates(self, model: nn.Module, target: float | None = None) -> float:
        """Shifts every rate logit by one common s, the largest with a realised budget at most the
        target (``target``: a kept count for the params budget; default the budget's own target).

        The realised budget is a non-decreasing step function of s, evaluated on the very float32
        logits that ``kept_target`` reads, so the final counts are consistent with the final rates.
        No layer goes below its rate floor (the parametrisation bounds every k_l by it). Returns s.
        """
        budget = self.budget_of(model)
        params = [p for _, p in self.rate_params(model)]
        base = [p.detach().clone() for p in params]
        if target is None:
            limit = budget.target_realised
            value = budget.realised
        else:  # a kept count (the params budget)
            limit = float(target)
            value = budget.kept

        def at(s: float) -> float:
            for p, b in zip(params, base):
                p.copy_(b + s)
            return value()

        lo, hi = -80.0, 0.0  # at -80 every rate sits at its floor (sigmoid underflows to 0)
        if at(lo) > limit + 1e-12:
            at(0.0)
            raise RuntimeError(
                f"harp: the budget ({budget.kind}) is unreachable even with every rate at its floor "
                f"(alpha * target = {self.rate_floor:.3g}; the classifier keeps one weight per class); "
                f"lower alpha, or set class_floor: false")
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if at(mid) <= limit + 1e-12:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-7:
                break
        at(lo)
        return lo

    def finalize_search(self, model: nn.Module) -> None:
        budget = self.budget_of(model)
        total, target, allowed = self.budget(model)
        before, realised_before = self.kept_total(model), budget.realised()
        with torch.no_grad():
            hinge_before = float(torch.clamp(budget.current() / budget.target - 1.0, min=0.0))
        over = self._over(budget, realised_before)
        shift = 0.0
        what = "FLOPs" if budget.kind == "flops" else "kept weights" if not self.structured else "kept channels"
        if over:
            if self.options["on_over_budget"] == "fail":
                raise RuntimeError(
                    f"harp: the mask search ended above its budget: the learned rates keep "
                    f"{realised_before:.4%} ({what}), the target is {budget.target_realised:.4%} plus a "
                    f"relative tolerance of {float(self.options['budget_tolerance']):.2%}. Run more "
                    f"search epochs or raise gamma, or set methods.harp.options.on_over_budget: "
                    f"project to rescale the learned rates onto the budget (the result is then "
                    f"flagged as projected).")
            shift = self.project_rates(model)
        masking.refresh_masks(model)
        if self.axis == "output":
            structured.zero_pruned_channel_params(model)
        after = self.kept_total(model)
        self.last_report = {
            "budget": budget.kind, "target": budget.target_realised, "realised_before": realised_before,
            "realised": budget.realised(), "hinge_before": hinge_before,
            "total": total, "target_count": target, "kept_before": before, "kept": after,
            "projected": over, "logit_shift": shift,
            "layer_keep": {n: float(torch.as_tensor(l.keep_fraction()).detach())
                           for n, l in masking.masked_layers(model)}}
        if over:
            logger.warning("harp: search ended above budget (%s %.4g against a target of %.4g): rates "
                           "projected by a logit shift of %.4g to %.4g", what, realised_before,
                           budget.target_realised, shift, budget.realised())

    def search_report(self) -> dict[str, Any]:
        return dict(self.last_report)


@torch.no_grad()
def _fit_logit(layer: masking.MaskedMixin, p: nn.Parameter, want: int) -> None:
    """Moves p to the nearest logit at which layer.kept_target() == want (when float32 allows).

    Bisection towards the edge of the count's plateau that is closest to the current logit, so
    the rate changes by the least amount that fixes the count.
    """
    start = float(p.detach())
    got = layer.kept_target()
    if got == want:
        return
    # too many kept: the largest logit below start with count <= want; too few: the smallest above
    lo, hi = (start - 0.05, start) if got > want else (start, start + 0.05)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        p.fill_(mid)
        if (layer.kept_target() <= want) if got > want else (layer.kept_target() < want):
            lo = mid
        else:
            hi = mid
    p.fill_(lo if got > want else hi)
    if layer.kept_target() != want:
        p.fill_(start)
