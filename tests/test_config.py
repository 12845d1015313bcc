"""Presets: validation before any job, canonical sparsities, per-stage configs, recipe hashes,
and the paper presets against the published recipe (methods.md)."""
from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark import config as C
from benchmark.registry import ARCHITECTURES, DATASETS, method_registry

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture
def quick():
    return C.load_preset(PRESETS / "quick.yaml")


def _plugin(tmp_path: Path, name: str, cls: str, body: str, base: str = "PruningMethod",
            imports: str = "from methods.base import PruningMethod") -> Path:
    path = tmp_path / f"{name}_plugin.py"
    path.write_text(textwrap.dedent(f"""\
        {imports}
        from benchmark.registry import register_method


        @register_method("{name}")
        class {cls}({base}):
        """) + textwrap.indent(textwrap.dedent(body), "    ") + "\n")
    return path


# ------------------------------------------------------------------ bad configs fail with choices
@pytest.mark.parametrize("key,bad,registry", [
    ("methods", "not_a_method", None),
    ("archs", "resnet1000", ARCHITECTURES),
    ("datasets", "mnist-ish", DATASETS),
])
def test_unknown_name_lists_valid_choices(quick, key, bad, registry):
    cfg = copy.deepcopy(quick)
    cfg["grid"][key] = [cfg["grid"][key][0], bad]
    with pytest.raises(ValueError) as err:
        C.validate(cfg)
    msg = str(err.value)
    names = (registry or method_registry()).names()
    assert bad in msg and "valid choices" in msg
    assert names and all(n in msg for n in names), msg


def test_unknown_method_override_is_rejected(quick):
    cfg = copy.deepcopy(quick)
    cfg["methods"] = {"hydar": {"prune": {"epochs": 1}}}
    with pytest.raises(ValueError, match="hydar.*valid choices: .*hydra"):
        C.validate(cfg)


@pytest.mark.parametrize("bad", [0, 100, -5, 150, "0", "100.0", 0.0, "abc", True, float("nan")])
def test_sparsity_outside_open_interval_is_rejected(quick, bad):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["sparsities"] = [90, bad]
    with pytest.raises(ValueError, match="grid.sparsities"):
        C.validate(cfg)


def test_bad_s2ap_value_is_rejected(quick):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["s2ap"] = ["off", "yes"]
    with pytest.raises(ValueError, match="'yes'.*valid choices: off, on, score, awp"):
        C.validate(cfg)


def test_schema_catches_typos_and_types(quick):
    cfg = copy.deepcopy(quick)
    cfg["finetune"]["epoch"] = 3
    with pytest.raises(ValueError, match="epoch"):
        C.validate(cfg)
    cfg = copy.deepcopy(quick)
    cfg["pretrain"]["loss"] = "hinge"
    with pytest.raises(ValueError, match="pretrain.loss"):
        C.validate(cfg)


def test_schema_lists_registry_names(quick):
    schema = C.load_schema(method_registry())
    assert set(schema["$defs"]["method"]["enum"]) >= {"hydra", "lwm"}
    assert "fashion-mnist" in schema["$defs"]["dataset"]["enum"]
    assert "resnet18" in schema["$defs"]["arch"]["enum"]


def test_plugin_method_becomes_a_valid_choice(quick, tmp_path):
    plugin = _plugin(tmp_path, "myprune", "MyPrune", "learns_scores = True\n")
    cfg = copy.deepcopy(quick)
    cfg["grid"]["methods"] = ["hydra", "nope"]
    with pytest.raises(ValueError, match="myprune"):
        C.validate(cfg, [plugin])
    cfg["grid"]["methods"] = ["hydra", "myprune"]
    cfg["method_plugins"] = [str(plugin)]
    C.validate(cfg)


def test_imagenet_needs_a_root(quick):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["datasets"] = ["imagenet"]
    with pytest.raises(ValueError, match="imagenet_root"):
        C.validate(cfg)


def test_bad_preset_fails_the_dry_run_before_any_job(tmp_path):
    raw = yaml.safe_load((PRESETS / "quick.yaml").read_text())
    raw["grid"]["methods"] = ["hydra", "not_a_method"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        SNAKEMAKE + ["-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                     "--configfile", str(bad)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "not_a_method" in out and "valid choices" in out
    assert all(name in out for name in method_registry().names()), out
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("sparsity", [0, 100, 150])
def test_bad_sparsity_fails_the_dry_run(tmp_path, sparsity):
    raw = yaml.safe_load((PRESETS / "quick.yaml").read_text())
    raw["grid"]["sparsities"] = [90, sparsity]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        SNAKEMAKE + ["-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                     "--configfile", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "outside (0, 100)" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ sparsity spelling
@pytest.mark.parametrize("value,expected", [
    ("90", "90"), (90, "90"), (90.0, "90"), ("90.0", "90"), (" 90.00 ", "90"), (99.5, "99.5"),
    ("99.50", "99.5"), (0.5, "0.5"), (1e-3, "0.001"), (0, "0"), ("5", "5"),
])
def test_canonical_sparsity(value, expected):
    assert C.canonical_sparsity(value) == expected


def test_validate_canonicalises_and_deduplicates_sparsities(quick):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["sparsities"] = [90, "90.0", 99.5, "95"]
    assert C.validate(cfg)["grid"]["sparsities"] == ["90", "99.5", "95"]
    cells = C.grid_cells(C.validate(cfg))
    assert sorted({c["sparsity"] for c in cells}) == ["90", "95", "99.5"]


# ------------------------------------------------------------------ stage configs
def _cfgs(cfg, method="hydra", s2ap="off"):
    kw = dict(dataset="fashion-mnist", arch="small_cnn")
    return {
        "pretrain": C.stage_config(cfg, "pretrain", method=method, **kw),
        "prune": C.stage_config(cfg, "prune", method=method, s2ap=s2ap, **kw),
        "finetune": C.stage_config(cfg, "finetune", method=method, s2ap=s2ap, **kw),
        "evaluate": C.stage_config(cfg, "evaluate", **kw),
    }


def test_stage_config_holds_only_its_stage(quick):
    s = _cfgs(quick)
    assert set(s["pretrain"]) == {"data", "model", "train", "runtime"}
    assert set(s["prune"]) == {"data", "model", "train", "method", "s2ap", "diagnostics", "runtime"}
    assert set(s["finetune"]) == {"data", "model", "train", "method", "awp", "runtime"}
    assert set(s["evaluate"]) == {"data", "model", "evaluate", "runtime"}
    assert s["pretrain"]["train"]["epochs"] == quick["pretrain"]["epochs"]
    assert s["prune"]["train"]["epochs"] == quick["prune"]["epochs"]
    assert s["finetune"]["train"]["lr"] == quick["finetune"]["lr"]
    assert s["prune"]["method"] == {"name": "hydra", "options": {}}
    assert s["prune"]["s2ap"] is None and s["finetune"]["awp"] is None


def test_editing_one_stage_leaves_the_others_unchanged(quick):
    before = _cfgs(quick)
    for section, key, value in [("evaluate", "pgd_steps", 7), ("finetune", "lr", 0.5),
                                ("prune", "epochs", 9), ("s2ap", "gamma", 0.3), ("awp", "gamma", 0.3)]:
        cfg = copy.deepcopy(quick)
        cfg[section][key] = value
        after = _cfgs(cfg)
        changed = {k for k in before if before[k] != after[k]}
        expected = {"evaluate": {"evaluate"}, "finetune": {"finetune"}, "prune": {"prune"},
                    "s2ap": set(), "awp": set()}[section]
        assert changed == expected, (section, changed)


def test_s2ap_switches_reach_the_right_stage(quick):
    for value, search, awp in [("off", False, False), ("on", True, True), ("score", True, False),
                               ("awp", False, True)]:
        s = _cfgs(quick, s2ap=value)
        assert (s["prune"]["s2ap"] is not None) == search, value
        assert (s["finetune"]["awp"] is not None) == awp, value
    assert _cfgs(quick, s2ap="on")["prune"]["s2ap"]["gamma"] == quick["s2ap"]["gamma"]
    # on/score share their search, off/awp theirs: same prune config
    assert _cfgs(quick, s2ap="on")["prune"] == _cfgs(quick, s2ap="score")["prune"]
    assert _cfgs(quick, s2ap="off")["prune"] == _cfgs(quick, s2ap="awp")["prune"]


def test_per_method_overrides_merge_over_stage_defaults(quick):
    cfg = copy.deepcopy(quick)
    cfg["methods"] = {"hydra": {"prune": {"lr": 0.3}, "options": {"k": 1}, "s2ap": {"gamma": 0.5}}}
    C.validate(cfg)
    s = _cfgs(cfg, s2ap="on")
    assert s["prune"]["train"]["lr"] == 0.3
    assert s["prune"]["train"]["epochs"] == quick["prune"]["epochs"]
    assert s["prune"]["method"]["options"] == {"k": 1}
    assert s["prune"]["s2ap"]["gamma"] == 0.5 and s["prune"]["s2ap"]["warmup"] == quick["s2ap"]["warmup"]
    assert _cfgs(cfg, method="lwm")["prune"]["train"]["lr"] == quick["prune"]["lr"]


def test_defaults_fill_missing_fields(tmp_path):
    path = tmp_path / "mini.yaml"
    path.write_text("grid: {datasets: [fashion-mnist], archs: [small_cnn], sparsities: [90],"
                    " methods: [hydra], s2ap: ['off'], seeds: [0]}\nprune: {epochs: 2}\n")
    cfg = C.validate(C.load_preset(path))
    assert cfg["name"] == "mini"
    assert cfg["prune"]["epochs"] == 2 and cfg["prune"]["lr"] == C.DEFAULTS["prune"]["lr"]
    assert cfg["evaluate"]["autoattack"]["version"] == "standard"


def test_unquoted_yaml_off_on_mean_the_strings(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("grid: {datasets: [fashion-mnist], archs: [small_cnn], sparsities: [90],"
                    " methods: [hydra], s2ap: [off, on], seeds: [0]}\nmethods:\n")
    cfg = C.validate(C.load_preset(path))
    assert cfg["grid"]["s2ap"] == ["off", "on"] and cfg["methods"] == {}


def test_one_float_spelling_gives_one_json(quick):
    a, b = copy.deepcopy(quick), copy.deepcopy(quick)
    a["model"]["width"], b["model"]["width"] = 1, 1.0
    assert C.dumps(_cfgs(a)["pretrain"]) == C.dumps(_cfgs(b)["pretrain"])


# ------------------------------------------------------------------ pretrain recipe hash
def test_pretrain_hash_shared_across_methods_and_s2ap(quick):
    h = C.pretrain_recipe_hash
    assert h(quick, "fashion-mnist", "small_cnn", "hydra") == h(quick, "fashion-mnist", "small_cnn", "lwm")
    cfg = copy.deepcopy(quick)
    cfg["grid"]["s2ap"] = ["off", "on", "score", "awp"]
    cells = [c for c in C.grid_cells(cfg) if c["method"] == "hydra"]
    assert {c["s2ap"] for c in cells} == {"off", "on", "score", "awp"}
    assert len({c["recipe"] for c in cells}) == 1
    # speed-only settings do not make a new dense model
    fast = copy.deepcopy(quick)
    fast["runtime"].update(threads=16, device="cuda")
    assert h(fast, "fashion-mnist", "small_cnn", "hydra") == h(quick, "fashion-mnist", "small_cnn", "hydra")


def test_pretrain_hash_differs_when_recipes_differ(quick):
    h = C.pretrain_recipe_hash
    cfg = copy.deepcopy(quick)
    cfg["methods"] = {"lwm": {"pretrain": {"loss": "trades", "weight_decay": 1e-4}}}
    assert h(cfg, "fashion-mnist", "small_cnn", "hydra") != h(cfg, "fashion-mnist", "small_cnn", "lwm")
    assert h(cfg, "fashion-mnist", "small_cnn", "hydra") != h(cfg, "fashion-mnist", "resnet18", "hydra")
    cfg2 = copy.deepcopy(quick)
    cfg2["pretrain"]["epochs"] += 1
    assert h(cfg2, "fashion-mnist", "small_cnn", "hydra") != h(quick, "fashion-mnist", "small_cnn", "hydra")
    # editing later stages keeps the dense model
    cfg3 = copy.deepcopy(quick)
    cfg3["finetune"]["epochs"] += 1
    cfg3["evaluate"]["pgd_steps"] += 1
    assert h(cfg3, "fashion-mnist", "small_cnn", "hydra") == h(quick, "fashion-mnist", "small_cnn", "hydra")


def test_cell_config_hash_excludes_seed_only(quick):
    cells = C.grid_cells(C.validate(dict(quick, grid=dict(quick["grid"], seeds=[0, 1]))))
    by = {}
    for c in cells:
        by.setdefault((c["method"], c["s2ap"], c["sparsity"]), set()).add(C.cell_json(quick, c)["config_hash"])
    assert all(len(v) == 1 for v in by.values())
    assert len({next(iter(v)) for v in by.values()}) == len(by)


# ------------------------------------------------------------------ grid and method traits
def test_grid_gives_n_a_to_methods_without_scores():
    cfg = C.load_preset(PRESETS / "offline.yaml")  # three sparsities
    cfg["grid"].update(s2ap=["off", "on", "awp"], seeds=[0, 1])
    cells = C.grid_cells(C.validate(cfg))
    lwm = [c for c in cells if c["method"] == "lwm"]
    hydra = [c for c in cells if c["method"] == "hydra"]
    assert {c["s2ap"] for c in lwm} == {"n/a"} and len(lwm) == 3 * 2
    assert len(hydra) == 3 * 3 * 2
    assert len({(c["method"], c["s2ap"], c["sparsity"], c["seed"]) for c in cells}) == len(cells)


def test_method_traits_read_from_source(tmp_path):
    reg = method_registry()
    assert C.method_traits("hydra", reg) == {"learns_scores": True, "needs_pretrain": True,
                                             "needs_finetune": True}
    assert C.method_traits("lwm", reg)["learns_scores"] is False
    # a plugin that inherits from a built-in method and overrides one trait
    plugin = _plugin(tmp_path, "scratch", "Scratch", "needs_pretrain: bool = False\nneeds_finetune = False\n",
                     base="Hydra", imports="from methods.hydra import Hydra")
    reg = method_registry([plugin])
    assert C.method_traits("scratch", reg) == {"learns_scores": True, "needs_pretrain": False,
                                               "needs_finetune": False}
    with pytest.raises(ValueError, match="valid choices"):
        C.method_traits("nope", reg)


def test_method_without_pretrain_or_finetune(quick, tmp_path):
    plugin = _plugin(tmp_path, "scratch", "Scratch", "needs_pretrain = False\nneeds_finetune = False\n")
    cfg = copy.deepcopy(quick)
    cfg["grid"]["methods"] = ["scratch"]
    cfg["method_plugins"] = [str(plugin)]
    cfg = C.validate(cfg)
    cells = C.grid_cells(cfg)
    assert all(c["recipe"] is None for c in cells)
    traits = cells[0]["traits"]
    ft = C.stage_config(cfg, "finetune", dataset="fashion-mnist", arch="small_cnn",
                        method="scratch", s2ap="off", traits=traits)
    assert ft["train"]["epochs"] == 0
    # the dense row still has a dense model to evaluate
    dense = C.dense_cells(cfg, cells)
    assert len(dense) == 1 and dense[0]["recipe"]


def test_config_module_imports_no_torch():
    code = ("import sys; from benchmark import config as C; "
            "cfg = C.validate(C.load_preset('presets/paper_cifar10_hydra.yaml')); "
            "cells = C.grid_cells(cfg); [C.cell_json(cfg, c) for c in cells]; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ------------------------------------------------------------------ shipped presets
@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_shipped_presets_validate(preset):
    cfg = C.validate(C.load_preset(PRESETS / preset))
    assert cfg["name"] == Path(preset).stem
    assert C.grid_cells(cfg)


def test_quick_preset_meets_the_issue():
    cfg = C.validate(C.load_preset(PRESETS / "quick.yaml"))
    assert cfg["grid"]["datasets"] == ["fashion-mnist"]
    assert cfg["data"]["download"] is False
    # issue 3: hydra and harp with S2AP off and on, lwm and random; sparsities may be cut to fit
    # the 15-minute budget, methods may not
    assert cfg["grid"]["sparsities"]
    assert set(cfg["grid"]["methods"]) == {"hydra", "harp", "lwm", "random"}
    assert set(cfg["grid"]["s2ap"]) == {"off", "on"}
    aa = cfg["evaluate"]["autoattack"]
    assert aa["n_images"] >= 100 and aa["version"] == "standard" and aa["attacks"] is None


def test_offline_preset_covers_every_builtin_method_with_seed_stability():
    cfg = C.validate(C.load_preset(PRESETS / "offline.yaml"))
    assert set(cfg["grid"]["methods"]) == set(method_registry().names())
    assert sorted(map(float, cfg["grid"]["sparsities"])) == [90, 95, 99]
    assert set(cfg["grid"]["s2ap"]) == {"off", "on"} and cfg["diagnostics"]["seed_stability"] is True
    assert cfg["gamma_sweep"]["gammas"][0] == 0.0  # the sweep includes the plain method


def test_tiny_preset_labels_its_attack_subset():
    cfg = C.validate(C.load_preset(PRESETS / "tiny.yaml"))
    assert cfg["evaluate"]["autoattack"]["attacks"] == ["apgd-ce"]
    assert cfg["data"]["train_subset"] <= 1000
    assert all(cfg[s]["epochs"] == 1 for s in C.TRAIN_STAGES)


# The published HYDRA recipe, as methods.md ("HYDRA") states it, and the AP benchmark's evaluation
# protocol ("Evaluation protocol used by the AP survey benchmark").
HYDRA_COMMON = {"loss": "trades", "trades_beta": 6, "momentum": 0.9, "weight_decay": 1e-4,
                "schedule": "cosine", "batch_size": 128,
                "attack": {"eps": 0.031, "steps": 10, "step_size": 0.0078}}
HYDRA_STAGES = {"pretrain": {"epochs": 100, "lr": 0.1}, "prune": {"epochs": 20, "lr": 0.1},
                "finetune": {"epochs": 100, "lr": 0.01}}


@pytest.mark.parametrize("dataset", ["cifar10", "svhn"])
def test_paper_presets_match_methods_md(dataset):
    cfg = C.validate(C.load_preset(PRESETS / f"paper_{dataset}_hydra.yaml"))
    grid = cfg["grid"]
    assert grid["datasets"] == [dataset]
    assert sorted(grid["archs"]) == ["resnet18", "vgg16_bn", "wrn28_4"]
    assert sorted(map(float, grid["sparsities"])) == [90, 95, 99]
    assert "hydra" in grid["methods"] and "off" in grid["s2ap"]
    assert cfg["methods"].get("hydra") is None  # no override hides the recipe below
    for stage, values in HYDRA_STAGES.items():
        train = cfg[stage]
        for key, expected in {**HYDRA_COMMON, **values}.items():
            assert train[key] == pytest.approx(expected) if not isinstance(expected, dict) \
                else train[key] == expected, (stage, key)
    ev = cfg["evaluate"]
    assert ev["eps"] == pytest.approx(0.031)
    assert ev["autoattack"] == {**ev["autoattack"], "n_images": 10000, "version": "standard",
                                "attacks": None}
    assert ev["clean_n"] is None
    assert cfg["data"]["download"] is True and cfg["data"]["train_subset"] is None
    assert cfg["data"]["test_subset"] is None
    assert cfg["runtime"]["device"] == "auto"


def test_methods_md_still_states_the_recipe():
    """When the shared reference is on disk, the numbers above are the ones it states."""
    ref = REPO.parent / "shared" / "reference" / "methods.md"
    if not ref.is_file():
        ref = Path("/work/shared/reference/methods.md")
    if not ref.is_file():
        pytest.skip("shared reference methods.md not on this machine")
    text = ref.read_text()
    for phrase in ["TRADES, beta = 6", "SGD momentum 0.9, weight decay 1e-4", "cosine schedule",
                   "batch 128", "Pretrain 100 epochs lr 0.1; prune 20 epochs lr 0.1; finetune 100 epochs lr 0.01",
                   "Linf eps 0.031, 10 steps, step 0.0078"]:
        assert phrase in text, phrase
