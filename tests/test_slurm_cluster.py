"""The slurm profile on a real one-node SLURM cluster (scripts/slurm_cluster.sh: Debian's slurm-wlm
and munge, daemons as plain processes, no accounting database): the tiny preset run by the
README's cluster command gives the numbers of a local run, every stage ran as a SLURM job, a job
killed with scancel is submitted again by a rerun, and bad settings are refused before anything is
submitted."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
TINY = REPO / "presets" / "tiny.yaml"
COMPUTE_RULES = ("pretrain", "prune", "finetune", "evaluate", "evaluate_dense")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _cluster_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APBENCH_SLURM_", "SLURM_"))}
    return env


@pytest.fixture(scope="module")
def cluster():
    """The test cluster, started here unless it already runs (then left running)."""
    if importlib_missing("snakemake_executor_plugin_slurm"):
        pytest.skip("snakemake-executor-plugin-slurm not installed (pip install -e '.[cluster]')")
    have = all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not have and os.geteuid() != 0:
        pytest.skip("slurm-wlm and munge are not installed and this is not root (CI installs them)")
    env = _cluster_env()
    was_running = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True,
                                 text=True).returncode == 0
    start = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                           timeout=900)
    assert start.returncode == 0, start.stdout + start.stderr
    yield env
    if not was_running:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def readme_command(workdir: Path, *extra: str, preset: Path = TINY) -> list[str]:
    """The README's command (its section "Run on a SLURM cluster"), for the tiny preset."""
    return [sys.executable, "-m", "benchmark.runner", "-s", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--profile", str(REPO / "workflows" / "profiles" / "slurm"), *extra,
            "--configfile", str(preset)]


def squeue(env: dict) -> list[tuple[str, str, str]]:
    proc = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i|%T|%k"], env=env,
                          capture_output=True, text=True, timeout=60)
    return [tuple(line.split("|", 2)) for line in proc.stdout.splitlines() if line.count("|") == 2]


CLOCK = re.compile(r"second|time|elapsed|duration", re.I)


def _without_clock(obj):
    """The numbers a run computes, without how long it took (which differs run to run)."""
    if isinstance(obj, dict):
        return {k: _without_clock(v) for k, v in obj.items() if not CLOCK.search(k)}
    if isinstance(obj, list):
        return [_without_clock(v) for v in obj]
    return obj


def numbers(results: Path) -> dict:
    """Every number of the run: the leaderboard rows and each result's metrics and sparsity."""
    with open(results / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    runs = {}
    for path in sorted((results / "runs").rglob("*.json")):
        data = json.loads(path.read_text())
        runs[str(path.relative_to(results))] = _without_clock([data["metrics"], data["sparsity"]])
    assert len(runs) == 2 and rows  # the dense model and the HYDRA cell
    return {"leaderboard": _without_clock(rows), "runs": runs}


def test_tiny_preset_through_slurm_equals_the_local_run_and_survives_scancel(cluster, tmp_path):
    env = cluster
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    # the local reference runs beside the cluster run: the cluster's jobs wait on status checks
    # far more than they compute
    local = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
         str(local_dir), "--profile", str(REPO / "workflows" / "profiles" / "local"), "--cores", "1",
         "--configfile", str(TINY)], cwd=local_dir, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)

    # 1. the README's command, no retries: the finetune job is killed with scancel while it runs
    run = subprocess.Popen(readme_command(slurm_dir, "--retries", "0"), cwd=slurm_dir, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.monotonic() + 600
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        for jobid, state, comment in squeue(env):
            if comment.startswith("rule_finetune") and state == "RUNNING":
                subprocess.run(["scancel", jobid], env=env, check=True, timeout=60)
                killed = jobid
        time.sleep(0.5)
    first, _ = run.communicate(timeout=600)
    assert killed is not None, first[-5000:]
    assert run.returncode != 0, first[-5000:]
    assert f"SLURM-job '{killed}' failed, SLURM status is: 'CANCELLED'" in first, first[-5000:]
    # the cluster's job status came from squeue: no sacct, no accounting database here
    assert "sacct" not in first.replace("(status command is not 'sacct')", ""), first[-5000:]

    # 2. the same command again: the killed job is submitted anew and the run completes
    proc = subprocess.run(readme_command(slurm_dir), cwd=slurm_dir, env=env, capture_output=True,
                          text=True, timeout=900)
    second = proc.stdout + proc.stderr
    assert proc.returncode == 0, second[-5000:]
    resubmitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*rule_finetune/", second)
    assert resubmitted and killed not in resubmitted, second[-5000:]
    # no warning about guessing an account on a cluster that needs none
    assert "trying to guess" not in first + second

    # every stage ran as a SLURM job: its SLURM log is named by the job id Snakemake reported
    ids = set(re.findall(r"submitted with SLURM jobid (\d+)", first + second))
    logs = slurm_dir / ".snakemake" / "slurm_logs"
    for rule in COMPUTE_RULES:
        found = {p.stem for p in (logs / f"rule_{rule}").rglob("*.log")}
        assert found and found <= ids, (rule, found, ids)
    assert killed in {p.stem for p in (logs / "rule_finetune").rglob("*.log")}  # kept, as the failed one

    # the numbers are those of the local run
    out, _ = local.communicate(timeout=900)
    assert local.returncode == 0, out[-5000:]
    assert numbers(slurm_dir / "results" / "tiny") == numbers(local_dir / "results" / "tiny")


def run_refused(env: dict, workdir: Path, preset: Path = TINY) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(readme_command(workdir, preset=preset), cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "nothing was submitted" in out and "has been submitted" not in out, out[-3000:]
    assert time.monotonic() - start < 120
    return out


def test_a_partition_the_cluster_lacks_is_refused_before_submission(cluster, tmp_path):
    out = run_refused({**cluster, "APBENCH_SLURM_PARTITION": "nosuch"}, tmp_path)
    assert "APBENCH_SLURM_PARTITION=nosuch: the cluster has no such partition (it has: debug)" in out


def test_a_job_no_node_can_run_is_refused_instead_of_pending_forever(cluster, tmp_path):
    text = TINY.read_text().replace("threads: 1", "threads: 512")
    preset = tmp_path / "tiny.yaml"  # same name: the preset's name is the file's
    preset.write_text(text)
    out = run_refused(cluster, tmp_path / "w", preset)
    assert "no node of partition debug can run a job asking 512 CPUs (runtime.threads)" in out
    assert "would wait forever" in out


def test_an_unreachable_controller_is_a_clear_error(cluster, tmp_path):
    conf = subprocess.run(["bash", str(SCRIPT), "env"], env=cluster, capture_output=True,
                          text=True).stdout.strip().split("=", 1)[1]
    bad = tmp_path / "slurm.conf"
    bad.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=1", Path(conf).read_text()))
    out = run_refused({**cluster, "SLURM_CONF": str(bad)}, tmp_path / "w")
    assert "the SLURM controller does not answer" in out
