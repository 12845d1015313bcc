"""The GPU memory check of runtime.jobs_per_gpu (benchmark/planning/gpu_memory.py): one job's memory
PREDICTED from the model built on the CPU, k jobs that do not fit on the card refused in one line
before any job, the card's memory from runtime.gpu_memory_gib or nvidia-smi, and the estimate's
recommended k capped by the memory."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import config as apcfg
from benchmark.planning import calibration as _cal
from benchmark.planning import gpu_memory as gm
from benchmark.planning import gpu_sharing as gs
from benchmark.planning import run_guard
from benchmark.planning.jobgraph import Job

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "presets" / "tiny.yaml"


def _preset(tmp_path: Path, overlay: str, base: Path = TINY) -> dict:
    over = tmp_path / "overlay.yaml"
    over.write_text(overlay)
    return apcfg.validate(apcfg.load_presets([base, over]), search_dirs=[REPO])


# a one-cell grid of ResNet18 on CIFAR-10 (the calibration has it on an H200), on CUDA
RESNET18 = """\
grid: {datasets: [cifar10], archs: [resnet18], methods: [hydra], sparsities: [90], seeds: [0]}
model: {width: 1.0}
runtime: {device: cuda, jobs_per_gpu: %d, gpu_memory_gib: %s}
"""


def test_the_prediction_grows_with_batch_size_width_and_the_losss_graphs(tmp_path):
    cfg = _preset(tmp_path, RESNET18 % (1, "null"))
    job = Job("pretrain", "cifar10", "resnet18")

    def predicted(section: str, key: str, value) -> gm.JobMemory:
        c = copy.deepcopy(cfg)
        c[section][key] = value
        return gm.job_memory(c, job)

    small, large = predicted("pretrain", "batch_size", 64), predicted("pretrain", "batch_size", 128)
    assert large.bytes - small.bytes == 64 * small.image_bytes > 0  # linear in the batch
    thin, wide = predicted("model", "width", 0.5), predicted("model", "width", 1.0)
    assert wide.parameters > 3 * thin.parameters and wide.image_bytes > thin.image_bytes
    assert wide.bytes > thin.bytes
    # TRADES keeps the clean and the adversarial forward for its backward; PGD-AT one
    trades, pgd = predicted("pretrain", "loss", "trades"), predicted("pretrain", "loss", "pgd_at")
    inputs = gm.INPUT_COPIES * 3 * 32 * 32 * 4
    assert trades.image_bytes - inputs == pytest.approx(2 * (pgd.image_bytes - inputs), abs=1)
    # bf16: the activations counted in autocast's dtypes, about half
    bf16 = predicted("runtime", "bf16", True)
    assert bf16.precision == "bf16" and bf16.image_bytes < 0.7 * wide.image_bytes
    # the CUDA context is paid by every job, and the figure is a few GiB for ResNet18 at 128
    assert gm.CUDA_CONTEXT_GIB * gm.GIB < wide.bytes < 8 * gm.GIB


def test_every_gpu_rule_of_the_plan_is_predicted_and_a_null_batch_is_counted_at_one_image(tmp_path):
    cfg = _preset(tmp_path, RESNET18 % (2, "null"))
    jobs = gm.predict(cfg, ["all"], [REPO])
    assert {"pretrain", "prune", "finetune", "evaluate", "evaluate_dense"} <= set(jobs)
    assert jobs["prune"].state_bytes > jobs["pretrain"].state_bytes  # the learned scores
    assert gm.notes(jobs) == []
    cfg["evaluate"]["batch_size"] = None
    jobs = gm.predict(cfg, ["all"], [REPO])
    assert jobs["evaluate"].batch_size is None and jobs["evaluate"].counted_batch == gm.NULL_BATCH
    (note,) = [n for n in gm.notes(jobs) if n.startswith("evaluate:")]
    assert "evaluate.batch_size null" in note and "each sees only what the others leave" in note


def test_k_above_what_the_card_holds_is_refused_and_a_k_that_fits_passes(tmp_path):
    cfg = _preset(tmp_path, RESNET18 % (4, "6.0"))
    refusal, _ = gm.check(cfg, workstation=False, search_dirs=[REPO])
    assert refusal is not None and "PREDICTED" in refusal
    assert "runtime.jobs_per_gpu 4 x" in refusal and "more than the card's 6.00 GiB" in refusal
    assert "(runtime.gpu_memory_gib)" in refusal and "rule evaluate" in refusal
    fits = gm.largest_k(max(gm.predict(cfg, ["all"], [REPO]).values(), key=lambda j: j.bytes), 6.0)
    assert 1 <= fits < 4 and f"fit{'s' if fits == 1 else ''} on it: set runtime.jobs_per_gpu: {fits}" in refusal
    cfg["runtime"]["jobs_per_gpu"] = fits
    assert gm.check(cfg, workstation=False, search_dirs=[REPO]) == (None, [])
    # not even one job: the batch size is the remedy
    cfg["runtime"].update(jobs_per_gpu=1, gpu_memory_gib=1.0)
    refusal, _ = gm.check(cfg, workstation=False, search_dirs=[REPO])
    assert "not even one job fits: lower evaluate.batch_size" in refusal
    assert gm.check(cfg, workstation=False, search_dirs=[REPO],
                    environ={gm.CHECK_ENV: "off"})[0] is None


def _env() -> dict[str, str]:
    """This checkout's code first, whatever the interpreter has installed; the check on."""
    env = {k: v for k, v in os.environ.items() if k != gm.CHECK_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_the_runner_refuses_k_above_the_card_before_any_job(tmp_path):
    over = tmp_path / "k4.yaml"
    over.write_text("runtime: {device: cuda, jobs_per_gpu: 4, gpu_memory_gib: 1.0}\n")
    proc = subprocess.run([sys.executable, "-m", "benchmark.runner", "--gpus", "1", "--directory",
                           str(tmp_path), "--cores", "1", "--configfile", str(TINY), str(over)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=_env())
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "GPU memory (PREDICTED, not measured)" in line and "runtime.jobs_per_gpu 4 x" in line
    assert "more than the card's 1.00 GiB" in line and "at most 1 job fits on it" in line
    assert not (tmp_path / ".snakemake").exists() and not (tmp_path / "results").exists()


def test_the_check_applies_to_gpu_runs_only(tmp_path):
    cfg = _preset(tmp_path, "runtime: {device: cuda, jobs_per_gpu: 4, gpu_memory_gib: 1.0}\n")
    refused = run_guard.memory_check(cfg, [], tmp_path, workstation_gpus=True, slurm=False)[0]
    assert refused and "at most 1 job fits on it" in refused
    # the local profile without --gpus puts no k jobs on a card
    assert run_guard.memory_check(cfg, [], tmp_path, workstation_gpus=False, slurm=False) == (None, [])
    cfg["runtime"]["device"] = "cpu"
    assert run_guard.memory_check(cfg, [], tmp_path, workstation_gpus=True, slurm=True) == (None, [])
    assert run_guard.uses_slurm(["--profile", "workflows/profiles/slurm/"])
    assert run_guard.uses_slurm(["--executor=slurm"]) and run_guard.uses_slurm(["-e", "slurm"])
    assert not run_guard.uses_slurm(["--profile", "workflows/profiles/local-gpu"])


@pytest.mark.parametrize("bad", ["0", "-8", ".nan", ".inf", "'80'", "true", "100000"])
def test_gpu_memory_gib_is_a_finite_positive_number_or_null(tmp_path, bad):
    with pytest.raises(apcfg.ConfigError, match="gpu_memory_gib"):
        _preset(tmp_path, f"runtime: {{gpu_memory_gib: {bad}}}\n")


def test_gpu_memory_gib_takes_numbers_and_null_and_stays_out_of_the_hashes(tmp_path):
    assert _preset(tmp_path, "runtime: {gpu_memory_gib: 79.6}\n")["runtime"]["gpu_memory_gib"] == 79.6
    plain = _preset(tmp_path, "runtime: {gpu_memory_gib: null}\n")
    sized = _preset(tmp_path, "runtime: {gpu_memory_gib: 24}\n")
    for stage in ("pretrain", "evaluate"):
        a = apcfg.stage_config(plain, stage, dataset="fashion-mnist", arch="small_cnn")
        b = apcfg.stage_config(sized, stage, dataset="fashion-mnist", arch="small_cnn")
        assert apcfg.stage_key(a) == apcfg.stage_key(b)


def test_nvidia_smis_memory_total_the_smallest_card_counts():
    assert gm.parse_nvidia_smi("81559\n143771\n") == pytest.approx(81559 / 1024)
    assert gm.parse_nvidia_smi(" 24564 \n") == pytest.approx(23.98828125)
    assert gm.parse_nvidia_smi("[N/A]\n") is None and gm.parse_nvidia_smi("") is None
    assert gm.parse_nvidia_smi("No devices were found\n") is None


def test_the_card_from_nvidia_smi_or_a_skipped_line_without_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert gm.nvidia_smi_gib(path=str(empty)) is None
    cfg = _preset(tmp_path, "runtime: {device: cuda, jobs_per_gpu: 2}\n")
    refusal, lines = gm.check(cfg, workstation=True, path=str(empty))
    assert refusal is None and len(lines) == 1
    assert lines[0].startswith("GPU memory check skipped:") and "nvidia-smi lists no card" in lines[0]
    # a login node (SLURM): no nvidia-smi asked, the setting alone
    assert gm.card_memory(cfg, workstation=False)[0] is None
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nprintf '24564\\n1024\\n'\n")
    tool.chmod(0o755)
    assert gm.card_memory(cfg, workstation=True, path=str(tool.parent)) == (1.0, "nvidia-smi, the smallest card")
    refusal, _ = gm.check(cfg, workstation=True, path=str(tool.parent))
    assert "more than the card's 1.00 GiB (nvidia-smi, the smallest card)" in refusal
    cfg["runtime"]["gpu_memory_gib"] = 40.0  # the setting wins
    assert gm.card_memory(cfg, workstation=True, path=str(tool.parent)) == (40.0, "runtime.gpu_memory_gib")


def test_known_cards_of_the_calibration():
    assert gm.known_card_gib(["NVIDIA H200"])[0] == pytest.approx(143771 / 1024)
    assert gm.known_card_gib(["NVIDIA H100 80GB HBM3", "NVIDIA H200"])[0] == pytest.approx(81559 / 1024)
    assert gm.known_card_gib(["AMD EPYC"]) is None


def test_the_estimate_prints_memory_per_job_and_caps_the_recommended_k(tmp_path):
    cal = _cal.load(None)
    cfg = _preset(tmp_path, RESNET18 % (1, "null"))
    text = gs.report(cfg, ["all"], cal, "cuda", search_dirs=[REPO])
    assert "GPU memory per job, PREDICTED" in text and "NVIDIA H200" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("finetune") and "GiB" in ln)
    assert "cifar10/resnet18, batch 64, fp32" in line  # tiny's batch
    free = int(next(ln for ln in text.splitlines() if ln.startswith("recommended:")).split(": ")[2][0])
    assert free > 1  # the busy fractions alone recommend sharing the card
    one = gm.predict(cfg, ["all"], [REPO])
    card = max(j.gib for j in one.values()) * 1.5  # room for one job, not two
    cfg["runtime"]["gpu_memory_gib"] = card
    text = gs.report(cfg, ["all"], cal, "cuda", search_dirs=[REPO])
    assert "recommended: runtime.jobs_per_gpu: 1 " in text and "holds at most 1" in text
    assert f"card: {gm.gib(card)} (runtime.gpu_memory_gib): at most 1 " in text
    # without a calibration the card time is unknown, the memory is not
    text = gs.report(cfg, ["all"], _cal.Calibration([]), "cuda", search_dirs=[REPO])
    assert "jobs per GPU: unknown" in text and "GPU memory per job, PREDICTED" in text
    assert gs.recommended_k({"pretrain": 100.0}, "bf16", limit=2) == 2
    assert gs.recommended_k({"pretrain": 100.0}, "bf16") == 3
