"""Every registered method (built in, plus the "Add your method" example plugin) meets the contract.

The pipeline below is the prune stage's order (benchmark/stages.py): prepare_weights on the plain
model when the method needs no dense model, to_masked at the method's granularity, setup_layers,
init_scores, init_rates, refresh, search mode, a short Trainer run when the method learns scores,
finalize_search; then the export and a search.pt round trip.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from benchmark import masking
from benchmark.attacks import AttackConfig
from benchmark.config import method_traits
from benchmark.registry import method_registry, read_method_file
from benchmark.training import Trainer, TrainConfig

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_method.py"
REGISTRY = method_registry([EXAMPLE])
NAMES = REGISTRY.names()
TRAITS = ("learns_scores", "needs_pretrain", "needs_finetune")
SPARSITY = 0.9
# variants whose options change the granularity or the set-up path
VARIANTS = [(name, None, SPARSITY) for name in NAMES] + [("harp", {"structured": True}, 0.5),
                                                         ("harp", {"init": "erk"}, SPARSITY)]


def toy_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def tiny_search_config() -> TrainConfig:
    return TrainConfig(epochs=1, lr=0.1, batch_size=8, loss="pgd_at", val_attack_steps=0,
                       attack=AttackConfig(8 / 255, 1, 2 / 255))


def tiny_data(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def build(name: str, options=None, sparsity=SPARSITY, seed=0):
    """The prune stage's set-up; returns (method, masked model)."""
    method = REGISTRY.get(name)(sparsity, options)
    model = toy_net()
    method.prepare_search_model(model, torch.Generator().manual_seed(seed))
    masking.set_mode(model, "search", train_bn=True)
    return method, model


def search(method, model) -> None:
    cfg = tiny_search_config()
    trainer = Trainer(model, method.search_params(model, cfg), cfg, train_set=tiny_data(), val_set=None,
                      device=torch.device("cpu"), seed=0, plugins=method.search_plugins(model, cfg),
                      log=lambda msg: None)
    trainer.fit()


def test_the_example_plugin_and_the_built_in_methods_are_registered():
    assert "hydra_global" in NAMES
    assert {"hydra", "harp", "lwm", "lamp", "random", "rst"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_traits_are_bool_literals_of_the_decorator(name):
    cls = REGISTRY.get(name)
    decls = [d for d in read_method_file(inspect.getsourcefile(cls)) if d.class_name == cls.__name__]
    assert len(decls) == 1 and decls[0].name == name
    for trait in TRAITS:
        assert isinstance(decls[0].traits[trait], bool), (name, trait)
    # what the workflow reads without importing torch agrees with the class
    assert method_traits(name, REGISTRY) == {t: getattr(cls, t) for t in TRAITS} == decls[0].traits


@pytest.mark.parametrize("name", NAMES)
def test_construction_validates_sparsity_and_options(name):
    cls = REGISTRY.get(name)
    method = cls(SPARSITY)
    assert method.keep == pytest.approx(1 - SPARSITY)
    assert method.granularity in ("weight", "channel")
    with pytest.raises(ValueError):
        cls(1.5)
    with pytest.raises(ValueError, match="unknown options"):
        cls(SPARSITY, {"no_such_option_anywhere": 1})


@pytest.mark.parametrize("name,options,sparsity", VARIANTS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in (o or {}).items()) or 'default'}"
                              for n, o, _ in VARIANTS])
def test_pipeline_search_finalize_export_and_reload(name, options, sparsity, tmp_path):
    method, model = build(name, options, sparsity)
    units = {n: layer.scores.numel() for n, layer in masking.masked_layers(model)}
    if method.learns_scores:
        before = {n: layer.scores.detach().clone() for n, layer in masking.masked_layers(model)}
        search(method, model)
        assert any(not torch.equal(before[n], layer.scores) for n, layer in masking.masked_layers(model)), \
            f"{name}: the search did not move any score"
    method.finalize_search(model)

    # the masks it leaves are the ones the shared top-k gives from its scores and rates
    final = {n: layer.mask.clone() for n, layer in masking.masked_layers(model)}
    masking.refresh_masks(model)
    for n, layer in masking.masked_layers(model):
        assert torch.equal(layer.mask, final[n]), f"{name}: mask of {n} is not reproducible"
        assert int(layer.mask.sum()) == layer.kept_target()

    # measured sparsity meets the target within 0.1 % of the units (weights, or channels)
    total = sum(units.values())
    kept = sum(int(layer.mask.sum()) for _, layer in masking.masked_layers(model))
    target = masking.kept_count(total, 1 - sparsity)
    if method.granularity == "weight":
        assert abs(kept - target) <= 0.001 * total, (name, kept, target)
        assert masking.sparsity_report(masking.get_masks(model))["kept"] == kept
    else:  # channels: the budget is an upper bound (HARP meets it by construction)
        assert kept <= (1 - sparsity + 0.001) * total, (name, kept, target)

    # the exported state_dict loads strictly into the plain model and computes the same function
    masking.set_mode(model, "finetune")
    masking.apply_masks_to_weights(model)
    plain = toy_net()
    plain.load_state_dict(masking.export_state_dict(model), strict=True)
    model.eval(), plain.eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-6)

    # search.pt round trip: a fresh model set up by the method takes the saved state_dict
    masking.set_mode(model, "search")
    path = tmp_path / "search.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    state = torch.load(path, weights_only=True)["state_dict"]
    method2 = REGISTRY.get(name)(sparsity, options)
    model2 = toy_net()
    masking.to_masked(model2, method2.granularity)
    method2.setup_layers(model2)
    model2.load_state_dict(state, strict=True)
    for (n, a), (_, b) in zip(masking.masked_layers(model), masking.masked_layers(model2)):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.scores, b.scores), n
        assert (a.rate_logit is None) == (b.rate_logit is None), n
        if a.rate_logit is not None:
            assert torch.equal(a.rate_logit, b.rate_logit) and a.kept_target() == b.kept_target(), n


@pytest.mark.parametrize("name", NAMES)
def test_score_learning_methods_train_scores_and_others_need_no_search(name):
    method, model = build(name)
    params = method.search_params(model, tiny_search_config())
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    score_ids = {id(layer.scores) for _, layer in masking.masked_layers(model)}
    weight_ids = {id(layer.weight) for _, layer in masking.masked_layers(model)}
    assert not weight_ids & {id(p) for p in flat}, f"{name}: the search must not train the weights"
    if method.learns_scores:
        assert score_ids <= {id(p) for p in flat}
