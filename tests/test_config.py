"""Presets: validation before any job, canonical sparsities, per-stage configs, recipe hashes,
and the paper presets against the published recipe (docs/methods.md)."""
from __future__ import annotations

import ast
import copy
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark.core import config as C
from benchmark.core.registry import (
    ARCHITECTURES,
    DATASETS,
    TRAIT_DEFAULTS,
    MethodContractError,
    MethodFileError,
    method_registry,
    read_method_file,
)

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture
def quick():
    return C.load_preset(PRESETS / "quick.yaml")


def _method_file(tmp_path: Path, name: str, cls: str, traits: str = "", body: str = "pass\n",
                 base: str = "PruningMethod",
                 imports: str = "from methods.base import PruningMethod") -> Path:
    path = tmp_path / f"{name}_method.py"
    path.write_text(textwrap.dedent(f"""\
        {imports}
        from benchmark.core.registry import register_method


        @register_method("{name}"{", " + traits if traits else ""})
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


def test_method_file_method_becomes_a_valid_choice(quick, tmp_path):
    method_file = _method_file(tmp_path, "myprune", "MyPrune", "learns_scores=True")
    cfg = copy.deepcopy(quick)
    cfg["grid"]["methods"] = ["hydra", "nope"]
    with pytest.raises(ValueError, match="myprune"):
        C.validate(cfg, [method_file])
    cfg["grid"]["methods"] = ["hydra", "myprune"]
    cfg["method_files"] = [str(method_file)]
    C.validate(cfg)


def test_imagenet_needs_a_root(quick):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["datasets"] = ["imagenet"]
    with pytest.raises(ValueError, match="imagenet_root"):
        C.validate(cfg)


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert s["prune"]["method"] == {"name": "hydra", "options": quick["methods"]["hydra"]["options"]}
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


def test_moving_the_data_keeps_every_hash(quick):
    """A preset moved to another machine, with its data elsewhere, retrains nothing."""
    moved = copy.deepcopy(quick)
    moved["data"].update(root="/mnt/other/datasets", download=True, imagenet_root="/mnt/imagenet",
                         num_workers=8)
    for method in ("hydra", "lwm"):
        assert C.pretrain_recipe_hash(moved, "fashion-mnist", "small_cnn", method) == \
            C.pretrain_recipe_hash(quick, "fashion-mnist", "small_cnn", method)
    for a, b in zip(C.grid_cells(C.validate(quick)), C.grid_cells(C.validate(moved))):
        assert C.cell_json(quick, a)["config_hash"] == C.cell_json(moved, b)["config_hash"]
    for stage, cfgs in _cfgs(quick).items():
        assert C.stage_key(cfgs) == C.stage_key(_cfgs(moved)[stage]), stage
    # ... while what shapes the numbers does change the keys
    other = copy.deepcopy(quick)
    other["data"]["val_size"] += 1
    assert C.stage_key(_cfgs(other)["pretrain"]) != C.stage_key(_cfgs(quick)["pretrain"])


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
    cfg["grid"].update(methods=["hydra", "lwm"], s2ap=["off", "on", "awp"], seeds=[0, 1])
    cells = C.grid_cells(C.validate(cfg))
    lwm = [c for c in cells if c["method"] == "lwm"]
    hydra = [c for c in cells if c["method"] == "hydra"]
    assert {c["s2ap"] for c in lwm} == {"n/a"} and len(lwm) == 3 * 2
    assert len(hydra) == 3 * 3 * 2
    assert len({(c["method"], c["s2ap"], c["sparsity"], c["seed"]) for c in cells}) == len(cells)


def test_method_traits_read_from_the_decorator(tmp_path):
    reg = method_registry()
    assert C.method_traits("hydra", reg) == {"learns_scores": True, "needs_pretrain": True,
                                             "needs_finetune": True}
    assert C.method_traits("lwm", reg)["learns_scores"] is False
    assert C.method_traits("rst", reg) == {"learns_scores": True, "needs_pretrain": False,
                                           "needs_finetune": False}
    # a subclass of a built-in method declares its own traits; left-out keywords are True
    method_file = _method_file(tmp_path, "scratch", "Scratch",
                               "needs_pretrain=False, needs_finetune=False",
                               base="Hydra", imports="from methods.hydra import Hydra")
    reg = method_registry([method_file])
    assert C.method_traits("scratch", reg) == {"learns_scores": True, "needs_pretrain": False,
                                               "needs_finetune": False}
    with pytest.raises(ValueError, match="valid choices"):
        C.method_traits("nope", reg)


def test_method_without_pretrain_or_finetune(quick, tmp_path):
    method_file = _method_file(tmp_path, "scratch", "Scratch",
                               "needs_pretrain=False, needs_finetune=False")
    cfg = copy.deepcopy(quick)
    cfg["grid"]["methods"] = ["scratch"]
    cfg["method_files"] = [str(method_file)]
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


@pytest.mark.slow
def test_config_module_imports_no_torch():
    # what the Snakefile runs while it is parsed: validation, the DAG's cells, the cheap machine check
    code = ("import sys; from benchmark.core import config as C; from benchmark.planning import preflight; "
            "cfg = C.validate(C.load_preset('presets/paper_cifar10.yaml')); "
            "cells = C.grid_cells(cfg); [C.cell_json(cfg, c) for c in cells]; "
            "preflight.machine_problems(cfg, deep=False); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ------------------------------------------------------------------ shipped presets
# overlays are given after a preset, not run alone (tests/test_paper_presets.py checks them)
OVERLAYS = {"smoke.yaml"}


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")
                                          if p.name not in OVERLAYS))
def test_shipped_presets_validate(preset):
    cfg = C.validate(C.load_preset(PRESETS / preset))
    assert cfg["name"] == Path(preset).stem
    assert C.grid_cells(cfg)


def test_quick_preset_meets_the_issue():
    cfg = C.validate(C.load_preset(PRESETS / "quick.yaml"))
    assert cfg["grid"]["datasets"] == ["fashion-mnist"]
    assert cfg["data"]["download"] is False
    # issue 11: robustness against sparsity: 90/95/99 % for HYDRA with S2AP off and on and at
    # least one baseline, plus the dense model, at least 10 models (HARP and lwm where the
    # 15-minute profile allows them: speed/bench_quick.py says it does not)
    assert sorted(map(float, cfg["grid"]["sparsities"])) == [90, 95, 99]
    assert "hydra" in cfg["grid"]["methods"] and set(cfg["grid"]["s2ap"]) == {"off", "on"}
    baselines = [m for m in cfg["grid"]["methods"] if not method_registry().traits(m)["learns_scores"]]
    assert baselines
    cells, dense = C.grid_cells(cfg), 1
    assert len(cells) + dense >= 10
    aa = cfg["evaluate"]["autoattack"]
    assert aa["n_images"] >= 100 and aa["version"] == "standard" and aa["attacks"] is None


def test_standard_preset_measures_clean_pgd_and_autoattack_on_the_same_images():
    cfg = C.validate(C.load_preset(PRESETS / "standard.yaml"))
    ev = cfg["evaluate"]
    assert ev["clean_n"] == ev["pgd_n"] == ev["autoattack"]["n_images"] >= 100
    assert ev["autoattack"]["version"] == "standard" and ev["autoattack"]["attacks"] is None
    assert {"hydra", "random"} <= set(cfg["grid"]["methods"])
    assert cfg["purpose"] == "benchmark"


def test_tiny_preset_is_plumbing_only():
    assert C.validate(C.load_preset(PRESETS / "tiny.yaml"))["purpose"] == "plumbing"


def test_offline_preset_is_the_s2ap_study_of_issue_9():
    cfg = C.validate(C.load_preset(PRESETS / "offline.yaml"))
    grid = cfg["grid"]
    assert set(grid["methods"]) == {"hydra", "harp"} and set(grid["s2ap"]) == {"off", "on"}
    assert sorted(map(float, grid["sparsities"])) == [90, 95, 99] and len(grid["seeds"]) >= 3
    ev = cfg["evaluate"]
    assert ev["pgd_n"] is None and ev["clean_n"] is None and ev["pgd_steps"] == 50
    assert cfg["data"]["test_subset"] is None  # PGD-50 on all 10,000 test images
    assert ev["autoattack"]["n_images"] >= 100 and ev["autoattack"]["attacks"] is None
    # the gamma sweep: per method, at least two seeds, the plain method and values above 0.01
    sweep = cfg["gamma_sweep"]
    assert set(sweep["methods"]) == {"hydra", "harp"} and len(sweep["seeds"]) >= 2
    assert sweep["gammas"][0] == 0.0 and sum(g > 0.01 for g in sweep["gammas"]) >= 2
    # gamma is stored per method (the sweep's selection, labelled selected once it has run); the
    # preset-wide default stays unselected
    for method in ("hydra", "harp"):
        own = cfg["methods"][method]["s2ap"]
        assert own["gamma"] in sweep["gammas"] and own["gamma"] > 0
        assert own["gamma_status"] in ("selected", "unselected")
    assert cfg["s2ap"]["gamma_status"] == "unselected"
    # HARP's recipe: PGD-AT and weight decay 5e-4 in every stage; RST's schedule and attack mode
    for stage in C.TRAIN_STAGES:
        train = C.stage_config(cfg, stage, dataset="fashion-mnist", arch="small_cnn", method="harp",
                               s2ap="off")["train"]
        assert train["loss"] == "pgd_at" and train["weight_decay"] == 5e-4, stage
    rst = C.stage_config(cfg, "prune", dataset="fashion-mnist", arch="small_cnn", method="rst",
                         s2ap="off")["train"]
    assert rst["schedule"] == "step" and rst["adv_eval_mode"] is False


def test_tiny_preset_labels_its_attack_subset():
    cfg = C.validate(C.load_preset(PRESETS / "tiny.yaml"))
    assert cfg["evaluate"]["autoattack"]["attacks"] == ["apgd-ce"]
    assert cfg["data"]["train_subset"] <= 1000
    assert all(cfg[s]["epochs"] == 1 for s in C.TRAIN_STAGES)


# ------------------------------------------------------------------ method declarations
def _marking_file(tmp_path: Path, name: str, decorator: str, class_line: str) -> tuple[Path, Path]:
    """A method file that leaves a marker file when it is imported (run)."""
    marker = tmp_path / f"{name}.imported"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(f"""\
        open({str(marker)!r}, "w").write("this file ran")
        from benchmark.core.registry import register_method
        from methods.base import PruningMethod
        FLAG = False


        {decorator}
        {class_line}
            pass
        """))
    return path, marker


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["syntax_error", "non_literal_trait", "non_literal_name"])
def test_unreadable_declaration_is_refused_without_running_the_file(quick, tmp_path, kind):
    decorator, class_line, expected = {
        "syntax_error": ('@register_method("broken")', "class Broken(PruningMethod)",
                         r"broken\.py:8: method file does not parse"),
        "non_literal_trait": ('@register_method("sneaky", learns_scores=FLAG)',
                              "class Sneaky(PruningMethod):",
                              r"sneaky\.py:7: learns_scores= must be the literal True or False.*FLAG"),
        "non_literal_name": ('@register_method("sn" + "eaky")', "class Sneaky(PruningMethod):",
                             r"sneaky\.py:7: @register_method needs the method's name as one string"),
    }[kind]
    name = "broken" if kind == "syntax_error" else "sneaky"
    path, marker = _marking_file(tmp_path, name, decorator, class_line)
    cfg = copy.deepcopy(quick)
    cfg["method_files"] = [str(path)]
    with pytest.raises(ValueError, match=expected):
        C.validate(cfg)
    assert not marker.exists(), "validation ran the method file"
    # the dry run of a preset naming it stops the same way, and runs nothing of it either
    raw = yaml.safe_load((PRESETS / "tiny.yaml").read_text())
    raw["method_files"] = [str(path)]
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        SNAKEMAKE + ["-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                     "--configfile", str(preset)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert re.search(expected, proc.stdout + proc.stderr), proc.stdout + proc.stderr
    assert not marker.exists(), "the dry run ran the method file"


def test_declaration_reader_gives_name_class_traits_and_line(tmp_path):
    path = _method_file(tmp_path, "mine", "Mine", "needs_finetune=False")
    (decl,) = read_method_file(path)
    assert (decl.name, decl.class_name, decl.line) == ("mine", "Mine", 5)
    assert decl.traits == {**TRAIT_DEFAULTS, "needs_finetune": False}
    with pytest.raises(MethodFileError, match=r"mine2_method\.py:5: unknown @register_method keyword 'learn_scores'"):
        read_method_file(_method_file(tmp_path, "mine2", "Mine2", "learn_scores=False"))


def test_a_file_without_a_declaration_is_refused(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(MethodFileError, match="empty.py declares no method"):
        method_registry([path])


def test_traits_live_in_the_decorator_only(tmp_path):
    path = _method_file(tmp_path, "twice", "Twice", "learns_scores=True", body="learns_scores = False\n")
    reg = method_registry([path])
    assert reg.traits("twice")["learns_scores"] is True  # planning reads the declaration ...
    with pytest.raises(MethodContractError, match="Twice sets learns_scores in its class body"):
        reg.get("twice")  # ... and loading the class refuses the second, contradicting one


def test_loading_a_method_checks_the_contract_in_the_job_process(tmp_path):
    path = tmp_path / "loose.py"
    path.write_text(textwrap.dedent("""\
        from benchmark.core.registry import register_method


        @register_method("loose")
        class Loose:
            pass
        """))
    reg = method_registry([path])
    assert reg.traits("loose") == TRAIT_DEFAULTS  # planning needs no import
    must = r"loose\.py:4: method 'loose' \(Loose\) must subclass methods.base.PruningMethod"
    with pytest.raises(MethodContractError, match=must):
        reg.get("loose")
    # a class whose traits were changed after its declaration does not run under that name
    path = _method_file(tmp_path, "drifted", "Drifted", "learns_scores=False",
                        body="pass\n")
    path.write_text(path.read_text() + "Drifted.learns_scores = True\n")
    with pytest.raises(MethodContractError, match="learns_scores is True when loaded but its "
                                                  "@register_method declaration says False"):
        method_registry([path]).get("drifted")


def test_every_shipped_method_declares_its_traits_once():
    reg = method_registry([REPO / "examples" / "my_method.py"])
    for name in reg.names():
        cls = reg.get(name)  # the contract check runs here
        assert {k: getattr(cls, k) for k in TRAIT_DEFAULTS} == reg.traits(name)
    # no class body repeats a trait; the contract's defaults are TRAIT_DEFAULTS themselves
    for path in [*sorted((REPO / "methods").glob("*.py")), REPO / "examples" / "my_method.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "PruningMethod":
                assigned = {t.id for s in node.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                            for t in (s.targets if isinstance(s, ast.Assign) else [s.target])
                            if isinstance(t, ast.Name)}
                assert not assigned & set(TRAIT_DEFAULTS), (path.name, node.name)
    from methods.base import PruningMethod

    assert {k: getattr(PruningMethod, k) for k in TRAIT_DEFAULTS} == TRAIT_DEFAULTS


# ------------------------------------------------------------------ documented values are valid
@pytest.mark.parametrize("section,key,value", [
    ("s2ap", "norm", "adaptive"), ("s2ap", "norm", "linf"), ("diagnostics", "norm", "adaptive"),
    ("pretrain", "loss", "clean"), ("finetune", "schedule", "constant"),
])
def test_values_the_code_accepts_pass_the_schema(quick, section, key, value):
    cfg = copy.deepcopy(quick)
    cfg[section][key] = value
    C.validate(cfg)


def test_values_the_code_refuses_fail_the_schema(quick):
    cfg = copy.deepcopy(quick)
    cfg["s2ap"]["norm"] = "elementwise"  # accepted by the old schema, refused by the code
    with pytest.raises(ValueError, match="s2ap.norm: 'elementwise' is not one of"):
        C.validate(cfg)


def test_a_stage_may_have_zero_epochs_where_it_does_not_run(quick):
    cfg = copy.deepcopy(quick)
    cfg["grid"]["methods"] = ["rst", "lwm"]  # rst: no dense model, no finetune; lwm: no search
    cfg["methods"] = {"rst": {"finetune": {"epochs": 0}}, "lwm": {"prune": {"epochs": 0}}}
    C.validate(cfg)
    cfg["methods"]["lwm"]["finetune"] = {"epochs": 0}
    with pytest.raises(ValueError, match=r"methods\.lwm\.finetune\.epochs: 0, but lwm finetunes"):
        C.validate(cfg)


def test_schema_file_ships_with_the_package():
    assert C.SCHEMA_PATH.is_relative_to(Path(C.__file__).parent.parent)
    linked = REPO / "workflows" / "schema" / "config.schema.yaml"
    assert linked.resolve() == C.SCHEMA_PATH.resolve()  # Snakemake's convention, same file
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"schemas/*.yaml"' in pyproject
