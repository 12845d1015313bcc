"""The floors of every table: LAMP, random, and RST (scores on random frozen weights)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from benchmark.core import masking
from benchmark.core.config import method_traits
from benchmark.core.masking import global_counts
from benchmark.core.registry import method_registry
from benchmark.training import stages
from benchmark.training.score_init import ScoreInitContext
from methods.lamp import Lamp, lamp_scores
from methods.random_prune import RandomPrune
from methods.rst import RobustScratchTicket

torch.set_num_threads(2)


def toy_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def prepared(method, seed=0, model=None):
    model = model if model is not None else toy_net()
    return method.prepare_search_model(model, ScoreInitContext(torch.Generator().manual_seed(seed)))


# ---------------------------------------------------------------- LAMP
def test_lamp_score_formula_on_a_small_example():
    w = torch.tensor([1.0, -2.0, 2.0, 3.0])
    # squares 1, 4, 4, 9: the tied 4s both divide by 4 + 4 + 9
    torch.testing.assert_close(lamp_scores(w), torch.tensor([1 / 18, 4 / 17, 4 / 17, 1.0]))
    torch.testing.assert_close(lamp_scores(torch.tensor([0.0, 0.0, 2.0])), torch.tensor([0.0, 0.0, 1.0]))


def test_lamp_scores_match_the_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-4, 5, (6, 7), generator=g).float() * torch.rand(1, 7, generator=g)
    a = w.double().pow(2).flatten()
    brute = torch.stack([a[i] / a[a >= a[i]].sum() if a[i] > 0 else a.new_zeros(()) for i in range(len(a))])
    torch.testing.assert_close(lamp_scores(w).flatten().double(), brute, rtol=1e-6, atol=0)
    # within a layer the score is monotone in |w|: LAMP only decides how many a layer keeps
    order_w = torch.argsort(w.abs().flatten(), stable=True)
    assert torch.all(torch.diff(lamp_scores(w).flatten()[order_w]) >= 0)


def test_lamp_global_top_k_sets_each_layers_count():
    method = Lamp(0.9)
    model = prepared(method)
    layers = list(masking.masked_layers(model))
    total = sum(layer.weight.numel() for _, layer in layers)
    kept_total = masking.kept_count(total, 0.1)
    # independent reference: one stable descending sort of all layers' LAMP scores
    flat = torch.cat([lamp_scores(layer.weight).flatten() for _, layer in layers])
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.sort(flat, descending=True, stable=True).indices[:kept_total]] = True
    start = 0
    counts = []
    for name, layer in layers:
        n = layer.weight.numel()
        assert torch.equal(layer.mask.flatten().bool(), chosen[start:start + n]), name
        counts.append(int(layer.mask.sum()))
        start += n
    assert sum(counts) == kept_total
    assert len({round(c / layer.weight.numel(), 3) for c, (_, layer) in zip(counts, layers)}) == len(layers)
    # the keeps given to the layers reproduce the counts through the shared rounding
    for (_name, layer), c in zip(layers, counts):
        assert masking.kept_count(layer.weight.numel(), layer.keep) == c


def test_global_counts_break_ties_towards_the_earlier_layer():
    ones = [torch.ones(2, 2), torch.ones(3)]
    assert global_counts(ones, 5) == [4, 1]
    assert global_counts([torch.tensor([3.0, 1.0]), torch.tensor([2.0, 1.0])], 3) == [2, 1]
    assert global_counts(ones, 0) == [0, 0] and global_counts(ones, 7) == [4, 3]


@pytest.mark.parametrize("n", [1, 7, 144, 1000, 4608, 590_000])
def test_keep_for_count_reproduces_every_count(n):
    for c in sorted({0, 1, n // 3, n // 2, n - 1, n, 17 % (n + 1), (n * 9) // 10}):
        assert masking.kept_count(n, masking.keep_for_count(n, c)) == c


# ---------------------------------------------------------------- random
def test_random_pruning_is_layerwise_uniform_and_follows_the_generator():
    torch.manual_seed(123)
    a = prepared(RandomPrune(0.9), seed=4)
    torch.manual_seed(999)  # the global RNG plays no part
    b = prepared(RandomPrune(0.9), seed=4)
    c = prepared(RandomPrune(0.9), seed=5)
    for (name, la), (_, lb), (_, lc) in zip(masking.masked_layers(a), masking.masked_layers(b),
                                            masking.masked_layers(c)):
        assert int(la.mask.sum()) == masking.kept_count(la.weight.numel(), 0.1), name
        assert torch.equal(la.mask, lb.mask), name
        assert not torch.equal(la.mask, lc.mask), name
    # not the magnitude mask
    lwm = masking.to_masked(toy_net())
    masking.scaled_score_init(lwm)
    masking.set_keep(lwm, 0.1)
    masking.refresh_masks(lwm)
    assert not torch.equal(a[3].mask, lwm[3].mask)


# ---------------------------------------------------------------- RST
def test_rst_traits_say_no_dense_model_and_no_finetune():
    assert RobustScratchTicket.learns_scores is True
    assert RobustScratchTicket.needs_pretrain is False and RobustScratchTicket.needs_finetune is False
    assert method_traits("rst", method_registry()) == {
        "learns_scores": True, "needs_pretrain": False, "needs_finetune": False}


def test_rst_builds_its_random_weights_and_scores_from_the_generator():
    method = RobustScratchTicket(0.9)
    torch.manual_seed(1)
    a = prepared(method, seed=7)
    torch.manual_seed(2)
    b = prepared(method, seed=7)
    c = prepared(method, seed=8)
    for (name, la), (_, lb), (_, lc) in zip(masking.masked_layers(a), masking.masked_layers(b),
                                            masking.masked_layers(c)):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.scores, lb.scores), name
        assert not torch.equal(la.weight, lc.weight) and not torch.equal(la.scores, lc.scores), name
        fan = la.weight[0].numel()
        # signed constant: every weight is +-sqrt(2) / sqrt(fan_in), both signs present
        torch.testing.assert_close(la.weight.abs(), torch.full_like(la.weight, math.sqrt(2 / fan)))
        assert (la.weight > 0).any() and (la.weight < 0).any()
        assert la.bias is None or torch.count_nonzero(la.bias) == 0
        # Edge-Popup's kaiming_uniform(a=sqrt(5)) scores: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert float(la.scores.abs().max()) <= 1 / math.sqrt(fan)
        assert int(la.mask.sum()) == masking.kept_count(la.weight.numel(), 0.1)

    k = prepared(RobustScratchTicket(0.9, {"weight_init": "kaiming_normal"}), seed=7)
    w = k[3].weight
    assert w.detach().std().item() == pytest.approx(math.sqrt(2 / w[0].numel()), rel=0.15)
    with pytest.raises(ValueError, match="weight_init"):
        RobustScratchTicket(0.9, {"weight_init": "zeros"})


def test_rst_keeps_batchnorm_affine_at_identity():
    method = RobustScratchTicket(0.9)
    model = prepared(method)
    masking.set_mode(model, "search", train_bn=True)
    params = method.search_params(model, None)
    assert {id(p) for p in params} == {id(layer.scores) for _, layer in masking.masked_layers(model)}
    assert not model[1].weight.requires_grad


def test_rst_prune_stage_runs_without_a_dense_model(tmp_path, monkeypatch):
    """The prune and finetune stages with no --dense: random weights, a search, no finetune."""
    info = SimpleNamespace(name="toy", num_classes=10, in_channels=3, image_size=8,
                           eps=8 / 255, steps=1, step_size=2 / 255)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
    monkeypatch.setattr(stages, "dataset_info", lambda name: info)
    monkeypatch.setattr(stages, "load_splits", lambda *a, **k: (data, data, data))
    monkeypatch.setattr(stages, "build_plain_model", lambda arch, info, model_cfg: toy_net())
    train = {"epochs": 1, "lr": 0.1, "batch_size": 8, "loss": "pgd_at", "val_attack_steps": 1,
             "attack": {"eps": None, "steps": 1, "step_size": None}}
    cfg = {"data": {}, "model": {}, "train": train, "method": {"options": {}}, "s2ap": None,
           "runtime": {"device": "cpu"}}
    search = tmp_path / "search.pt"
    meta = stages.prune(cfg, dataset="toy", arch="toy", method="rst", s2ap="off", sparsity=90, seed=3,
                        dense=None, out=search)
    assert len(meta["history"]) == 1
    assert meta["sparsity_report"]["global"] == pytest.approx(0.9, abs=0.001)
    out = tmp_path / "model.pt"
    fmeta = stages.finetune({**cfg, "awp": None}, dataset="toy", arch="toy", method="rst", s2ap="off",
                            sparsity=90, seed=3, search=search, out=out)
    assert fmeta["history"] == []  # needs_finetune False: the searched mask is the model
    state = torch.load(out, weights_only=True)["state_dict"]
    first = state["0.weight"]
    nonzero = first[first != 0].abs()
    torch.testing.assert_close(nonzero, torch.full_like(nonzero, math.sqrt(2 / first[0].numel())))


def test_rst_second_search_seed_prunes_the_same_random_weights():
    # seed stability of RST compares two searches on ONE draw of weights
    a = RobustScratchTicket(0.9).prepare_search_model(toy_net(), ScoreInitContext(torch.Generator().manual_seed(0)),
                                                      weights_generator=torch.Generator().manual_seed(7))
    b = RobustScratchTicket(0.9).prepare_search_model(toy_net(), ScoreInitContext(torch.Generator().manual_seed(1000)),
                                                      weights_generator=torch.Generator().manual_seed(7))
    la, lb = dict(masking.masked_layers(a)), dict(masking.masked_layers(b))
    for name in la:
        assert torch.equal(la[name].weight, lb[name].weight), name
    assert any(not torch.equal(la[n].scores, lb[n].scores) for n in la)
