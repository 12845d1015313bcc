"""The unit floor (methods.<name>.options.unit_floor): no output unit of a fixed-rate layer-wise
mask is left without a weight, at the cost of a few weights beyond the layers' counts."""
from __future__ import annotations

import pytest
import torch

from benchmark.core import masking
from benchmark.core.datasets import get_info
from benchmark.core.models import build_model
from benchmark.training import diagnostics
from benchmark.training.score_init import ScoreInitContext
from methods.harp import Harp
from methods.hydra import Hydra
from methods.random_prune import RandomPrune

torch.set_num_threads(2)


def small_cnn():
    torch.manual_seed(0)
    return build_model("small_cnn", get_info("fashion-mnist"))


def prepared(method, seed=0):
    return method.prepare_search_model(small_cnn(), ScoreInitContext(torch.Generator().manual_seed(seed)))


def rows_without_weight(mask: torch.Tensor) -> int:
    return int((mask.flatten(1).sum(1) == 0).sum())


def test_without_the_floor_hydra_at_99_leaves_the_small_cnn_units_dead():
    """What the floor is for: HYDRA's count keeps 2 of the first conv's 144 weights and 7 of the
    classifier's 640, so most filters and some classes get nothing."""
    model = prepared(Hydra(0.99))
    layers = dict(masking.masked_layers(model))
    first, classifier = layers["net.features.0"], layers["net.classifier.3"]
    assert int(first.mask.sum()) == 2 and int(classifier.mask.sum()) == 7
    assert rows_without_weight(first.mask) >= 14 and rows_without_weight(classifier.mask) >= 3


@pytest.mark.parametrize("method_cls", [Hydra, RandomPrune])
def test_the_floor_keeps_one_weight_per_unit_and_adds_only_what_the_dead_units_need(method_cls):
    plain = prepared(method_cls(0.99))
    floored_method = method_cls(0.99, {"unit_floor": True})
    floored = prepared(floored_method)
    added = 0
    for (name, a), (_, b) in zip(masking.masked_layers(plain), masking.masked_layers(floored)):
        assert rows_without_weight(b.mask) == 0, name
        rows, kept = b.mask.shape[0], int(a.mask.sum())
        assert int(b.mask.sum()) == max(kept, rows), name
        added += int(b.mask.sum()) - kept
    # first conv 2 -> 16, classifier 7 -> 10; the others already keep more weights than rows
    assert added == 14 + 3
    assert floored_method.search_report() == {"unit_floor_added": 17}
    assert method_cls(0.99).search_report() == {}


def test_the_floor_is_exactly_top_k_where_top_k_already_reaches_every_unit():
    plain, floored = prepared(Hydra(0.5)), prepared(Hydra(0.5, {"unit_floor": True}))
    for (name, a), (_, b) in zip(masking.masked_layers(plain), masking.masked_layers(floored)):
        if rows_without_weight(a.mask) == 0:
            assert torch.equal(a.mask, b.mask), name


def test_the_floor_holds_through_a_score_update_and_in_the_flip_diagnostics():
    model = prepared(Hydra(0.99, {"unit_floor": True}))
    layers = [layer for _, layer in masking.masked_layers(model)]
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in layers:
            layer.scores.add_(torch.randn(layer.scores.shape, generator=gen))
    masking.refresh_masks(model)
    for layer in layers:
        assert rows_without_weight(layer.mask) == 0
    # the diagnostics' mask of s is the layer's own rule: identical to the refreshed mask, so a
    # zero perturbation flips nothing
    for layer, base in zip(layers, diagnostics._base_masks(layers)):
        assert torch.equal(base, layer.mask)
    zero = [torch.zeros_like(layer.scores) for layer in layers]
    assert diagnostics._flip_fraction(layers, diagnostics._base_masks(layers),
                                      diagnostics._perturbed_masks(layers, zero)) == 0.0


def test_the_floor_is_refused_where_the_method_sets_its_own_layer_rates():
    with pytest.raises(ValueError, match="unit_floor"):
        Harp(0.99, {"unit_floor": True})
    assert Harp.option_problems({"unit_floor": False}) == []
    with pytest.raises(ValueError, match="unknown option"):
        Hydra(0.99, {"unit_flor": True})


def test_kept_target_never_goes_below_the_layer_minimum_nor_above_its_size():
    layer = masking.to_masked(torch.nn.Sequential(torch.nn.Linear(4, 3)))[0]
    layer.keep = 0.01
    assert layer.kept_target() == 1
    layer.min_kept = 3
    assert layer.kept_target() == 3
    layer.min_kept = 100
    assert layer.kept_target() == 12
