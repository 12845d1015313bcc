"""Every registered method meets the contract: the built-in ones, both examples (examples/), and
the method files a user names:

    APBENCH_METHOD_FILES=a.py:b.py python -m pytest tests/test_methods_contract.py
    python -m pytest tests/test_methods_contract.py --method-file a.py --method-file b.py
    python -m pytest tests/test_methods_contract.py --method-preset presets/mine.yaml   (its method_files)

The pipeline below is the prune stage's order (benchmark/training/stages.py): prepare_weights on the plain
model when the method needs no dense model, to_masked at the method's granularity, setup_layers,
init_scores (with training batches and the robust loss, as the stage gives them), init_rates,
refresh, search mode, a short Trainer run when the method learns scores, finalize_search; then the
export and a search.pt round trip.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from torch.utils.data import TensorDataset

from benchmark.core import masking
from benchmark.core.config import method_traits
from benchmark.core.registry import Registry, method_registry, read_method_file
from benchmark.evaluation.attacks import AttackConfig
from benchmark.training.loop import TrainConfig, Trainer
from benchmark.training.losses import RobustLoss
from benchmark.training.score_init import ScoreInitContext, TrainBatches

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [ROOT / "examples" / "my_method.py", ROOT / "examples" / "snip_method.py"]
METHOD_FILES_ENV = "APBENCH_METHOD_FILES"
TRAITS = ("learns_scores", "needs_pretrain", "needs_finetune")
SPARSITY = 0.9
# variants whose options change the granularity or the set-up path
EXTRA_VARIANTS = [("harp", {"structured": True}, 0.5), ("harp", {"init": "erk"}, SPARSITY)]
_REGISTRIES: dict[tuple[str, ...], Registry] = {}


def _resolve(entry: str, where: str, dirs: list[Path]) -> str:
    path = Path(entry)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, *(d / path for d in dirs)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise pytest.UsageError(f"method file {entry!r} ({where}) not found; looked at "
                                + ", ".join(str(c) for c in candidates))
    return str(found.resolve())


def user_method_files(config: pytest.Config) -> list[str]:
    """Method files named by the environment variable, --method-file and --method-preset."""
    files = [_resolve(e, METHOD_FILES_ENV, [ROOT])
             for e in os.environ.get(METHOD_FILES_ENV, "").split(os.pathsep) if e.strip()]
    files += [_resolve(e, "--method-file", [ROOT]) for e in config.getoption("method_file") or []]
    preset = config.getoption("method_preset")
    if preset:
        raw = yaml.safe_load(Path(preset).read_text()) or {}
        entries = raw.get("method_files") or []
        if not entries:
            raise pytest.UsageError(f"--method-preset {preset}: the preset names no method_files")
        # as the workflow looks them up: the working directory, then the repository
        files += [_resolve(e, f"method_files of {preset}", [ROOT]) for e in entries]
    return files


def registry_for(config: pytest.Config) -> Registry:
    files = tuple(dict.fromkeys([*map(str, EXAMPLES), *user_method_files(config)]))
    if files not in _REGISTRIES:
        _REGISTRIES[files] = method_registry(files)
    return _REGISTRIES[files]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = registry_for(metafunc.config).names()
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", names)
    if "variant" in metafunc.fixturenames:
        variants = [(n, None, SPARSITY) for n in names] + EXTRA_VARIANTS
        metafunc.parametrize("variant", variants, ids=[
            f"{n}-{'-'.join(f'{k}={v}' for k, v in (o or {}).items()) or 'default'}" for n, o, _ in variants])


@pytest.fixture
def registry(request) -> Registry:
    return registry_for(request.config)


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


def init_context(seed: int = 0) -> ScoreInitContext:
    """What the prune stage passes to init_scores (StageTraining.score_init_context), on toy data."""
    cfg = tiny_search_config()
    return ScoreInitContext(generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
                            batches=TrainBatches(tiny_data(), cfg.batch_size, seed),
                            robust_loss=RobustLoss(cfg.loss, cfg.attack))


def build(registry: Registry, name: str, options=None, sparsity=SPARSITY, seed=0):
    """The prune stage's set-up; returns (method, masked model)."""
    method = registry.get(name)(sparsity, options)
    model = toy_net()
    method.prepare_search_model(model, init_context(seed))
    masking.set_mode(model, "search", train_bn=True)
    return method, model


def search(method, model) -> None:
    cfg = tiny_search_config()
    trainer = Trainer(model, method.search_params(model, cfg), cfg, train_set=tiny_data(), val_set=None,
                      device=torch.device("cpu"), seed=0, hooks=method.search_hooks(model, cfg),
                      log=lambda msg: None)
    trainer.fit()


def test_the_examples_the_user_files_and_the_built_in_methods_are_registered(registry, request):
    names = set(registry.names())
    assert {"hydra_global", "snip_adv"} <= names
    assert {"hydra", "harp", "lwm", "lamp", "random", "rst"} <= names
    for path in user_method_files(request.config):
        assert any(registry._targets[n].startswith(f"{path}:") for n in names), path


def test_user_method_files_come_from_the_environment_and_the_options(tmp_path, monkeypatch, pytestconfig):
    mine = tmp_path / "mine.py"
    mine.write_text("")
    monkeypatch.setenv(METHOD_FILES_ENV, os.pathsep.join([str(mine), "examples/my_method.py"]))
    assert user_method_files(pytestconfig)[:2] == [str(mine.resolve()), str(EXAMPLES[0])]
    monkeypatch.setenv(METHOD_FILES_ENV, str(tmp_path / "missing.py"))
    with pytest.raises(pytest.UsageError, match="missing.py"):
        user_method_files(pytestconfig)


def test_traits_are_bool_literals_of_the_decorator(registry, name):
    cls = registry.get(name)
    decls = [d for d in read_method_file(inspect.getsourcefile(cls)) if d.class_name == cls.__name__]
    assert len(decls) == 1 and decls[0].name == name
    for trait in TRAITS:
        assert isinstance(decls[0].traits[trait], bool), (name, trait)
    # what the workflow reads without importing torch agrees with the class
    assert method_traits(name, registry) == {t: getattr(cls, t) for t in TRAITS} == decls[0].traits


def test_construction_validates_sparsity_and_options(registry, name):
    cls = registry.get(name)
    method = cls(SPARSITY)
    assert method.keep == pytest.approx(1 - SPARSITY)
    assert method.granularity in ("weight", "channel")
    with pytest.raises(ValueError):
        cls(1.5)
    with pytest.raises(ValueError, match="unknown options"):
        cls(SPARSITY, {"no_such_option_anywhere": 1})


def test_init_scores_writes_the_scores_and_nothing_else(registry, name):
    """The weights, buffers, gradients, train/eval and requires_grad flags init_scores finds are
    what the search starts from."""
    method = registry.get(name)(SPARSITY)
    model = toy_net()
    if not method.needs_pretrain:
        method.prepare_weights(model, torch.Generator().manual_seed(7))
    masking.to_masked(model, method.granularity)
    method.setup_layers(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m.training, [p.requires_grad for p in m.parameters(recurse=False)]) for m in model.modules()]
    method.init_scores(model, init_context())
    for key, value in model.state_dict().items():
        if not key.endswith("scores"):
            assert torch.equal(value, state[key]), f"{name}: init_scores changed {key}"
    assert flags == [(m.training, [p.requires_grad for p in m.parameters(recurse=False)])
                     for m in model.modules()], f"{name}: init_scores changed a mode or requires_grad"
    assert all(p.grad is None for p in model.parameters()), f"{name}: init_scores left gradients"
    assert any(bool(layer.scores.any()) for _, layer in masking.masked_layers(model)), \
        f"{name}: init_scores wrote no score"


def test_the_search_start_is_a_function_of_the_search_seed(registry, name):
    """Whatever the global RNG holds before, one search seed gives one set of scores and masks, and
    what init_scores draws from the global RNG does not shift the search's random stream."""
    starts, after = [], []
    for global_seed in (1, 2):
        model = toy_net()
        torch.manual_seed(global_seed)
        registry.get(name)(SPARSITY).prepare_search_model(
            model, init_context(seed=0), weights_generator=torch.Generator().manual_seed(7))
        starts.append({n: (layer.scores.clone(), layer.mask.clone()) for n, layer in masking.masked_layers(model)})
    for n, (scores, mask) in starts[0].items():
        assert torch.equal(scores, starts[1][n][0]) and torch.equal(mask, starts[1][n][1]), (name, n)
    for method in (registry.get("hydra")(SPARSITY), registry.get(name)(SPARSITY)):
        model = toy_net()
        torch.manual_seed(3)
        method.prepare_search_model(model, init_context(), weights_generator=torch.Generator().manual_seed(7))
        after.append(torch.get_rng_state())
    if registry.get(name).needs_pretrain:  # RST's set-up differs from HYDRA's before init_scores
        assert torch.equal(after[0], after[1]), f"{name}: init_scores shifted the global RNG"


def test_pipeline_search_finalize_export_and_reload(registry, variant, tmp_path):
    name, options, sparsity = variant
    method, model = build(registry, name, options, sparsity)
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
    method2 = registry.get(name)(sparsity, options)
    model2 = toy_net()
    masking.to_masked(model2, method2.granularity)
    method2.setup_layers(model2)
    model2.load_state_dict(state, strict=True)
    for (n, a), (_, b) in zip(masking.masked_layers(model), masking.masked_layers(model2)):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.scores, b.scores), n
        assert (a.rate_logit is None) == (b.rate_logit is None), n
        if a.rate_logit is not None:
            assert torch.equal(a.rate_logit, b.rate_logit) and a.kept_target() == b.kept_target(), n


def test_score_learning_methods_train_scores_and_others_need_no_search(registry, name):
    method, model = build(registry, name)
    params = method.search_params(model, tiny_search_config())
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    score_ids = {id(layer.scores) for _, layer in masking.masked_layers(model)}
    weight_ids = {id(layer.weight) for _, layer in masking.masked_layers(model)}
    assert not weight_ids & {id(p) for p in flat}, f"{name}: the search must not train the weights"
    if method.learns_scores:
        assert score_ids <= {id(p) for p in flat}


def test_s2ap_hooks_come_from_the_method(registry, name):
    """The stages take S2AP's score step and AWP from the method object (benchmark/ never imports
    methods/), after the method's own hooks."""
    method, model = build(registry, name)
    cfg = tiny_search_config()
    search_hook = method.s2ap_search_hook({"gamma": 0.02, "warmup": 0.5}, total_epochs=4)
    finetune_hook = method.s2ap_finetune_hook({"gamma": 0.01})
    assert search_hook.overrides_backward and finetune_hook.overrides_backward
    assert search_hook.warmup_epochs == 2 and finetune_hook.gamma == 0.01
    own = method.search_hooks(model, cfg) + method.finetune_hooks(model, cfg)
    assert not any(h.overrides_backward for h in own), \
        f"{name}: a method's own hook that computes gradients would collide with S2AP's"
