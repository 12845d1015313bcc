"""The paper presets: their recipes (pinned here and against docs/methods.md), their protocol, the
smoke overlay, and the jobs each (table target, paper preset) pair runs, in a Snakemake dry run."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from benchmark.core import config as C
from benchmark.planning import estimate
from benchmark.results import reference, tables

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
SMOKE = PRESETS / "smoke.yaml"
PAPER = {
    "paper_cifar10": {"dataset": "cifar10", "archs": ["resnet18", "vgg16_bn", "wrn28_4"],
                      "sparsities": [90, 95, 99],
                      "methods": ["hydra", "harp", "rst", "lamp", "lwm", "random"],
                      "s2ap": ["off", "on", "score", "awp"],
                      "tables": ["main", "baselines", "ablation", "sharpness", "stability",
                                 "overhead"]},
    "paper_svhn": {"dataset": "svhn", "archs": ["resnet18", "vgg16_bn", "wrn28_4"],
                   "sparsities": [90, 95, 99], "methods": ["hydra", "harp"],
                   "s2ap": ["off", "on", "score", "awp"],
                   "tables": ["main", "ablation", "sharpness", "stability", "overhead"]},
    "paper_cifar10_structured": {"dataset": "cifar10", "archs": ["resnet18", "vgg16_bn", "wrn28_4"],
                                 "sparsities": [50, 75, 90], "methods": ["harp"],
                                 "s2ap": ["off", "on"], "tables": ["structured"]},
    "paper_svhn_structured": {"dataset": "svhn", "archs": ["resnet18", "vgg16_bn", "wrn28_4"],
                              "sparsities": [50, 75, 90], "methods": ["harp"],
                              "s2ap": ["off", "on"], "tables": ["structured"]},
    "paper_cifar10_vit": {"dataset": "cifar10", "archs": ["vit"], "sparsities": [90, 95, 99],
                          "methods": ["hydra", "harp"], "s2ap": ["off", "on"], "tables": ["vit"]},
    "paper_imagenet": {"dataset": "imagenet", "archs": ["resnet50"], "sparsities": [90, 95, 99],
                       "methods": ["hydra", "harp"], "s2ap": ["off", "on"], "tables": ["imagenet"]},
}

# The published recipes (docs/methods.md, "HYDRA", "HARP", "Baselines", "AWP"), pinned here.
HYDRA = {"loss": "trades", "trades_beta": 6, "momentum": 0.9, "weight_decay": 1e-4,
         "schedule": "cosine", "batch_size": 128,
         "attack": {"eps": 0.031, "steps": 10, "step_size": 0.0078}}
HYDRA_STAGES = {"pretrain": {"epochs": 100, "lr": 0.1}, "prune": {"epochs": 20, "lr": 0.1},
                "finetune": {"epochs": 100, "lr": 0.01}}
HARP = {**HYDRA, "loss": "pgd_at", "weight_decay": 5e-4}
RST_PRUNE = {"loss": "pgd_at", "weight_decay": 5e-4, "lr": 0.1, "batch_size": 256, "epochs": 160,
             "attack": {"eps": None, "steps": 7, "step_size": None}, "adv_eval_mode": False}
METHODS_MD_PHRASES = [
    "TRADES with beta = 6",
    "SGD, momentum 0.9, weight decay 1e-4 (scores included), cosine schedule, batch 128",
    "Pretrain 100 epochs at lr 0.1, search 20 epochs at lr 0.1, finetune 100 epochs at lr 0.01",
    "Training attack: L-inf eps 0.031, 10 steps of 0.0078",
    "SGD momentum 0.9, weight decay 5e-4, cosine, batch 128, eps 0.031 / 10 steps / 0.0078",
    "PGD-AT eps 8/255, 7 steps of 2/255",
    "PGD-AT gamma 0.01 without warm-up; TRADES gamma 0.005 after 10 warm-up epochs",
    "AutoAttack \"standard\" (APGD-CE, APGD-T, FAB-T, Square), L-inf eps 0.031, on the first 10,000",
]


def load(name: str, *overlays: Path) -> dict:
    return C.validate(C.load_presets([PRESETS / f"{name}.yaml", *overlays]), search_dirs=[REPO])


def _matches(train: dict, expected: dict, where: str) -> None:
    for key, value in expected.items():
        if isinstance(value, dict) or value is None:
            assert train[key] == value, (where, key)
        else:
            assert train[key] == pytest.approx(value), (where, key)


def stage(cfg: dict, name: str, method: str, s2ap: str = "off") -> dict:
    traits = C.methods_of(cfg).traits(method)
    return C.stage_config(cfg, name, dataset=cfg["grid"]["datasets"][0],
                          arch=cfg["grid"]["archs"][0], method=method,
                          s2ap=s2ap if traits["learns_scores"] else "n/a", traits=traits)


# ------------------------------------------------------------------ recipes and protocol
def test_methods_md_states_the_pinned_recipes():
    text = " ".join((REPO / "docs" / "methods.md").read_text().split())
    for phrase in METHODS_MD_PHRASES:
        assert phrase in text, phrase


def test_the_old_hydra_only_presets_are_gone():
    assert not (PRESETS / "paper_cifar10_hydra.yaml").exists()
    assert not (PRESETS / "paper_svhn_hydra.yaml").exists()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_preset_grid_and_protocol(name):
    want, cfg = PAPER[name], load(name)
    grid = cfg["grid"]
    assert cfg["name"] == name
    assert grid["datasets"] == [want["dataset"]] and grid["archs"] == want["archs"]
    assert sorted(map(float, grid["sparsities"])) == want["sparsities"]
    assert grid["methods"] == want["methods"] and grid["s2ap"] == want["s2ap"]
    assert grid["seeds"] == [0, 1, 2]  # three seeds by default
    assert list(cfg["tables"]) == want["tables"]
    ev = cfg["evaluate"]
    n = 5000 if want["dataset"] == "imagenet" else 10000
    # clean, PGD and AutoAttack on the same first N test images
    assert ev["clean_n"] == ev["pgd_n"] == ev["autoattack"]["n_images"] == n
    assert ev["autoattack"]["version"] == "standard" and ev["autoattack"]["attacks"] is None
    assert ev["pgd_steps"] == 50
    assert cfg["data"]["test_subset"] is None and cfg["data"]["train_subset"] is None
    assert cfg["data"]["synthetic"] is False and cfg["model"]["width"] == 1.0
    eps = 4 / 255 if want["dataset"] == "imagenet" else 0.031
    assert ev["eps"] == pytest.approx(eps)
    assert (REPO / cfg["reference_csv"]).resolve() == reference.AP_BENCHMARK_CSV


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper_cifar10", "paper_svhn", "paper_cifar10_vit"])
def test_hydra_and_harp_each_train_with_their_published_recipe(name):
    cfg = load(name)
    for name_, values in HYDRA_STAGES.items():
        _matches(stage(cfg, name_, "hydra")["train"], {**HYDRA, **values}, f"hydra {name_}")
        _matches(stage(cfg, name_, "harp")["train"], {**HARP, **values}, f"harp {name_}")
    assert stage(cfg, "finetune", "hydra", "on")["awp"]["gamma"] == pytest.approx(0.005)
    assert stage(cfg, "finetune", "hydra", "on")["awp"]["warmup_epochs"] == 10
    assert stage(cfg, "finetune", "harp", "on")["awp"] == {**stage(cfg, "finetune", "harp", "on")["awp"],
                                                          "gamma": 0.01, "warmup_epochs": 0}
    # HARP's method options are its defaults (methods/harp.py): the preset sets none
    assert not (cfg["methods"]["harp"].get("options") or {})
    # the two recipes differ, so the two methods start from their own dense models
    arch = "resnet18" if name != "paper_cifar10_vit" else "vit"
    dataset = cfg["grid"]["datasets"][0]
    assert C.pretrain_recipe_hash(cfg, dataset, arch, "hydra") != C.pretrain_recipe_hash(cfg, dataset, arch, "harp")


def test_baselines_train_with_their_recipes():
    cfg = load("paper_cifar10")
    _matches(stage(cfg, "prune", "rst")["train"], RST_PRUNE, "rst prune")
    assert stage(cfg, "finetune", "rst")["train"]["epochs"] == 0  # RST has no finetune
    for method in ("lamp", "lwm", "random"):  # from HYDRA's dense model, finetuned as HYDRA
        _matches(stage(cfg, "finetune", method)["train"], {**HYDRA, **HYDRA_STAGES["finetune"]},
                 method)
        assert C.pretrain_recipe_hash(cfg, "cifar10", "resnet18", method) == \
            C.pretrain_recipe_hash(cfg, "cifar10", "resnet18", "hydra")


@pytest.mark.parametrize("name", ["paper_cifar10_structured", "paper_svhn_structured"])
def test_structured_presets_prune_channels_with_harps_recipe(name):
    cfg = load(name)
    assert cfg["methods"]["harp"]["options"] == {"structured": True}
    for name_, values in HYDRA_STAGES.items():
        _matches(stage(cfg, name_, "harp")["train"], {**HARP, **values}, f"harp {name_}")


def test_imagenet_preset_starts_from_a_robust_dense_model_at_4_over_255():
    cfg = load("paper_imagenet")
    assert cfg["external_dense"] == []  # our own robust pretraining unless an entry is added
    # free adversarial training (m = 4) with cross-entropy and weight decay 1e-4 in every stage
    # of both methods, as the public HYDRA and HARP ImageNet code (benchmark/recipe_ledger.yaml)
    for method in ("hydra", "harp"):
        for name_ in ("pretrain", "prune", "finetune"):
            train = stage(cfg, name_, method)["train"]
            assert train["loss"] == "free" and train["free_replays"] == 4, (method, name_)
            assert train["weight_decay"] == pytest.approx(1e-4) and train["attack"]["eps"] is None
    assert stage(cfg, "pretrain", "hydra")["train"]["epochs"] == 23  # ceil(90 / 4)
    assert stage(cfg, "prune", "harp")["train"]["epochs"] == 5
    assert stage(cfg, "finetune", "harp")["train"]["epochs"] == 25
    assert cfg["methods"]["harp"]["options"] == {"gamma": 0.1}


# ------------------------------------------------------------------ the smoke overlay
@pytest.mark.parametrize("name", sorted(PAPER))
def test_smoke_overlay_keeps_every_row_and_column_and_shrinks_the_rest(name):
    full, cfg = load(name), load(name, SMOKE)
    assert cfg["name"] == f"{name}_smoke"
    for key in ("datasets", "archs", "sparsities", "methods", "s2ap"):
        assert cfg["grid"][key] == full["grid"][key], key
    assert cfg["tables"] == full["tables"]
    assert cfg["grid"]["seeds"] == [0]
    assert cfg["data"]["synthetic"] is True and cfg["external_dense"] == []
    assert cfg["model"]["width"] <= 0.0625 and cfg["runtime"]["device"] == "cpu"
    assert cfg["runtime"]["group_jobs"] is True
    aa = cfg["evaluate"]["autoattack"]
    assert aa["attacks"] == ["apgd-ce"] and aa["n_images"] <= 16  # a labelled subset
    assert cfg["evaluate"]["eps"] == full["evaluate"]["eps"]
    registry = C.methods_of(cfg)
    for method in cfg["grid"]["methods"]:
        traits = registry.traits(method)
        for s2ap in (cfg["grid"]["s2ap"] if traits["learns_scores"] else ["n/a"]):
            for name_ in C.TRAIN_STAGES:
                train = C.stage_config(cfg, name_, dataset=cfg["grid"]["datasets"][0],
                                       arch=cfg["grid"]["archs"][0], method=method, s2ap=s2ap,
                                       traits=traits)["train"]
                assert train["epochs"] <= 1 and train["batch_size"] <= 32, (method, name_)
                assert train["attack"]["steps"] <= 1 and train["val_attack_steps"] <= 1


def test_smoke_overlay_drops_an_external_dense_model(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text((PRESETS / "paper_imagenet.yaml").read_text().replace(
        "external_dense: []", "external_dense: [{dataset: imagenet, arch: resnet50, "
        f"sha256: '{'0' * 64}', path: models/r50.pt}}]"))
    full = C.validate(C.load_presets([preset]), search_dirs=[REPO])
    assert full["external_dense"] and C.load_presets([preset, SMOKE])["external_dense"] == []


# ------------------------------------------------------------------ jobs per (target, preset)
LEARNERS = {"hydra", "harp", "rst"}  # the methods that learn scores (S2AP applies)


def expected_counts(name: str, target: str, seeds: int = 3) -> dict[str, int]:
    """The jobs a target runs, by hand from the preset's grid (independent of the code)."""
    want = PAPER[name]
    cells = len(want["archs"]) * len(want["sparsities"]) * seeds
    if target == "all":
        methods, values = want["methods"], len(want["s2ap"])
    else:
        table = target.split("_", 1)[1]
        methods = (["rst", "lamp", "lwm", "random"] if table == "baselines"
                   else [m for m in want["methods"] if m in ("hydra", "harp")])
        values = 4 if table == "ablation" else 2  # off, score, awp, on / off, on
    # RST takes no finetune: its score variant is its on variant and its awp its off variant, so
    # it runs at most off and on (benchmark.core.config.effective_variant)
    evaluate = sum((min(values, 2) if m == "rst" else values) if m in LEARNERS else 1
                   for m in methods) * cells
    prune = sum(2 if m in LEARNERS else 1 for m in methods) * cells  # off/awp, on/score share
    # dense models per (arch, seed): one per pretrain recipe among the methods that pretrain.
    # HYDRA's recipe is shared by LAMP, LWM and random, HARP has its own (PGD-AT, wd 5e-4); the
    # structured and ImageNet presets give every method one recipe; RST pretrains nothing
    one_recipe = name in ("paper_cifar10_structured", "paper_svhn_structured", "paper_imagenet")
    recipes = {"harp" if m == "harp" and not one_recipe else "shared"
               for m in (methods if target != "all" else want["methods"]) if m != "rst"}
    out = {"pretrain": len(recipes) * len(want["archs"]) * seeds, "prune": prune,
           "finetune": evaluate, "evaluate": evaluate, target: 1}
    if target == "all":
        out.update(evaluate_dense=len(want["archs"]) * seeds, aggregate=1)
    else:
        out["figure" if target.startswith("figure_") else "table"] = 1
    return out


PAIRS = [(name, t) for name in sorted(PAPER)
         for t in ["all", *(tables.KINDS[k].target for k in PAPER[name]["tables"])]]


@pytest.mark.parametrize("name,target", PAIRS)
def test_the_plan_of_each_target_has_the_expected_jobs(name, target):
    assert estimate.plan(load(name), [target], [REPO]).counts() == expected_counts(name, target)


@pytest.mark.parametrize("name,target", PAIRS)
def test_the_smoke_form_of_each_target_runs_the_same_jobs_for_one_seed(name, target):
    assert estimate.plan(load(name, SMOKE), [target], [REPO]).counts() == \
        expected_counts(name, target, seeds=1)


def _dry_run_jobs(name: str, targets: list[str], cwd: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd),
           "-n", "--cores", "1", *targets, "--configfile", str(PRESETS / f"{name}.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs, job = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {"rule": m.group(1), "input": [], "output": []}
            jobs.append(job)
        elif job is not None and re.match(r"^    (input|output): ", line):
            key, _, files = line.strip().partition(": ")
            job[key] = files.split(", ")
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER))
def test_dry_run_runs_the_expected_jobs_for_each_target(name, tmp_path):
    """One dry run per preset with all its targets; each target's jobs are its ancestors in the
    DAG that dry run prints."""
    targets = [t for n, t in PAIRS if n == name]
    jobs = _dry_run_jobs(name, targets, tmp_path)
    producer = {f: i for i, j in enumerate(jobs) for f in j["output"]}
    for target in targets:
        roots = [i for i, j in enumerate(jobs) if j["rule"] == target]
        assert len(roots) == 1, target
        todo, seen = list(roots), set()
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            todo += [producer[f] for f in jobs[i]["input"] if f in producer]
        counts = Counter(jobs[i]["rule"] for i in seen)
        assert dict(counts) == expected_counts(name, target), target


@pytest.mark.slow
def test_a_table_the_preset_does_not_feed_names_the_ones_it_does(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "-n", "--cores", "1", "table_structured", "--configfile",
           str(PRESETS / "paper_svhn.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "feeds no structured table" in proc.stdout + proc.stderr
    assert "main, ablation" in proc.stdout + proc.stderr


def test_docs_map_every_target_to_the_presets_that_feed_it():
    text = (REPO / "docs" / "paper_tables.md").read_text()
    feeds = defaultdict(set)
    for name, want in PAPER.items():
        for table in want["tables"]:
            feeds[tables.KINDS[table].target].add(name)
    rows = {m.group(1): set(re.findall(r"`(paper_\w+)`", m.group(2)))
            for m in re.finditer(r"^\| `(\w+)` \|[^|]*\|([^|]*)\|", text, re.M)}
    assert {k: v for k, v in rows.items() if k in feeds} == dict(feeds)
    assert set(feeds) == {k.target for k in tables.KINDS.values()}
    # the method-name mapping is the one table of benchmark/results/reference.py
    mapping = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|$", text, re.M))
    assert mapping == reference.METHOD_NAMES


@pytest.mark.slow
def test_the_smoke_form_sends_each_search_and_its_downstream_jobs_as_one_cluster_job(tmp_path):
    import importlib.util

    if importlib.util.find_spec("snakemake_executor_plugin_cluster_generic") is None:
        pytest.skip("snakemake-executor-plugin-cluster-generic not installed (pip install -e '.[cluster]')")

    def groups(*configfiles):
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
               str(tmp_path), "-n", "--profile", str(REPO / "workflows/profiles/cluster-generic-local"),
               "table_structured", "--configfile", *map(str, configfiles)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return re.findall(r"Group job (cell-\S+) ", proc.stdout + proc.stderr)

    smoke = groups(PRESETS / "paper_cifar10_structured.yaml", SMOKE)
    # one group per mask search: 3 archs x 3 sparsities x (off, on), one seed
    assert len(set(smoke)) == 18 and "cell-cifar10-resnet18-harp-on-sp50-seed0" in smoke
    assert groups(PRESETS / "paper_cifar10_structured.yaml") == []  # the full preset: one job each


@pytest.mark.parametrize("name", sorted(PAPER))
def test_no_two_planned_cells_have_the_same_effective_config(name):
    """A variant that changes nothing for a method (RST: no finetune, so no AWP) is planned once:
    every cell's config hash and seed are unique, and paper_cifar10 evaluates RST 54 times, not
    108 (3 archs x 3 sparsities x 3 seeds x off/on)."""
    cfg = load(name)
    cells = C.grid_cells(cfg)
    keys = [(C.cell_config_hash(cfg, c, c["traits"]), c["seed"]) for c in cells]
    assert len(keys) == len(set(keys))
    if name == "paper_cifar10":
        rst = [c for c in cells if c["method"] == "rst"]
        assert len(rst) == 54 and {c["s2ap"] for c in rst} == {"off", "on"}
