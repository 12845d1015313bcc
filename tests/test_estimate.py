"""What a run costs before it starts: the calibration file's format, and the estimate's jobs and
seconds (by hand here), with "no calibration for ..." where nothing was measured."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from benchmark.cli import main as cli_main
from benchmark.core import config as C
from benchmark.planning import calibration as cal
from benchmark.planning import estimate as E

REPO = Path(__file__).resolve().parent.parent
SECONDS = {"pretrain_step": 0.5, "search_step": 0.6, "search_step_s2ap": 0.7, "finetune_step": 0.4,
           "finetune_step_awp": 0.45, "pgd_image": 0.02, "clean_image": 0.001,
           "autoattack_image": 3.0}


def entry(**over):
    e = {"device": "cpu", "device_name": "test cpu", "threads": 2, "arch": "resnet18",
         "input_shape": [3, 32, 32], "num_classes": 10, "width": 1.0, "batch_size": 32,
         "precision": "fp32", "seconds": dict(SECONDS), "measured": "2026-01-01",
         "command": "python speed/calibrate.py --archs resnet18"}
    e.update(over)
    return e


def calibration_file(tmp_path, entries):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"format": cal.FORMAT, "version": cal.VERSION, "entries": entries}))
    return path


# ------------------------------------------------------------------ the calibration file
def test_the_shipped_calibration_file_is_valid():
    obj = cal.read()
    assert obj["format"] == "apbench-calibration" and obj["version"] == 1
    assert cal.problems(obj) == []
    assert cal.CALIBRATION_FILE.relative_to(REPO).as_posix() == "benchmark/calibration/calibration.json"


@pytest.mark.parametrize("change,message", [
    (lambda o: o.update(format="other"), "format: 'other'"),
    (lambda o: o.update(version=2), "version: 2"),
    (lambda o: o["entries"][0]["seconds"].pop("autoattack_image"),
     r"entries\[0\].seconds: missing \['autoattack_image'\]"),
    (lambda o: o["entries"][0].update(device="tpu"), r"entries\[0\].device: 'tpu'"),
    (lambda o: o["entries"][0].update(extra=1), r"entries\[0\]: unknown field\(s\) \['extra'\]"),
    (lambda o: o["entries"][0]["seconds"].update(pgd_image=-1), "not non-negative numbers"),
    (lambda o: o["entries"][0].update(input_shape=[32, 32]), "input_shape"),
])
def test_a_calibration_that_breaks_the_format_is_refused_naming_the_field(tmp_path, change, message):
    obj = {"format": cal.FORMAT, "version": cal.VERSION, "entries": [entry()]}
    change(obj)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(cal.CalibrationError, match=message):
        cal.load(path)


def test_merge_replaces_a_measurement_of_the_same_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "c.json"
    cal.merge(path, [entry(), entry(arch="vgg16_bn")])
    cal.merge(path, [entry(measured="2026-02-02", seconds={**SECONDS, "pretrain_step": 9.0})])
    entries = cal.read(path)["entries"]
    assert len(entries) == 2
    resnet = next(e for e in entries if e["arch"] == "resnet18")
    assert resnet["seconds"]["pretrain_step"] == 9.0
    with pytest.raises(cal.CalibrationError):
        cal.merge(path, [entry(seconds={})])
    assert len(cal.read(path)["entries"]) == 2  # nothing written


def test_only_a_measurement_of_this_architecture_and_device_is_found():
    c = cal.Calibration([entry(), entry(width=0.0625, batch_size=64)])
    assert c.find(device="cpu", arch="resnet18", input_shape=(3, 32, 32), num_classes=10, width=1.0)
    assert c.find(device="cpu", arch="resnet18", input_shape=(3, 32, 32), num_classes=10,
                  width=0.0625)["batch_size"] == 64
    for miss in ({"device": "cuda"}, {"arch": "vgg16_bn"},
                 {"input_shape": (3, 224, 224)}, {"precision": "bf16"}):
        kw = dict(device="cpu", arch="resnet18", input_shape=(3, 32, 32), num_classes=10, width=1.0)
        assert c.find(**{**kw, **miss}) is None, miss
    # one width measured: no other width is made up from it
    one = cal.Calibration([entry()])
    assert one.find(device="cpu", arch="resnet18", input_shape=(3, 32, 32), num_classes=10,
                    width=0.5) is None


def test_a_width_between_two_measured_ones_is_scaled_by_its_square():
    # per image: 1 s at width 1 (batch 32), 0.1 s at width 0.25 (batch 64): c + k w^2 gives
    # k = 0.96, c = 0.04, so width 0.5 costs 0.28 s per image, at the nearer entry's batch (32)
    wide = entry(seconds={**SECONDS, "pretrain_step": 32.0, "autoattack_image": 8.0})
    narrow = entry(width=0.25, batch_size=64, seconds={**SECONDS, "pretrain_step": 6.4,
                                                       "autoattack_image": 2.0})
    c = cal.Calibration([wide, narrow])
    got = c.find(device="cpu", arch="resnet18", input_shape=(3, 32, 32), num_classes=10, width=0.5)
    assert got["scaled_from"] == [0.25, 1.0] and got["width"] == 0.5
    near = got["batch_size"]
    assert got["seconds"]["pretrain_step"] == pytest.approx(0.28 * near)
    assert got["seconds"]["autoattack_image"] == pytest.approx(2.0 + 6.0 * (0.25 - 0.0625) / (1 - 0.0625))


def test_autoattack_expected_cost_lies_between_the_first_attack_and_the_upper_bound():
    e = entry(seconds={**SECONDS, "autoattack_image": 2.0, "autoattack_image_apgd_ce": 0.2,
                       "job_start": 3.0})
    assert E.autoattack_image_seconds(e, bound=True) == 2.0
    assert E.autoattack_image_seconds(e, bound=False) == pytest.approx(0.2 + E.EXPECTED_ROBUST_SHARE * 1.8)
    assert E.autoattack_image_seconds(entry(), bound=False) == SECONDS["autoattack_image"]


def test_the_wall_time_runs_a_stages_jobs_side_by_side():
    est = E.Estimate(counts={}, seconds={"pretrain": 10.0, "prune": 12.0, "evaluate": 9.0},
                     missing=set(), used={},
                     jobs={"pretrain": [(10.0, 10.0)], "prune": [(5.0, 6.0), (4.0, 5.0), (3.0, 4.0)],
                           "evaluate": [(3.0, 30.0)] * 3})
    assert E.wall_seconds(est, 1) == 10 + 12 + 9
    assert E.wall_seconds(est, 2) == 10 + 7 + 6  # longest first: 5 | 4 + 3
    assert E.wall_seconds(est, 2, bound=True) == 10 + 9 + 60


# ------------------------------------------------------------------ the estimate
def preset(**changes):
    cfg = C.load_preset(REPO / "presets" / "paper_cifar10_structured.yaml")
    cfg["grid"].update(archs=["resnet18"], sparsities=[50], seeds=[0])
    cfg["recipe_ledger"] = "off"  # the changes below probe the estimate, not the published recipe
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return C.validate(cfg, search_dirs=[REPO])


def test_job_seconds_by_hand():
    cfg = preset()
    c = cal.Calibration([entry()])
    plan = E.plan(cfg, ["all"])
    assert plan.counts() == {"pretrain": 1, "prune": 2, "finetune": 2, "evaluate": 2,
                             "evaluate_dense": 1, "aggregate": 1, "all": 1}
    cost = E.Cost()
    # pretrain: 100 epochs x floor(49,000 / 128) steps x 0.5 s x (PGD-AT 10 steps: 11/11) x 128/32,
    # plus a validation pass per epoch: 1,000 images x (clean + PGD-10 at a fifth of PGD-50's cost)
    steps = 49_000 // 128
    val = 1000 * (0.001 + 0.02 * 10 / 50)
    pretrain = next(j for j in plan.jobs["pretrain"])
    assert E.job_seconds(cfg, pretrain, c, "cpu", cost) == pytest.approx(
        100 * (steps * 0.5 * 128 / 32 + val))
    # the search with S2AP: 5 warm-up epochs (0.25 x 20) plain, 15 with the score step
    on = next(j for j in plan.jobs["prune"] if j.s2ap == "on")
    assert E.job_seconds(cfg, on, c, "cpu", cost) == pytest.approx(
        steps * 4 * (5 * 0.6 + 15 * 0.7) + 20 * val)
    # the finetune with AWP (no warm-up for PGD-AT), 100 epochs
    ft = next(j for j in plan.jobs["finetune"] if j.s2ap == "on")
    assert E.job_seconds(cfg, ft, c, "cpu", cost) == pytest.approx(100 * (steps * 4 * 0.45 + val))
    # evaluation: 10,000 clean, 10,000 PGD-50 and 10,000 AutoAttack images
    ev = plan.jobs["evaluate"][0]
    assert E.job_seconds(cfg, ev, c, "cpu", cost) == pytest.approx(10000 * (0.001 + 0.02 + 3.0))


def test_trades_costs_one_more_pass_and_batch_scales_linearly():
    cfg = preset(pretrain__loss="trades", pretrain__batch_size=64, pretrain__attack={
        "eps": 0.031, "steps": 5, "step_size": 0.0078}, pretrain__epochs=1, data__val_size=0,
        pretrain__keep="last", prune__keep="last", finetune__keep="last")
    c = cal.Calibration([entry()])
    job = E.plan(cfg, ["all"]).jobs["pretrain"][0]
    steps = 50_000 // 64
    assert E.job_seconds(cfg, job, c, "cpu", E.Cost()) == pytest.approx(
        steps * 0.5 * (5 + 2) / 11 * 64 / 32)


@pytest.mark.slow
def test_the_report_says_no_calibration_instead_of_guessing(tmp_path):
    cfg = preset()
    c = cal.Calibration([entry()])
    text = E.report(cfg, ["p.yaml"], ["all"], "cuda", c)
    assert "no calibration for cuda" in text and "unknown: no calibration for cuda" in text
    assert not re.search(r"\d+\.\d (h|min|s)\b", text.split("rule")[1])  # no figure invented
    cfg_vgg = copy.deepcopy(cfg)
    cfg_vgg["grid"]["archs"] = ["resnet18", "vgg16_bn"]
    text = E.report(C.validate(cfg_vgg, search_dirs=[REPO]), ["p.yaml"], ["all"], "cpu", c)
    assert "no calibration for vgg16_bn (3x32x32, 10 classes, width 1, fp32) on cpu" in text
    assert "incomplete" in text
    text = E.report(cfg, ["p.yaml"], ["all"], "cpu", c)
    assert "cpu resnet18 3x32x32 width 1 batch 32 fp32: test cpu, 2 thread(s), measured 2026-01-01" in text
    assert "no calibration" not in text and re.search(r"^total\s+10\s+[\d,.]+ (h|days)", text, re.M)


def test_estimate_command(tmp_path, capsys):
    path = calibration_file(tmp_path, [entry(arch=a) for a in ("resnet18", "vgg16_bn", "wrn28_4")])
    code = cli_main(["estimate", "--configfile", str(REPO / "presets" / "paper_cifar10.yaml"),
                     "--device", "cpu", "--calibration", str(path), "--target", "table_main"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"^evaluate\s+108\s", out, re.M) and re.search(r"^table_main\s+1\s", out, re.M)
    assert "unknown" not in out
    code = cli_main(["estimate", "--configfile", str(REPO / "presets" / "paper_cifar10.yaml"),
                     str(REPO / "presets" / "smoke.yaml"), "--calibration", str(path)])
    out = capsys.readouterr().out
    assert "paper_cifar10_smoke" in out and "device cpu" in out
    assert "no calibration for resnet18 (3x32x32, 10 classes, width 0.0625, fp32) on cpu" in out
    assert cli_main(["estimate", "--configfile", str(REPO / "presets" / "paper_svhn.yaml"),
                     "--target", "table_baselines", "--calibration", str(path)]) == 2
    assert "feeds no baselines table" in capsys.readouterr().err




def test_an_auto_device_preset_is_estimated_where_the_calibration_has_figures_for_all_its_jobs(tmp_path, capsys):
    offline = C.validate(C.load_presets([REPO / "presets" / "offline.yaml"]))
    assert offline["runtime"]["device"] == "auto"
    small_cnn = entry(arch="small_cnn", input_shape=[1, 32, 32], batch_size=64)
    device, note = E.auto_device(offline, ["all"], cal.load(calibration_file(tmp_path, [small_cnn])))
    assert device == "cpu" and "--device cuda to insist" in note
    # once CUDA has figures for every job, CUDA it is, as for a paper preset
    both = [small_cnn, {**small_cnn, "device": "cuda", "device_name": "test gpu"}]
    assert E.auto_device(offline, ["all"], cal.load(calibration_file(tmp_path, both))) == ("cuda", "")
    # figures on neither device: CUDA, where runs of that size are planned
    paper = C.validate(C.load_presets([REPO / "presets" / "paper_cifar10.yaml"]))
    assert E.auto_device(paper, ["table_main"], cal.load(calibration_file(tmp_path, [small_cnn]))) == ("cuda", "")
    assert cli_main(["estimate", "--configfile", str(REPO / "presets" / "offline.yaml")]) == 0
    out = capsys.readouterr().out
    assert "device cpu" in out and "h of cpu time" in out  # the shipped file has the small CNN on cpu
