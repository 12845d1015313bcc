"""The contract every pruning method meets.

A method is one class that subclasses ``PruningMethod``, decorated with its name and traits as
literals (the workflow reads them from the source, without importing torch or the file)::

  @register_method("name", learns_scores=True, needs_pretrain=True, needs_finetune=True)

  learns_scores    True when the mask search trains importance scores (S2AP then applies)
  needs_pretrain   False when the method prunes random weights (RST)
  needs_finetune   False when the searched mask is the final model (RST)
  paper            optional: {"key", "name", "authors", "venue", "link"} of the paper it implements
                   (the site's ranked board, the RobustBench export)

Each keyword defaults to True (``benchmark.core.registry.TRAIT_DEFAULTS``); the decorator sets the class
attributes, so a class body never writes them. The class overrides what differs from HYDRA's
defaults: how scores and layer rates start (``init_scores(model, ctx)`` gets a
``ScoreInitContext``: the search's generator, the device, a batch source over the training split
and the robust loss; the weights to prune are already in place), which parameters the search
trains, what the search and the finetune add to the training loop (``search_hooks`` /
``finetune_hooks``, lists of ``TrainHook``), and how the search ends (``finalize_search``).

S2AP is a plug-in of every score-learning method: the stages append its hooks
(``s2ap_search_hook``, ``s2ap_finetune_hook``) after the method's own, so a method's hooks never
need to know whether S2AP is on.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from benchmark.core.masking import (
    apply_masks_to_weights,
    global_counts,
    keep_for_count,
    kept_count,
    masked_layers,
    refresh_masks,
    scaled_score_init,
    set_keep,
    to_masked,
)
from benchmark.core.registry import TRAIT_DEFAULTS
from benchmark.training.loop import TrainConfig, TrainHook
from benchmark.training.score_init import ScoreInitContext, TrainBatches

from .s2ap import AWP, ScoreSharpness

__all__ = ["KeepPrunedZero", "PruningMethod", "RefreshMasks", "ScoreInitContext", "TrainBatches",
           "TrainHook", "keep_global_counts"]


class RefreshMasks(TrainHook):
    """The mask changes only when the scores do: recompute it once per optimiser step."""

    def on_fit_start(self, trainer) -> None:
        refresh_masks(trainer.model)

    def after_step(self, trainer) -> None:
        refresh_masks(trainer.model)


class KeepPrunedZero(TrainHook):
    """Finetuning: pruned weights stay exactly zero (weight decay and momentum would move them)."""

    def on_fit_start(self, trainer) -> None:
        apply_masks_to_weights(trainer.model)

    def after_step(self, trainer) -> None:
        apply_masks_to_weights(trainer.model)


def apply_unit_floor(model: nn.Module) -> int:
    """Every masked layer keeps one weight per output unit at least (``COMMON_OPTIONS``); returns
    how many weights that adds to the layers' own counts."""
    added = 0
    for _, layer in masked_layers(model):
        before = layer.kept_target()
        layer.one_per_row = True
        layer.min_kept = int(layer.scores.shape[0])
        added += layer.kept_target() - before
    return added


def keep_global_counts(model: nn.Module, layer_values, keep: float) -> None:
    """Sets each layer's keep fraction so that it keeps exactly the count that ONE global top-k
    over ``layer_values`` (one tensor per masked layer, in order) gives it at ``keep``."""
    layers = [layer for _, layer in masked_layers(model)]
    total = sum(layer.scores.numel() for layer in layers)
    counts = global_counts(list(layer_values), kept_count(total, keep))
    for layer, count in zip(layers, counts):
        layer.keep = keep_for_count(layer.scores.numel(), count)


#: options every method accepts beside its own ``default_options`` (presets set them under
#: methods.<name>.options).
#:   unit_floor  False  every output unit (a conv filter, a linear row, a class of the classifier)
#:                      keeps at least one weight: the layer's count becomes max(kept_count, rows)
#:                      and its best-scored weight of each row is kept first. For fixed-rate
#:                      layer-wise methods only (HYDRA, random, layer-wise magnitude, RST). Not in
#:                      the papers: a small network at 99 % otherwise keeps 2 of its first conv's
#:                      144 weights and 7 of its classifier's 640 (5 classes of 10 reachable), so
#:                      every method is capped by construction (docs/decisions.md, "unit floor").
COMMON_OPTIONS: dict[str, Any] = {"unit_floor": False}


class PruningMethod:
    name = ""
    # set by @register_method on every method class; these are its defaults
    learns_scores: bool = TRAIT_DEFAULTS["learns_scores"]
    needs_pretrain: bool = TRAIT_DEFAULTS["needs_pretrain"]
    needs_finetune: bool = TRAIT_DEFAULTS["needs_finetune"]
    granularity = "weight"
    #: method-specific options and their defaults; presets set them under methods.<name>.options
    default_options: dict[str, Any] = {}
    #: the paper the class implements, as a literal dict {"key", "name", "authors", "venue", "link"}
    #: ("key" in RobustBench's style, e.g. "Sehwag2020Hydra"); read from source by benchmark.core.papers
    #: for the RobustBench export, from the registered class itself (a subclass states its own)
    paper: dict[str, str] | None = None

    def __init__(self, sparsity: float, options: dict[str, Any] | None = None):
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be a fraction in (0, 1), got {sparsity}")
        options = dict(options or {})
        problems = type(self).option_problems(options)
        if problems:
            raise ValueError(f"method {self.name!r}: " + "; ".join(problems))
        self.options = {**self.known_options(), **options}
        self.sparsity = sparsity
        self.keep = 1.0 - sparsity
        self.floor_added = 0

    @classmethod
    def known_options(cls) -> dict[str, Any]:
        """Every option the method accepts, with its default: the common ones, then its own."""
        return {**COMMON_OPTIONS, **cls.default_options}

    @classmethod
    def option_problems(cls, options: dict[str, Any]) -> list[str]:
        """Why ``options`` cannot configure this method (empty when they can): unknown names, or
        a unit floor on a method that sets its own layer rates (its budget logic would not see
        the floor's extra weights)."""
        known = cls.known_options()
        unknown = sorted(set(options) - set(known))
        if unknown:
            return [f"unknown options {unknown}; valid: {sorted(known)}"]
        if options.get("unit_floor") and (cls.init_rates is not PruningMethod.init_rates
                                          or cls.granularity != "weight"):
            return [f"unit_floor is for methods with one keep fraction in every layer and "
                    f"per-weight masks; {cls.name!r} sets its own layer rates or masks channels"]
        return []

    # -- set-up ------------------------------------------------------------------------------
    def prepare_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        """Weights to prune when the method needs no pretrained model (RST)."""

    def setup_layers(self, model: nn.Module) -> None:
        """Creates method-specific parameters on the masked layers (HARP's rates) before loading."""

    def init_scores(self, model: nn.Module, ctx: ScoreInitContext) -> None:
        """Writes every masked layer's ``scores`` (the model's state: ``benchmark.training.score_init``)."""
        scaled_score_init(model)

    def init_rates(self, model: nn.Module) -> None:
        set_keep(model, self.keep)

    def prepare_search_model(self, model: nn.Module, ctx: ScoreInitContext,
                             weights_generator: torch.Generator | None = None) -> nn.Module:
        """The mask search's starting point from a plain model (pretrained, or random when the
        method needs no pretraining): masked layers, method parameters, scores, rates, masks.

        ``weights_generator`` draws the random weights of a method without pretraining; it is
        separate from the search's generator (``ctx.generator``) so that two search seeds prune
        the SAME weights (seed stability measures the search, not a new draw of weights)."""
        if not self.needs_pretrain:
            self.prepare_weights(model, weights_generator or ctx.generator)
        to_masked(model, self.granularity)
        self.setup_layers(model)
        model.to(ctx.device)
        # the global RNG (a PGD start, say) is forked and seeded by the search seed: the start is a
        # function of that seed alone and leaves the search's random stream where it was
        cuda = list(range(torch.cuda.device_count())) if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(ctx.generator.initial_seed())
            self.init_scores(model, ctx)
        self.init_rates(model)
        if self.options["unit_floor"]:
            self.floor_added = apply_unit_floor(model)
        refresh_masks(model)
        return model

    # -- mask search -------------------------------------------------------------------------
    def search_params(self, model: nn.Module, cfg: TrainConfig) -> list:
        return [p for p in model.parameters() if p.requires_grad]

    def search_hooks(self, model: nn.Module, cfg: TrainConfig) -> list[TrainHook]:
        """The method's own hooks of the mask search (S2AP's are added by the stage)."""
        return [RefreshMasks()]

    def finalize_search(self, model: nn.Module) -> None:
        refresh_masks(model)

    def search_report(self) -> dict[str, Any]:
        """What ``finalize_search`` did, recorded with the result (JSON values). A method that can
        end its search off its budget reports ``projected``: True when the mask was moved onto
        the budget after the search (the leaderboard flags such results). With the unit floor
        on, ``unit_floor_added``: the weights the floor kept beyond the layers' counts."""
        return {"unit_floor_added": self.floor_added} if self.options["unit_floor"] else {}

    # -- finetune ----------------------------------------------------------------------------
    def finetune_hooks(self, model: nn.Module, cfg: TrainConfig) -> list[TrainHook]:
        """The method's own hooks of the finetune (AWP is added by the stage)."""
        return [KeepPrunedZero()]

    def layer_keep(self, model: nn.Module) -> dict[str, float]:
        return {name: float(layer.mask.mean()) for name, layer in masked_layers(model)}

    # -- the S2AP plug-in --------------------------------------------------------------------
    def s2ap_search_hook(self, options: dict[str, Any] | None, total_epochs: int) -> TrainHook:
        """S2AP's score step for grid values on/score (``options``: the preset's ``s2ap`` block)."""
        return ScoreSharpness(options, total_epochs=total_epochs)

    def s2ap_finetune_hook(self, options: dict[str, Any] | None) -> TrainHook:
        """AWP on the kept weights for grid values on/awp (``options``: the preset's ``awp`` block)."""
        return AWP(options)
