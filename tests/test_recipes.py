"""The recipe ledger (benchmark/recipe_ledger.yaml): every paper preset holds the published value
or a declared deviation, field by field; bad input is refused before any job; docs/recipes.md is
the page the ledger generates."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from benchmark.core import config as C
from benchmark.core import recipes

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
PAPER = sorted(p.stem for p in PRESETS.glob("paper_*.yaml"))


def raw(name: str) -> dict:
    return C.load_presets([PRESETS / f"{name}.yaml"])


def traits_of(cfg: dict) -> dict:
    registry = C.methods_of(cfg)
    return {m: registry.traits(m) for m in cfg["grid"]["methods"]}


def validate(cfg: dict) -> dict:
    return C.validate(cfg, search_dirs=[REPO])


@pytest.mark.parametrize("name", PAPER)
def test_every_paper_preset_holds_the_ledgers_values_or_its_declared_deviations(name):
    cfg = validate(raw(name))
    assert cfg["recipe_ledger"] == "strict"
    problems, deviations = recipes.check_preset(cfg, traits_of(cfg), C.stage_config)
    assert problems == []
    # every training stage the preset runs has its ledger entry, so no value goes unchecked
    assert all(recipes.entry(d, m, s) is not None
               for d, m, s in recipes._cells(cfg, traits_of(cfg)))
    assert all(d.reason for d in deviations)


def test_a_value_that_contradicts_the_ledger_is_refused_before_any_job():
    cfg = raw("paper_cifar10")
    cfg["methods"]["rst"]["prune"]["schedule"] = "cosine"  # the finding
    with pytest.raises(C.ConfigError, match=r"cifar10/rst/prune.schedule is cosine, but the published value is step"):
        validate(cfg)
    cfg = raw("paper_imagenet")
    cfg["pretrain"]["weight_decay"] = 5e-4
    with pytest.raises(C.ConfigError, match=r"imagenet/hydra/pretrain.weight_decay"):
        validate(cfg)


def test_a_declared_deviation_must_be_the_value_the_preset_holds():
    cfg = raw("paper_svhn")
    cfg["data"]["val_size"] = 2000  # neither the public split nor the declared holdout of 1,000
    with pytest.raises(C.ConfigError, match=r"split is holdout_2000, but the declared deviation is holdout_1000"):
        validate(cfg)


def test_a_method_option_set_against_the_ledger_is_refused():
    cfg = raw("paper_imagenet")
    cfg["methods"]["harp"]["options"]["gamma"] = 0.01
    with pytest.raises(C.ConfigError, match=r"methods.harp.options.gamma is 0.01, but the ledger says 0.1"):
        validate(cfg)


def test_the_smoke_overlay_marks_but_does_not_check():
    cfg = validate(C.load_presets([PRESETS / "paper_cifar10.yaml", PRESETS / "smoke.yaml"]))
    assert cfg["recipe_ledger"] == "marks"
    marks = recipes.deviations_by_method(cfg, traits_of(cfg), C.stage_config)
    assert {"hydra", "harp", "rst", "lamp"} <= set(marks)
    assert any("keep best_val" in line for line in marks["rst"])


def test_quick_and_offline_presets_do_not_follow_the_ledger():
    for name in ("quick", "offline", "tiny"):
        cfg = validate(raw(name))
        assert recipes.mode(cfg) == "off" and recipes.startup_lines(cfg, traits_of(cfg), C.stage_config) == []


def test_keep_best_val_without_a_validation_split_is_refused():
    cfg = raw("paper_cifar10")
    cfg["data"]["val_size"] = 0
    cfg["recipe_ledger"] = "off"
    with pytest.raises(C.ConfigError, match=r"keep: best_val selects the epoch on the validation split"):
        validate(cfg)


def test_free_adversarial_training_with_no_replay_is_refused():
    cfg = raw("paper_imagenet")
    cfg["pretrain"]["free_replays"] = 0
    with pytest.raises(C.ConfigError, match=r"free_replays"):
        validate(cfg)


def test_startup_lines_list_each_declared_deviation_once():
    cfg = validate(raw("paper_svhn"))
    lines = recipes.startup_lines(cfg, traits_of(cfg), C.stage_config)
    assert "declared deviation" in lines[0]
    assert any("svhn/hydra/pretrain: augmentation crop4 (published crop4_flip)" in x for x in lines)
    assert len(lines) == len(set(lines))


def test_docs_recipes_md_is_the_page_the_ledger_generates():
    assert (REPO / "docs" / "recipes.md").read_text() == recipes.render(), \
        "run: python -m benchmark.core.recipes --write docs/recipes.md"
    assert recipes.main(["--check", str(REPO / "docs" / "recipes.md")]) == 0


def test_every_ledger_value_names_a_known_source_or_why_it_has_none():
    ledger = recipes.load_ledger()
    for e in ledger["recipes"]:
        for field, spec in e["fields"].items():
            assert spec.get("source") in ledger["sources"] or spec.get("not_public"), (e, field)


def test_s2aps_own_values_say_they_are_not_public_and_point_to_the_sweep():
    s2ap = recipes.load_ledger()["s2ap"]
    assert s2ap["gamma"]["value"] is None
    assert "results/published/offline/gamma_sweep.md" in s2ap["gamma"]["not_public"]
    assert s2ap["norm"]["value"] is None and s2ap["norm"]["not_public"]
    assert (REPO / "results" / "published" / "offline" / "gamma_sweep.md").is_file()


def test_our_augmentation_words_match_the_transforms():
    from benchmark.core.datasets import _transforms

    for dataset, word in recipes.AUGMENTATION.items():
        train, _ = _transforms(dataset, augment=True)
        assert ("RandomHorizontalFlip" in repr(train)) == word.endswith("flip"), dataset


def test_harps_default_options_are_the_ledgers_values_or_declared_deviations():
    from methods.harp import Harp

    defaults = Harp(0.9).options
    opts = recipes.load_ledger()["options"]["harp"]
    assert defaults["class_floor"] == opts["class_floor"]["ours"]
    assert defaults["gamma"] == opts["gamma"]["cifar10"]["value"]


def test_a_ledger_field_without_a_reason_for_its_deviation_is_rejected(tmp_path):
    import yaml

    ledger = copy.deepcopy(recipes.load_ledger())
    ledger["recipes"][0]["fields"]["lr"] = {"value": 0.1, "source": "hydra-cfg", "ours": 0.2}
    path = tmp_path / "ledger.yaml"
    path.write_text(yaml.safe_dump(ledger))
    recipes.load_ledger.cache_clear()
    try:
        with pytest.raises(recipes.LedgerError, match="needs its reason"):
            recipes.load_ledger(str(path))
    finally:
        recipes.load_ledger.cache_clear()


def test_the_method_and_table_docs_state_what_the_ledger_says():
    methods_md = " ".join((REPO / "docs" / "methods.md").read_text().split())
    tables_md = " ".join((REPO / "docs" / "paper_tables.md").read_text().split())
    ledger = recipes.load_ledger()
    imagenet = recipes.entry("imagenet", "harp", "pretrain")["fields"]
    assert imagenet["loss"]["value"] == "free" and imagenet["free_replays"]["value"] == 4
    assert "free adversarial training with cross-entropy (not TRADES), m = 4 replays" in methods_md
    assert imagenet["weight_decay"]["value"] == 1e-4
    assert "weight decay 1e-4 (not CIFAR's 5e-4)" in methods_md
    rst = recipes.entry("cifar10", "rst", "prune")["fields"]
    assert rst["milestones"]["value"] == [80, 120] and "x0.1 at epoch 80 and again at 120 of 160" in methods_md
    assert ledger["options"]["harp"]["class_floor"]["ours"] is True and "The class floor" in methods_md
    assert ledger["options"]["harp"]["channel_score_norm"]["value"] == "l1" and "public: L1" in methods_md
    assert "docs/recipes.md" in methods_md and "recipe_ledger: strict" in methods_md
    assert "† recipe differs" in tables_md and tables_md.count("RobustBench's 5,000") == 1
    assert "54 RST evaluations, not 108" in tables_md


def test_an_evaluation_of_a_ledger_preset_carries_its_recipes_deviations_and_the_row_is_flagged():
    from benchmark.results import flags

    cfg = validate(raw("paper_cifar10"))
    cells = C.grid_cells(cfg)
    rst = next(c for c in cells if c["method"] == "rst")
    devs = C.cell_json(cfg, rst)["recipe_deviations"]
    assert any("cifar10/rst/prune: keep best_val" in d for d in devs)
    dense = C.dense_cells(cfg, cells)[0]
    assert all("/pretrain: " in d for d in C.cell_json(cfg, dense)["recipe_deviations"])
    quick = validate(raw("quick"))
    assert "recipe_deviations" not in C.cell_json(quick, C.grid_cells(quick)[0])
    assert flags.BY_NAME["recipe-differs"].code == "R"


def test_the_leaderboard_flags_rows_whose_recipe_deviates(tmp_path):
    import importlib.util

    from benchmark.results.aggregate import build_tables

    spec = importlib.util.spec_from_file_location("aggregate_fixtures", REPO / "tests" / "test_aggregate.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    files = [fx.write_result(tmp_path, method="hydra",
                             cell_extra={"recipe_deviations": ["cifar10/hydra/finetune: keep best_val"]}),
             fx.write_result(tmp_path, method="harp")]
    df, _, _ = build_tables(files)
    flag = dict(zip(df["method"], df["flag"]))
    assert "recipe-differs" in flag["hydra"] and "recipe-differs" not in flag["harp"]
