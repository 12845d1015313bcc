"""One job per GPU on a workstation, tested on the CPU with a simulated card count: the slot
assignment (benchmark/runtime/gpu_slots.py), the workflow's wiring of it (--resources gpu=N with the
local-gpu profile), and the profile's coverage of every rule that trains or attacks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.core.errors import ConfigError
from benchmark.runtime import gpu_slots

REPO = Path(__file__).resolve().parent.parent

# A stand-in job: claims a slot the way a stage command does, records what it saw, holds the card
# for a while, then exits (which frees it).
JOB = """
import json, os, sys, time
sys.path.insert(0, {repo!r})
from benchmark.runtime.gpu_slots import claim_from_env
card = claim_from_env()
start = time.monotonic()
time.sleep({hold})
print(json.dumps({{"card": card, "visible": os.environ["CUDA_VISIBLE_DEVICES"],
                  "start": start, "end": time.monotonic()}}))
"""


def _jobs(n_jobs, n_slots, lock_dir, hold=0.4, visible=None, extra_env=None):
    env = {**os.environ, "APBENCH_GPU_SLOTS": str(n_slots), "APBENCH_GPU_LOCK_DIR": str(lock_dir),
           **(extra_env or {})}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    code = JOB.format(repo=str(REPO), hold=hold)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(n_jobs)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        out.append(json.loads(stdout))
    return out


def _overlap(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.slow
def test_concurrent_jobs_never_share_a_card_and_every_card_is_used(tmp_path):
    runs = _jobs(n_jobs=9, n_slots=3, lock_dir=tmp_path)
    assert {r["card"] for r in runs} == {"0", "1", "2"}
    for r in runs:
        assert r["visible"] == r["card"]  # the job sees its card and no other
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if a["card"] == b["card"]:
                assert not _overlap(a, b), (a, b)
    # more jobs than cards: some waited, and at some moment all three cards were busy
    assert max(sum(_overlap(a, b) for b in runs) for a in runs) >= 3


def test_slots_map_onto_the_cards_cuda_visible_devices_lists(tmp_path):
    runs = _jobs(n_jobs=2, n_slots=2, lock_dir=tmp_path, hold=0.3, visible="5,7,9")
    assert sorted(r["card"] for r in runs) == ["5", "7"]


@pytest.mark.slow
def test_a_killed_job_frees_its_card(tmp_path):
    env = {**os.environ, "APBENCH_GPU_SLOTS": "1", "APBENCH_GPU_LOCK_DIR": str(tmp_path)}
    code = JOB.format(repo=str(REPO), hold=60)
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "gpu0.lock").exists() or not (tmp_path / "gpu0.lock").read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(TimeoutError):
            gpu_slots.claim(1, directory=tmp_path, timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    card, fh = gpu_slots.claim(1, directory=tmp_path, timeout=10)
    fh.close()
    assert card == "0"


def test_more_slots_than_visible_cards_is_an_error_naming_the_remedy():
    with pytest.raises(ConfigError, match="--resources gpu=2"):
        gpu_slots.devices(3, "0,1")
    with pytest.raises(ConfigError):
        gpu_slots.devices(0)


def test_without_the_variable_nothing_is_claimed():
    env = {}
    assert gpu_slots.claim_from_env(env) is None
    assert "CUDA_VISIBLE_DEVICES" not in env


def _dry_run(tmp_path, *extra):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                           "--configfile", str(REPO / "presets" / "tiny.yaml"), *extra],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _commands(text):
    return [line for line in text.splitlines() if " -m benchmark " in line]


@pytest.mark.slow
def test_the_gpu_profile_gives_every_training_and_attacking_job_a_slot(tmp_path):
    text = _dry_run(tmp_path, "--profile", str(REPO / "workflows" / "profiles" / "local-gpu"),
                    "--resources", "gpu=3")
    commands = _commands(text)
    gpu_jobs = [c for c in commands if any(f" -m benchmark {s} " in c
                                           for s in ("pretrain", "prune", "finetune", "evaluate"))]
    assert gpu_jobs and all("APBENCH_GPU_SLOTS=3 " in c for c in gpu_jobs)
    assert text.count("gpu=1") >= len(gpu_jobs)


@pytest.mark.slow
def test_without_gpu_resources_jobs_claim_nothing(tmp_path):
    text = _dry_run(tmp_path, "--cores", "2")
    assert _commands(text) and not any("APBENCH_GPU_SLOTS" in c for c in _commands(text))


def test_the_gpu_profile_covers_every_rule_that_trains_or_attacks():
    from tests.test_workflow_lint import GPU_COMMANDS, workflow_rules

    profile = yaml.safe_load((REPO / "workflows" / "profiles" / "local-gpu" / "config.yaml").read_text())
    resources = profile["set-resources"]
    for name, body in workflow_rules().items():
        if any(cmd in body for cmd in GPU_COMMANDS):
            assert resources.get(name, {}).get("gpu") == 1, f"{name} trains or attacks without a GPU slot"


def test_the_runner_turns_gpus_into_a_gpu_resource():
    from benchmark.runner import gpu_arguments

    args = ["--profile", "p", "--gpus", "auto", "--configfile", "x.yaml"]
    # in place: --configfile takes every word after it
    assert gpu_arguments(args, {"CUDA_VISIBLE_DEVICES": "0,3,4"}) == [
        "--profile", "p", "--resources", "gpu=3", "--configfile", "x.yaml"]
    assert gpu_arguments(["--gpus=8"], {}) == ["--resources", "gpu=8"]
    with pytest.raises(ValueError, match="no GPU"):
        gpu_arguments(["--gpus", "auto"], {"CUDA_VISIBLE_DEVICES": ""})



# ------------------------------------------------------------------ k jobs per card
def test_k_jobs_per_card_fill_every_card_before_doubling_up(tmp_path):
    held = [gpu_slots.claim(3, directory=tmp_path, timeout=1, jobs_per_gpu=2) for _ in range(6)]
    try:
        # three cards, two slots each: the first three claims take one card each
        assert [card for card, _ in held] == ["0", "1", "2", "0", "1", "2"]
        with pytest.raises(TimeoutError):  # the seventh job waits: every card has k jobs
            gpu_slots.claim(3, directory=tmp_path, timeout=0.3, jobs_per_gpu=2)
    finally:
        for _, fh in held:
            fh.close()
    card, fh = gpu_slots.claim(3, directory=tmp_path, timeout=1, jobs_per_gpu=2)
    fh.close()
    assert card == "0"


@pytest.mark.slow
def test_concurrent_jobs_share_a_card_at_most_k_at_a_time(tmp_path):
    env_k = {"APBENCH_JOBS_PER_GPU": "2"}
    runs = _jobs(n_jobs=8, n_slots=2, lock_dir=tmp_path, hold=0.5, extra_env=env_k)
    assert {r["card"] for r in runs} == {"0", "1"}
    for r in runs:
        # at the moment r started, the jobs running on its card (r among them): at most k. A job
        # overlapping r's whole span is not enough: two of them may follow each other
        on_card = [o for o in runs if o["card"] == r["card"] and o["start"] <= r["start"] < o["end"]]
        assert len(on_card) <= 2, on_card
    # two cards x two slots: at some moment four jobs ran together
    assert max(sum(_overlap(a, b) for b in runs) for a in runs) >= 4


def test_k_below_one_is_refused():
    with pytest.raises(ConfigError, match="at least 1"):
        gpu_slots.slot_files(["0"], 0)
    env = {"APBENCH_GPU_SLOTS": "1", "APBENCH_JOBS_PER_GPU": "two"}
    with pytest.raises(ConfigError, match="APBENCH_JOBS_PER_GPU"):
        gpu_slots.claim_from_env(env)


def test_the_runner_counts_k_slots_per_card(tmp_path):
    from benchmark.runner import gpu_arguments, jobs_per_gpu_of

    preset = tmp_path / "p.yaml"
    preset.write_text("runtime: {device: cuda, threads: 4, jobs_per_gpu: 3}\n")
    args = ["--gpus", "2", "--configfile", str(preset)]
    assert jobs_per_gpu_of(args) == 3
    assert gpu_arguments(args, {}, jobs_per_gpu=3) == ["--resources", "gpu=6", "--configfile", str(preset)]


@pytest.mark.slow
def test_the_gpu_profile_passes_k_to_the_jobs(tmp_path):
    preset = tmp_path / "tiny.yaml"
    preset.write_text((REPO / "presets" / "tiny.yaml").read_text().replace(
        "threads: 1", "threads: 1\n  jobs_per_gpu: 2"))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                           "--configfile", str(preset), "--profile",
                           str(REPO / "workflows" / "profiles" / "local-gpu"), "--resources", "gpu=6"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gpu_jobs = [c for c in _commands(proc.stdout + proc.stderr) if " -m benchmark pretrain " in c]
    assert gpu_jobs and all("APBENCH_GPU_SLOTS=3 APBENCH_JOBS_PER_GPU=2 " in c for c in gpu_jobs)
    # a slot count that is no whole number of cards is refused before any job
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                           "--configfile", str(preset), "--profile",
                           str(REPO / "workflows" / "profiles" / "local-gpu"), "--resources", "gpu=5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "not a whole number of cards" in proc.stdout + proc.stderr
