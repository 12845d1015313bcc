"""The leaderboard: pooling, intervals, the S2AP table, and what it refuses to believe.

Every fixture is a result file written by the suite's own writer (benchmark.core.result_file): a real
evaluate_model run (on a model that gets every image wrong, so that no attack runs and it takes
milliseconds) whose counts and flags are then set to the values a test needs, a sparsity measured
by benchmark.core.masking.measure_sparsity, and real provenance. The files therefore have exactly the
format the evaluation stage writes.
"""
import copy
import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from publishing_fixtures import _sparsity  # one builder for both fixture modules

from benchmark.core import masking
from benchmark.core import result_file as results
from benchmark.core.provenance import provenance
from benchmark.core.stats import mcnemar, wilson_interval
from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval
from benchmark.results.aggregate import AggregationError, aggregate, build_tables, read_leaderboard
from benchmark.results.plots import plot_diagnostics, plot_leaderboard

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


def flags(n, correct, offset=0):
    """n flags with `correct` ones, rotated by offset so that two runs can disagree per image."""
    s = ["1"] * correct + ["0"] * (n - correct)
    s = s[offset:] + s[:offset]
    return "".join(s)


class AlwaysWrong(nn.Module):
    """Predicts class 0 for labels that are all 1: nothing to attack, so evaluation is instant."""

    def forward(self, x):
        # logits, not probabilities: AutoAttack's output check would warn
        return 5.0 * torch.nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 10) - 2.0


@functools.cache
def _evaluation(n, eps, attacks, version):
    """(the evaluate config, evaluate_model's output) for n images."""
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.ones(n, dtype=torch.long)
    ecfg = {"eps": eps, "pgd_steps": 50, "pgd_step_size": None, "pgd_seed": 0, "clean_n": None,
            "pgd_n": None, "batch_size": 256,
            "autoattack": {"n_images": None, "version": version, "attacks": list(attacks),
                           "batch_size": 250, "shard_size": None, "seed": 0}}
    return ecfg, evaluate_model(prepare_for_eval(AlwaysWrong()), (x, y), ecfg, progress=False)


def _set(ev, name, f):
    m = ev["metrics"][name]
    m["correct"], m["acc"] = f.count("1"), f.count("1") / len(f)
    ev["flags"][name] = f


def _union_filled(base, count):
    """base's ones, plus the first zeros turned to ones until there are count ones."""
    out, need = list(base), count - base.count("1")
    assert need >= 0, "the test asks for fewer ones than its attacks keep"
    for i, c in enumerate(out):
        if need and c == "0":
            out[i], need = "1", need - 1
    return "".join(out)


def write_result(root, dataset="cifar10", arch="resnet18", method="hydra", s2ap="off",
                 sparsity=90, seed=0, clean=80, pgd=50, aa=40, n=100, eps=0.031,
                 version="standard", attacks=STANDARD, warnings=(), lowered_by=(), aa_flags=None,
                 pgd_flags=None, diagnostics=None, extra_config=None, structure="unstructured",
                 config_hash=None, prov=None, search=None, class_balance=None, cell_extra=None):
    ecfg, ev = copy.deepcopy(_evaluation(n, eps, tuple(attacks), version))
    aa_f = aa_flags if aa_flags is not None else flags(n, aa)
    pgd_f = pgd_flags if pgd_flags is not None else _union_filled(aa_f, pgd)
    clean_f = _union_filled("".join("1" if "1" in (a, p) else "0" for a, p in zip(aa_f, pgd_f)),
                            clean)
    for name, f in (("clean", clean_f), ("pgd", pgd_f), ("autoattack", aa_f)):
        _set(ev, name, f)
    ev["metrics"]["autoattack"].update(warnings=list(warnings), lowered_by=list(lowered_by),
                                       lowered_after_apgd=bool(lowered_by))
    configs = {"evaluate": {"evaluate": ecfg, "data": {}, "model": {}, "runtime": {}},
               "finetune": {"method": {"name": method, "options": {}}}, **(extra_config or {})}
    cell = {"dataset": dataset, "arch": arch, "method": method, "s2ap": s2ap,
            "sparsity": float(sparsity), "seed": seed, "preset": None, **(cell_extra or {})}
    record = results.build_record(
        cell=cell, structure=structure, configs=configs, evaluation=ev,
        sparsity=_sparsity(sparsity), timing={}, diagnostics=diagnostics or {}, history={},
        provenance=prov or provenance(), config_hash=config_hash, search=search,
        class_balance=class_balance)
    s2ap_dir = s2ap.replace("/", "-")
    path = Path(root) / dataset / arch / method / s2ap_dir / f"sp{sparsity}" / f"seed{seed}.json"
    results.write_result(path, record)
    return path


def dense(root, **kw):
    return write_result(root, method="dense", s2ap="n/a", sparsity=0, **kw)


def edit(path, change):
    record = json.loads(Path(path).read_text())
    change(record)
    Path(path).write_text(json.dumps(record))


def test_a_fixture_built_by_the_writer_validates_against_the_schema(tmp_path):
    import jsonschema

    path = write_result(tmp_path)
    record = json.loads(path.read_text())
    jsonschema.Draft202012Validator(results.load_schema()).validate(record)
    assert results.check_record(record) == []
    assert record["structure"] == "unstructured" and record["schema_version"] == 2


def test_leaderboard_rows_pooling_and_files(tmp_path):
    runs, out = tmp_path / "results" / "quick" / "runs", tmp_path / "out"
    dense(runs, clean=90, pgd=55, aa=45)
    write_result(runs, seed=0, aa=40, clean=80)
    write_result(runs, seed=1, aa=44, clean=82)
    write_result(runs, method="lwm", s2ap="n/a", sparsity=95, aa=30, warnings=["w"],
                 lowered_by=["square"])
    df = aggregate(runs, out)
    assert df.iloc[0]["method"] == "dense" and df.iloc[0]["s2ap"] == "n/a"
    hydra = df[df["method"] == "hydra"].iloc[0]
    assert hydra["n_seeds"] == 2
    assert hydra["autoattack"] == pytest.approx(42.0)
    assert hydra["autoattack_std"] == pytest.approx(math.sqrt(8.0))
    lo, hi = wilson_interval(84, 200)
    assert (hydra["autoattack_lo"], hydra["autoattack_hi"]) == pytest.approx((100 * lo, 100 * hi))
    assert hydra["autoattack_n"] == 100
    assert hydra["sparsity_measured"] == pytest.approx(90.0)
    assert hydra["sparsity_mask"] == pytest.approx(90.0)
    assert hydra["structure"] == "unstructured"
    assert "dirty" in df.columns and "stale" in df.columns and not hydra["stale"]
    lwm = df[df["method"] == "lwm"].iloc[0]
    assert math.isnan(lwm["autoattack_std"])
    assert "warnings" in lwm["flag"] and "lowered-after-apgd:square" in lwm["flag"]

    csv = read_leaderboard(out / "leaderboard.csv")
    assert list(csv["method"]) == list(df["method"])
    assert list(csv["s2ap"]) == ["n/a", "off", "n/a"]  # not read back as NaN
    md = (out / "leaderboard.md").read_text()
    assert md.startswith("# Leaderboard: quick")
    assert "eps = 0.0310" in md and "standard" in md
    lwm_line = next(line for line in md.splitlines() if "| lwm" in line)
    assert "—" in lwm_line  # single seed: no std
    assert "S2AP: original vs S2AP" not in md  # no cell with both off and on
    assert "Excluded" not in md and not (out / "excluded.csv").exists()
    assert not list(out.glob(".*"))


def test_one_table_shares_eps_and_images_and_seeds_share_the_attack_set(tmp_path):
    write_result(tmp_path / "a", seed=0, eps=0.031)
    write_result(tmp_path / "a", seed=1, eps=0.031)
    odd = write_result(tmp_path / "a", method="lwm", s2ap="n/a", eps=0.1)
    with pytest.raises(AggregationError, match=rf"{odd}: rule 'table': eps 0.1 differs"):
        aggregate(tmp_path / "a", tmp_path / "o")
    assert not (tmp_path / "o" / "leaderboard.csv").exists()
    df = aggregate(tmp_path / "a", tmp_path / "o", exclude_invalid=True)
    assert list(df["method"]) == ["hydra"]
    assert df.attrs["excluded"][0]["file"] == str(odd)

    write_result(tmp_path / "b", seed=0, n=100)
    write_result(tmp_path / "b", seed=1, n=100)
    write_result(tmp_path / "b", method="lwm", s2ap="n/a", n=50, clean=40, pgd=30, aa=20)
    with pytest.raises(AggregationError, match="clean image count 50 differs from 100"):
        aggregate(tmp_path / "b", tmp_path / "o")

    # two seeds of one configuration (hash) that ran different attack sets are not pooled
    write_result(tmp_path / "c", seed=0, config_hash="samehash")
    write_result(tmp_path / "c", seed=1, attacks=["apgd-ce"], config_hash="samehash")
    with pytest.raises(AggregationError, match="attack set"):
        aggregate(tmp_path / "c", tmp_path / "o2")
    assert not (tmp_path / "o2" / "leaderboard.csv").exists()


def test_different_configs_are_separate_rows(tmp_path):
    write_result(tmp_path, seed=0, extra_config={"prune": {"lr": 0.1}})
    write_result(tmp_path / "other", seed=0, extra_config={"prune": {"lr": 0.01}})
    df = aggregate(tmp_path, tmp_path / "o")
    assert len(df) == 2 and df["config_hash"].nunique() == 2


def test_s2ap_paired_table_with_mcnemar(tmp_path):
    runs = tmp_path / "runs"
    n = 200
    dense(runs, n=n, clean=180, pgd=100, aa=90)
    off, on = {}, {}
    for seed in (0, 1):
        off[seed] = flags(n, 80)
        on[seed] = flags(n, 95, offset=10)
        write_result(runs, s2ap="off", seed=seed, n=n, clean=120, pgd=100, aa=80, aa_flags=off[seed])
        write_result(runs, s2ap="on", seed=seed, n=n, clean=120, pgd=100, aa=95, aa_flags=on[seed])
    write_result(runs, s2ap="on", seed=2, n=n, clean=120, pgd=100, aa=97)  # unpaired seed
    write_result(runs, method="lwm", s2ap="n/a", n=n, clean=120, pgd=100, aa=70)
    df = aggregate(runs, tmp_path / "out")
    assert list(df["s2ap"][df["method"] == "hydra"]) == ["off", "on"]
    pairs = read_leaderboard(tmp_path / "out" / "s2ap_paired.csv")
    hydra = pairs[pairs["method"] == "hydra"].iloc[0]
    assert hydra["orig_aa"] == pytest.approx(40.0)
    assert hydra["s2ap_aa"] == pytest.approx(100 * (95 + 95 + 97) / 3 / n)
    expected = mcnemar(off[0] + off[1], on[0] + on[1])
    assert hydra["p_value"] == pytest.approx(expected["p_value"])
    assert hydra["paired_seeds"] == 2
    lwm = pairs[pairs["method"] == "lwm"].iloc[0]
    assert not lwm["s2ap_applicable"] and math.isnan(lwm["s2ap_aa"])
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "S2AP: original vs S2AP" in md and "Orig. AA" in md
    lwm_line = next(line for line in md.split("S2AP: original")[1].splitlines() if "| lwm" in line)
    assert "n/a" in lwm_line


@pytest.mark.slow
def test_the_seed_level_interval_of_three_seeds_equals_a_hand_computation(tmp_path):
    from scipy import stats as scipy_stats

    runs, n = tmp_path / "runs", 400
    aa = {"off": (100, 140, 120), "on": (110, 130, 150)}
    pgd = {"off": (150, 190, 170), "on": (160, 200, 175)}
    for side in ("off", "on"):
        for seed in range(3):
            write_result(runs, s2ap=side, seed=seed, n=n, clean=300, pgd=pgd[side][seed],
                         aa=aa[side][seed], aa_flags=flags(n, aa[side][seed], offset=7 * seed))
    aggregate(runs, tmp_path / "out")
    pair = read_leaderboard(tmp_path / "out" / "s2ap_paired.csv").iloc[0]
    for metric, suffix in ((aa, ""), (pgd, "_pgd")):
        deltas = [100 * (metric["on"][s] - metric["off"][s]) / n for s in range(3)]
        mean = sum(deltas) / 3
        sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / 2)
        half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert pair[f"delta{suffix}_seed_mean"] == pytest.approx(mean)
        assert pair[f"delta{suffix}_lo"] == pytest.approx(mean - half)
        assert pair[f"delta{suffix}_hi"] == pytest.approx(mean + half)
        assert pair[f"delta{suffix}"] == pytest.approx(mean)  # every seed paired
    assert pair["seed_deltas"] == "+2.50 -2.50 +7.50"
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert f"[{mean - half:+.2f}, {mean + half:+.2f}]" in md
    assert "95% CI over seeds" in md and "McNemar p" in md and "do not read it as the effect" in md


def test_fewer_than_three_paired_seeds_give_no_interval(tmp_path):
    for side in ("off", "on"):
        for seed in range(2):
            write_result(tmp_path, s2ap=side, seed=seed, aa=40 + seed + 5 * (side == "on"))
    _, pairs, md = build_tables(tmp_path)
    assert math.isnan(pairs.iloc[0]["delta_lo"]) and pairs.iloc[0]["delta_seed_mean"] == pytest.approx(5.0)
    line = next(line for line in md.split("S2AP: original")[1].splitlines() if "| hydra" in line)
    assert "| —" in line


BALANCE = {"val_majority_share": 0.11, "test_majority_share": 0.10}
LEARNED = {"learns_scores": True, "projected": False}


def test_a_degenerate_seed_is_flagged_and_left_out_of_the_delta_table(tmp_path):
    runs, n = tmp_path / "runs", 100
    for seed in range(3):
        write_result(runs, s2ap="off", seed=seed, n=n, clean=80, pgd=50, aa=40, search=LEARNED,
                     class_balance=BALANCE, diagnostics={"mask_clean_acc": 0.6})
    # seed 1 of 'on': its search left a mask no better than the majority class (a failed run), and
    # its finetune could not repair it
    write_result(runs, s2ap="on", seed=0, n=n, clean=80, pgd=52, aa=42, search=LEARNED,
                 class_balance=BALANCE, diagnostics={"mask_clean_acc": 0.6})
    write_result(runs, s2ap="on", seed=1, n=n, clean=11, pgd=0, aa=0, search=LEARNED,
                 class_balance=BALANCE, diagnostics={"mask_clean_acc": 0.12})
    write_result(runs, s2ap="on", seed=2, n=n, clean=80, pgd=54, aa=44, search=LEARNED,
                 class_balance=BALANCE, diagnostics={"mask_clean_acc": 0.6})
    # a fixed-rule mask is not judged before its finetune; a learned one is, even if the finetune
    # brought it back
    write_result(runs, method="lwm", s2ap="n/a", n=n, clean=70, pgd=40, aa=30, class_balance=BALANCE,
                 search={"learns_scores": False}, diagnostics={"mask_clean_acc": 0.1})
    write_result(runs, method="harp", s2ap="off", n=n, clean=70, pgd=40, aa=30, class_balance=BALANCE,
                 search=LEARNED, diagnostics={"mask_clean_acc": 0.12})
    df = aggregate(runs, tmp_path / "out")
    flag = dict(zip(zip(df["method"], df["s2ap"]), df["flag"]))
    assert "degenerate:1/3" in flag[("hydra", "on")] and "degenerate" not in flag[("hydra", "off")]
    assert "degenerate" not in flag[("lwm", "n/a")] and "degenerate:1/1" in flag[("harp", "off")]
    # shown in the leaderboard, mean over every seed ...
    on_row = df[(df["method"] == "hydra") & (df["s2ap"] == "on")].iloc[0]
    assert on_row["autoattack"] == pytest.approx((42 + 0 + 44) / 3) and on_row["degenerate_seeds"] == 1
    # ... but not in the comparison: seeds 0 and 2 only
    pair = read_leaderboard(tmp_path / "out" / "s2ap_paired.csv")
    pair = pair[pair["method"] == "hydra"].iloc[0]
    assert pair["s2ap_aa"] == pytest.approx(43.0) and pair["orig_aa"] == pytest.approx(40.0)
    assert pair["paired_seeds"] == 2 and pair["seed_deltas"] == "+2.00 +4.00"
    assert pair["left_out"] == "on: seed 1"
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "on: seed 1" in md.split("S2AP: original")[1]


def test_a_projected_search_is_flagged(tmp_path):
    write_result(tmp_path, method="harp", search={"learns_scores": True, "projected": True,
                                                  "realised_before": 0.039, "target": 0.01})
    write_result(tmp_path, method="hydra", search=LEARNED)
    df = aggregate(tmp_path, tmp_path / "out")
    flag = dict(zip(df["method"], df["flag"]))
    assert "projected:1/1" in flag["harp"] and "projected" not in flag["hydra"]
    assert "**J** (projected): K of N HARP searches" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_the_header_names_the_methods_whose_masks_had_the_unit_floor(tmp_path):
    write_result(tmp_path, method="hydra", search={**LEARNED, "unit_floor_added": 17})
    write_result(tmp_path, method="random", search={"learns_scores": False, "unit_floor_added": 17})
    write_result(tmp_path, method="lwm", search={"learns_scores": False})
    aggregate(tmp_path, tmp_path / "out")
    header = (tmp_path / "out" / "leaderboard.md").read_text().split("## Leaderboard")[0]
    assert "Unit floor (every output unit keeps at least one weight" in header
    assert header.split("on for: ")[1].splitlines()[0] == "hydra, random"
    df = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    flag = dict(zip(df["method"], df["flag"]))
    assert "unit-floor" in flag["hydra"] and "unit-floor" in flag["random"]
    assert not isinstance(flag["lwm"], str) or "unit-floor" not in flag["lwm"]


def test_s2ap_pair_refuses_different_attack_sets(tmp_path):
    write_result(tmp_path, s2ap="off")
    write_result(tmp_path, s2ap="on", attacks=["apgd-ce"])
    with pytest.raises(AggregationError, match="compare"):
        aggregate(tmp_path, tmp_path / "o")


def _reference(tmp_path):
    # the protocol of the fixture results: eps 0.031, AutoAttack on 100 images
    path = tmp_path / "ref.csv"
    path.write_text("# Source: Piras et al., adversarial pruning benchmark\n"
                    "dataset,structure,method,arch,sparsity,eps,n_images,clean,autoattack\n"
                    "cifar10,unstructured,HYDRA,resnet18,90,0.031,100,76.74,43.34\n"
                    "cifar10,structured,HYDRA,resnet18,90,0.031,100,70.00,30.00\n")
    return path


def test_reference_columns_follow_the_structure_label(tmp_path):
    write_result(tmp_path / "runs", method="hydra", arch="resnet18", sparsity=90)
    write_result(tmp_path / "runs" / "s", method="hydra", arch="resnet18", sparsity=90,
                 structure="structured", extra_config={"prune": {"structured": True}})
    df = aggregate(tmp_path / "runs", tmp_path / "o", reference_csv=_reference(tmp_path))
    by = {row["structure"]: row for _, row in df.iterrows()}
    assert by["unstructured"]["ref_autoattack"] == pytest.approx(43.34)
    assert by["unstructured"]["ref_clean"] == pytest.approx(76.74)
    assert by["structured"]["ref_autoattack"] == pytest.approx(30.0)
    md = (tmp_path / "o" / "leaderboard.md").read_text()
    assert "Ref. AA" in md and "Piras" in md


def test_pgd_breaking_an_autoattack_robust_image_is_counted_not_refused(tmp_path):
    # AutoAttack keeps images 0-39, PGD breaks images 0 and 1 of them
    write_result(tmp_path, aa=40, pgd_flags="00" + "1" * 48 + "0" * 50)
    df = aggregate(tmp_path, tmp_path / "o")
    assert df.iloc[0]["aa_robust_pgd_broken"] == 2
    assert "pgd-broke-aa-robust:2" in df.iloc[0]["flag"]


def test_dirty_and_stale_results_are_flagged(tmp_path):
    prov = provenance()
    write_result(tmp_path, seed=0, prov={**prov, "git": {**prov["git"], "dirty": True,
                                                          "dirty_files": ["methods/hydra.py"]}})
    write_result(tmp_path, method="lwm", s2ap="n/a", prov={**prov, "stage_code": "0" * 16,
                                                           "git": {**prov["git"], "dirty": False}})
    df = aggregate(tmp_path, tmp_path / "o").set_index("method")
    assert df.loc["hydra", "dirty"] and not df.loc["hydra", "stale"]
    assert "dirty-tree" in df.loc["hydra", "flag"]
    assert df.loc["lwm", "stale"] and not df.loc["lwm", "dirty"]
    assert "stale-code" in df.loc["lwm", "flag"]


def _tamper_correct_200_of_64(r):
    r["metrics"]["clean"]["correct"] = 200


def _tamper_aa_flags_above_clean(r):
    clean = r["flags"]["clean"]
    wrong = clean.index("0")  # an image the model gets wrong...
    aa = list(r["flags"]["autoattack"])
    aa[wrong] = "1"           # ...made robust to AutoAttack, counts kept consistent
    r["flags"]["autoattack"] = "".join(aa)
    m = r["metrics"]["autoattack"]
    m["correct"] += 1
    m["acc"] = m["correct"] / m["n"]


def _tamper_no_cell(r):
    del r["cell"]


def _tamper_flags_wrong_length(r):
    r["flags"]["pgd"] = r["flags"]["pgd"] + "0"


def _tamper_half_eps_attack(r):
    r["metrics"]["autoattack"]["attack_params"]["apgd-ce"]["eps"] /= 2


def _tamper_fewer_images(r):
    m, f = r["metrics"]["autoattack"], r["flags"]["autoattack"][:32]
    r["flags"]["autoattack"] = f
    m.update(n=32, correct=f.count("1"), acc=f.count("1") / 32)


def _tamper_nonzero_outside_mask(r):
    r["sparsity"]["zeros"] -= 5
    r["sparsity"]["measured"] = r["sparsity"]["zeros"] / r["sparsity"]["total"]
    layer = next(iter(r["sparsity"]["layers"].values()))
    layer["zeros"] -= 5
    layer["sparsity"] = layer["zeros"] / layer["total"]


def _tamper_old_format(r):
    r["schema_version"] = 1


@pytest.mark.parametrize("tamper,rule", [
    (_tamper_correct_200_of_64, "counts"),
    (_tamper_aa_flags_above_clean, "robust-implies-clean"),
    (_tamper_no_cell, "schema"),
    (_tamper_flags_wrong_length, "flags"),
    (_tamper_half_eps_attack, "eps"),
    (_tamper_fewer_images, "protocol"),
    (_tamper_nonzero_outside_mask, "sparsity"),
    (_tamper_old_format, "schema_version"),
])
def test_a_tampered_result_stops_the_aggregation_or_is_listed_as_excluded(tmp_path, tamper, rule):
    runs, out = tmp_path / "runs", tmp_path / "out"
    dense(runs, n=64, clean=50, pgd=30, aa=20)
    bad = write_result(runs, n=64, clean=40, pgd=20, aa=10)
    aggregate(runs, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    edit(bad, tamper)
    with pytest.raises(AggregationError) as err:
        aggregate(runs, out)
    assert str(bad) in str(err.value) and f"rule '{rule}'" in str(err.value)
    # the failed aggregation left the previous leaderboard in place
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    df = aggregate(runs, out, exclude_invalid=True)
    assert list(df["method"]) == ["dense"]
    assert [(e["file"], e["rule"]) for e in df.attrs["excluded"]] == [(str(bad), rule)]
    md = (out / "leaderboard.md").read_text()
    assert "## Excluded result files" in md and str(bad) in md
    excluded = read_leaderboard(out / "excluded.csv")
    assert list(excluded["file"]) == [str(bad)] and list(excluded["rule"]) == [rule]


def test_a_file_that_is_not_json_or_not_a_result_is_never_skipped(tmp_path):
    dense(tmp_path)
    (tmp_path / "notes.json").write_text('{"comment": "not a result"}')
    with pytest.raises(AggregationError, match=r"notes.json: rule 'schema'"):
        aggregate(tmp_path, tmp_path / "o")
    (tmp_path / "notes.json").write_text("{not json")
    with pytest.raises(AggregationError, match=r"notes.json: rule 'json'"):
        aggregate(tmp_path, tmp_path / "o")


def test_cli_aggregate_exclude_invalid(tmp_path, capsys):
    from benchmark.cli import main

    dense(tmp_path / "runs")
    bad = write_result(tmp_path / "runs")
    edit(bad, _tamper_no_cell)
    assert main(["aggregate", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                 "--no-plots"]) == 2
    assert "rule 'schema'" in capsys.readouterr().err
    assert main(["aggregate", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o"),
                 "--no-plots", "--exclude-invalid"]) == 0
    assert "excluded: 1 result file(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_plots_written_and_diagnostics_optional(tmp_path):
    runs = tmp_path / "runs"
    dense(runs)
    for sp in (90, 95):
        for s2ap in ("off", "on"):
            for seed in (0, 1):
                write_result(runs, sparsity=sp, s2ap=s2ap, seed=seed, aa=40 + seed,
                             diagnostics={"stability_random_r0.05": 0.1 * seed, "stability_worst_r0.05": 0.2,
                                          "stability_worst_r0.1": 0.3, "mask_robust_acc": 0.4,
                                          "diag_batch": 128})
    df = aggregate(runs, tmp_path / "o")
    pngs = plot_leaderboard(df, tmp_path / "plots")
    assert [p.name for p in pngs] == ["accuracy_cifar10_resnet18.png"]
    assert pngs[0].stat().st_size > 1000
    diag = plot_diagnostics(runs, tmp_path / "plots")
    assert [p.name for p in diag] == ["diagnostics_cifar10_resnet18.png"]
    assert diag[0].stat().st_size > 1000
    assert plot_diagnostics(df.drop(columns=[c for c in df if c.startswith("diag.")]),
                            tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def _s2ap_search_summary(gamma: float) -> dict:
    """S2AP's measurements from a real (short) 99 % HYDRA search of the offline preset's network."""
    from torch.utils.data import TensorDataset

    from benchmark.core.datasets import get_info
    from benchmark.core.models import build_model
    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig, Trainer
    from methods.base import RefreshMasks
    from methods.s2ap import ScoreSharpness

    torch.manual_seed(0)
    net = masking.to_masked(build_model("small_cnn", get_info("fashion-mnist")))
    masking.scaled_score_init(net)
    masking.set_keep(net, 0.01)
    masking.refresh_masks(net)
    masking.set_mode(net, "search")
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(64, 1, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    cfg = TrainConfig(epochs=2, lr=0.1, weight_decay=1e-4, batch_size=16, loss="pgd_at",
                      attack=AttackConfig(0.1, 1, 0.1), val_attack_steps=0)
    hook = ScoreSharpness({"gamma": gamma, "warmup": 0.0}, total_epochs=2)
    trainer = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg, train_set=data,
                      val_set=None, device=torch.device("cpu"), seed=0, hooks=[RefreshMasks(), hook],
                      log=lambda msg: None)
    return hook.summary(trainer.fit())


@pytest.mark.slow
def test_an_s2ap_run_that_flips_nothing_is_flagged_inactive_and_one_at_the_chosen_gamma_is_not(tmp_path):
    from benchmark.core import config as C

    offline = C.load_preset(Path(__file__).resolve().parent.parent / "presets" / "offline.yaml")
    chosen = offline["methods"]["hydra"]["s2ap"]["gamma"]
    assert chosen > 0, "the sweep chose gamma 0: S2AP would be the plain method"
    flagged = {}
    for tag, gamma in (("tiny", 1e-9), ("chosen", chosen)):
        diag = _s2ap_search_summary(gamma)
        assert diag["s2ap_steps"] == 8
        write_result(tmp_path / tag, s2ap="on", sparsity=99, diagnostics=diag, search=LEARNED)
        df = aggregate(tmp_path / tag, tmp_path / f"out-{tag}")
        flagged[tag] = df.iloc[0]["flag"]
    assert "s2ap-inactive:1/1" in flagged["tiny"]
    assert "s2ap-inactive" not in flagged["chosen"]


def test_the_leaderboard_shows_the_flip_fraction_per_search_epoch_of_every_s2ap_row(tmp_path):
    def diag(epochs, noflip):
        done = [e for e in epochs if e is not None]
        return {"s2ap_gamma": 0.01, "s2ap_steps": 10 * len(done), "s2ap_noflip_steps": noflip,
                "s2ap_noflip_fraction": noflip / (10 * len(done)),
                "s2ap_flip_fraction": sum(done) / len(done), "s2ap_flip_fraction_by_epoch": epochs}

    write_result(tmp_path, s2ap="off", seed=0)
    write_result(tmp_path, s2ap="on", seed=0, diagnostics=diag([None, 0.02, 0.04], 0))
    write_result(tmp_path, s2ap="on", seed=1, diagnostics=diag([None, 0.04, 0.06], 3))
    aggregate(tmp_path, tmp_path / "out")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    section = md.split("## S2AP's score step: mask flips per search epoch")[1]
    header = next(line for line in section.splitlines() if line.startswith("| Dataset"))
    assert "Epoch 1 (%)" in header and "Epoch 3 (%)" in header and "Epoch 4" not in header
    row = next(line for line in section.splitlines() if "| hydra" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # epoch 1 is the warm-up; epochs 2 and 3 are the means over the two seeds; 3 of 40 steps
    # flipped nothing
    assert cells[4:] == ["0.01", "—", "3.000", "5.000", "4.000", "7.5", "2"]
    # a leaderboard without S2AP rows has no such section
    write_result(tmp_path / "plain", s2ap="off")
    aggregate(tmp_path / "plain", tmp_path / "out-plain")
    assert "mask flips per search epoch" not in (tmp_path / "out-plain" / "leaderboard.md").read_text()


def test_s2ap_with_an_unselected_gamma_is_flagged(tmp_path):
    def s2ap(status):
        return {"prune": {"s2ap": {"gamma": 0.01, "gamma_status": status}}}

    write_result(tmp_path, method="hydra", s2ap="on", extra_config=s2ap("unselected"))
    write_result(tmp_path, method="harp", s2ap="on", extra_config=s2ap("selected"))
    write_result(tmp_path, method="lwm", s2ap="n/a", extra_config={"prune": {"s2ap": None}})
    df = aggregate(tmp_path, tmp_path / "out")
    flag = dict(zip(df["method"], df["flag"]))
    assert "gamma-unselected" in flag["hydra"]
    assert "gamma-unselected" not in flag["harp"] and "gamma-unselected" not in flag["lwm"]
