"""speed/gpu_check.py, the one prepared GPU run: its output structure (on CPU, --quick), its
calibration fragment, its budget, the merge into the calibration file, and the faithfulness of
its public-style HYDRA reference (same masks, same score update as our step)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

# one CPU run of the whole script serves the module (about 10 s): make test-fast leaves it out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "speed" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


gc = _load()
GOAL_LINE = re.compile(r"^GOAL (\S+) (= \d+\.\d{3} )?<= [0-9.]+: (PASS|FAIL|NOT RUN)")


def _run(*args, out: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


def _goal_lines(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        m = GOAL_LINE.match(line)
        if m:
            found[m.group(1)] = m.group(3)
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run("--device", "cpu", "--quick", out=out)
    return proc, out


def test_quick_cpu_run_prints_every_goal_as_pass_or_fail(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    goals = _goal_lines(proc.stdout)
    assert set(goals) == {name for name, _ in gc.GOALS}
    assert set(goals.values()) <= {"PASS", "FAIL"}, goals  # every part ran
    # the environment comes first
    assert proc.stdout.splitlines()[0] == "== environment"
    assert "torch " in proc.stdout and "device: cpu" in proc.stdout
    # the log holds everything printed
    assert (out / "gpu_check.log").read_text() == proc.stdout


def test_quick_cpu_run_writes_the_figures_of_every_part(quick_run):
    _, out = quick_run
    figures = json.loads((out / "figures.json").read_text())
    assert figures["format"] == "apbench-gpu-check"
    parts = figures["parts"]
    assert set(parts) == {"steps:resnet18:fp32", "epoch:resnet18:fp32", "autoattack:resnet18",
                          "eval:resnet18", "autoattack2:resnet18", "steps:wrn28_4:fp32", "eval:wrn28_4",
                          "steps:vgg16_bn:fp32", "eval:vgg16_bn"}
    assert all(p["status"] == "done" for p in parts.values()), {k: p["status"] for k, p in parts.items()}
    steps = parts["steps:resnet18:fp32"]
    assert set(steps["variants"]) == set(gc.VARIANTS)
    assert steps["ratios"]["hydra/dense"]["median_ratio"] > 0
    epoch = parts["epoch:resnet18:fp32"]
    assert epoch["ours"]["n"] == epoch["public_style"]["n"] >= 1 and epoch["ratio"] > 0
    aa = parts["autoattack:resnet18"]
    assert aa["identical_flags"] is True and aa["n"] == 8
    assert len(parts["autoattack2:resnet18"]["ours"]["times_s"]) == 2
    for name, limit in gc.GOALS:
        g = figures["goals"][name]
        assert g["limit"] == limit and g["status"] == ("PASS" if g["value"] <= limit else "FAIL")


def test_quick_cpu_run_writes_a_calibration_fragment_in_the_estimates_format(quick_run):
    _, out = quick_run
    frag = json.loads((out / "calibration_fragment.json").read_text())
    gc.check_calibration(frag, "fragment")
    assert set(frag) == {"format", "version", "entries"}
    assert {e["arch"] for e in frag["entries"]} == {"resnet18", "wrn28_4", "vgg16_bn"}
    for e in frag["entries"]:
        assert set(e) == {"device", "device_name", "threads", "arch", "input_shape", "num_classes",
                          "width", "batch_size", "precision", "seconds", "measured", "command"}
        assert set(e["seconds"]) == set(gc.SECONDS_KEYS)
        assert e["device"] == "cpu" and e["threads"] == 1 and e["precision"] == "fp32"
        assert e["input_shape"] == [3, 32, 32] and e["num_classes"] == 10
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", e["measured"])
        assert e["command"].startswith("python speed/gpu_check.py") and "--quick" in e["command"]


def test_a_short_budget_skips_parts_and_says_the_goals_did_not_run(tmp_path):
    proc = _run("--device", "cpu", "--quick", "--budget-s", "0.5", out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SKIPPED (needs about" in proc.stdout
    assert set(_goal_lines(proc.stdout).values()) == {"NOT RUN"}
    frag = json.loads((tmp_path / "calibration_fragment.json").read_text())
    assert frag["entries"] == []
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert {p["status"] for p in figures["parts"].values()} == {"skipped"}


def test_check_imports_reports_what_the_run_needs(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check-imports"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok       pyautoattack" in proc.stdout and "all imports found" in proc.stdout


# ---------------------------------------------------------------- the merge
def _entry(**kw):
    e = {"device": "cuda", "device_name": "NVIDIA H200", "threads": None, "arch": "resnet18",
         "input_shape": [3, 32, 32], "num_classes": 10, "width": 1.0, "batch_size": 128,
         "precision": "bf16", "seconds": {k: 0.1 for k in gc.SECONDS_KEYS},
         "measured": "2026-11-30", "command": "python speed/gpu_check.py --budget-s 480"}
    e.update(kw)
    return e


def test_merge_replaces_the_entry_with_the_same_key_and_adds_new_ones(tmp_path):
    cal = tmp_path / "calibration.json"
    cpu = _entry(device="cpu", device_name="AMD EPYC", threads=2, precision="fp32")
    old_gpu = _entry()
    cal.write_text(json.dumps(gc.fragment([cpu, old_gpu])))
    new_gpu = _entry(seconds={k: 0.2 for k in gc.SECONDS_KEYS}, measured="2026-12-01")
    wrn = _entry(arch="wrn28_4")
    frag = tmp_path / "fragment.json"
    frag.write_text(json.dumps(gc.fragment([new_gpu, wrn])))
    assert gc.merge(frag, cal) == 0
    merged = json.loads(cal.read_text())["entries"]
    assert merged == [cpu, new_gpu, wrn]


def test_merge_refuses_a_quick_fragment_and_a_missing_calibration_file(tmp_path):
    frag = tmp_path / "fragment.json"
    frag.write_text(json.dumps(gc.fragment([_entry(command="python speed/gpu_check.py --quick")])))
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps(gc.fragment([])))
    assert gc.merge(frag, cal) == 2
    assert json.loads(cal.read_text())["entries"] == []
    frag.write_text(json.dumps(gc.fragment([_entry()])))
    assert gc.merge(frag, tmp_path / "absent.json") == 2


def test_a_fragment_with_a_missing_figure_is_refused(tmp_path):
    bad = _entry()
    del bad["seconds"]["autoattack_image"]
    with pytest.raises(ValueError, match="autoattack_image"):
        gc.check_calibration(gc.fragment([bad]), "fragment")


# ---------------------------------------------------------------- the public-style reference
ARCH, WIDTH = "resnet18", 0.0625


def _pair(loss="pgd_at"):
    """Our HYDRA search model and trainer, and the public-style model, from the same weights."""
    from benchmark.core.datasets import get_info
    from benchmark.core.models import build_model

    info = get_info("cifar10")
    m = gc.Matrix(quick=True, batch=8, attack_steps=2)
    cfg = gc.train_cfg(info, m, loss=loss)
    x, y = gc.random_data(m.batch, info, 5)
    device = torch.device("cpu")
    run = gc.stage_training("prune", cfg, TensorDataset(x, y), device, "fp32")
    ours, method = gc.search_model("hydra", ARCH, WIDTH, info, m, cfg, run, device)
    trainer = run.trainer(ours, method.search_params(ours, cfg), method.search_hooks(ours, cfg))
    for hook in trainer.hooks:
        hook.on_fit_start(trainer)
    torch.manual_seed(0)
    ref_model = gc.to_public_style(build_model(ARCH, info, width=WIDTH), 1.0 - m.sparsity)
    ref = gc.PublicStyleHydra(ref_model, cfg, device)
    return trainer, ref, x, y


def _layers(model):
    from benchmark.core.masking import masked_layers

    return dict(masked_layers(model))


def _ref_layers(model):
    return {name: mod for name, mod in model.named_modules() if hasattr(mod, "drop")}


def test_the_public_style_full_sort_mask_equals_our_top_k_mask():
    trainer, ref, _, _ = _pair()
    ours, theirs = _layers(trainer.model), _ref_layers(ref.model)
    assert set(ours) == set(theirs) and len(ours) == 21  # every conv and linear, first and last
    for name, layer in ours.items():
        other = theirs[name]
        # HYDRA's scaled initialisation, written twice, gives the same scores
        torch.testing.assert_close(other.scores.detach(), layer.scores.detach(), rtol=0, atol=0)
        mask = gc.public_style_mask(other.scores.detach(), other.drop)
        assert torch.equal(mask, layer.mask), name
        assert int(mask.sum()) == layer.kept_target()


def test_one_public_style_step_makes_our_score_update():
    trainer, ref, x, y = _pair()
    start = {n: l.scores.detach().clone() for n, l in _layers(trainer.model).items()}
    torch.manual_seed(11)
    loss_ours = trainer.train_step(x, y)
    torch.manual_seed(11)
    loss_ref = ref.step(x, y)
    assert loss_ref == pytest.approx(loss_ours, rel=1e-5)
    ours, theirs = _layers(trainer.model), _ref_layers(ref.model)
    for name, layer in ours.items():
        torch.testing.assert_close(theirs[name].scores.detach(), layer.scores.detach(),
                                   rtol=1e-5, atol=1e-7)
    # the step did move the scores: the comparison is not of two untouched copies
    assert all(not torch.equal(start[n], l.scores.detach()) for n, l in ours.items())
    # and BatchNorm, which HYDRA keeps training, moved alike
    ours_bn = {k: v for k, v in trainer.model.state_dict().items() if "bn" in k}
    ref_bn = {k: v for k, v in ref.model.state_dict().items() if "bn" in k}
    assert ours_bn.keys() == ref_bn.keys() and ours_bn
    for k in ours_bn:
        torch.testing.assert_close(ref_bn[k].float(), ours_bn[k].float(), rtol=1e-5, atol=1e-6)


def test_the_step_comparison_would_see_a_wrong_reference():
    # a reference that kept one weight fewer per layer would not make our update: the check bites
    trainer, ref, x, y = _pair()
    for layer in _ref_layers(ref.model).values():
        layer.drop += 1
    torch.manual_seed(11)
    trainer.train_step(x, y)
    torch.manual_seed(11)
    ref.step(x, y)
    theirs = _ref_layers(ref.model)
    diffs = [float((theirs[n].scores.detach() - l.scores.detach()).abs().max())
             for n, l in _layers(trainer.model).items()]
    assert max(diffs) > 1e-6


def test_the_public_style_reference_sorts_on_every_forward_pass(monkeypatch):
    # the cost it stands for: one full sort per masked layer per forward pass, attack steps included
    _, ref, x, y = _pair()
    calls = []
    real_sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **k: calls.append(1) or real_sort(*a, **k))
    ref.step(x, y)
    layers = len(_ref_layers(ref.model))
    forwards = ref.cfg.attack.steps + 1  # PGD-AT: the attack's forward passes, then the loss
    assert len(calls) == layers * forwards


def test_the_profile_script_reports_launches_and_the_operators_a_variant_adds(tmp_path):
    """speed/gpu_profile.py on the CPU (structure only: no kernels there, so no launch counts)."""
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(ROOT / "speed" / "gpu_profile.py"), "--device", "cpu",
                           "--quick", "--steps", "1", "--warmup", "1", "--variants", "dense,hydra",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "profile.txt").read_text()
    assert "hydra against dense: operators by added calls per step" in text
    results = json.loads((tmp_path / "profile.json").read_text())["results"]
    assert set(results) == {"dense", "hydra"}
    # the masked layers' own operators appear only in the search step
    assert results["hydra"]["ops"]["aten::kthvalue"]["count"] > 0
    assert "aten::kthvalue" not in results["dense"]["ops"]
