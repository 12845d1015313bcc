"""A killed run resumes with the README's command alone: the runner clears a dead run's lock,
never a live run's, and the resumed run gives the uninterrupted run's results."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import runner
from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "presets" / "tiny.yaml"


def _lock(workdir: Path) -> Path:
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / "0.output.lock"
    lock.write_text("work/tiny/some/output\n")
    return lock


def _record(workdir: Path, pid: int, start_time: str | None) -> None:
    (workdir / ".snakemake" / runner.RECORD).write_text(
        json.dumps({"pid": pid, "start_time": start_time, "argv": []}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper():
    """A live process standing in for a running Snakemake."""
    procs = []

    def start(*argv: str, cwd: Path | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv], cwd=cwd)
        procs.append(proc)
        # a live run has long been running; wait until this one shows its command line
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 30
        while cmdline.exists() and b"time.sleep" not in cmdline.read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_lock_of_a_dead_run_is_cleared(tmp_path):
    lock = _lock(tmp_path)
    _record(tmp_path, _dead_pid(), None)
    assert runner.clear_stale_lock(tmp_path) is True
    assert not lock.exists()


def test_lock_of_a_live_run_is_kept(tmp_path, sleeper):
    lock = _lock(tmp_path)
    live = sleeper()
    _record(tmp_path, live.pid, runner._start_time(live.pid))
    with pytest.raises(runner.LiveRunError, match=f"pid {live.pid}"):
        runner.clear_stale_lock(tmp_path)
    assert lock.exists()


def test_a_reused_pid_is_not_the_recorded_run(tmp_path, sleeper):
    lock = _lock(tmp_path)
    other = sleeper()  # alive, but started after the recorded run
    _record(tmp_path, other.pid, "1")
    assert runner.clear_stale_lock(tmp_path) is True
    assert not lock.exists()


def test_an_unrecorded_snakemake_in_the_directory_keeps_its_lock(tmp_path, sleeper):
    lock = _lock(tmp_path)  # a Snakemake started without the runner: no record
    live = sleeper("snakemake", "--cores", "1", cwd=tmp_path)
    with pytest.raises(runner.LiveRunError, match=f"pid {live.pid}"):
        runner.clear_stale_lock(tmp_path)
    assert lock.exists()
    # one working in another directory, given by --directory, is recognised too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lock2 = _lock(elsewhere)
    sleeper("snakemake", "--directory", str(elsewhere))
    with pytest.raises(runner.LiveRunError):
        runner.clear_stale_lock(elsewhere)
    assert lock2.exists()


@pytest.mark.slow
def test_the_runner_resumes_a_locked_directory_and_refuses_a_live_one(tmp_path, sleeper):
    lock = _lock(tmp_path)
    _record(tmp_path, _dead_pid(), None)
    cmd = [sys.executable, "-m", "benchmark.runner", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "-n", "--cores", "1", "--configfile", str(TINY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "removed the stale lock" in proc.stderr and not lock.exists()
    assert "pretrain" in proc.stdout + proc.stderr  # Snakemake ran (a dry run here)
    lock = _lock(tmp_path)
    live = sleeper()
    _record(tmp_path, live.pid, runner._start_time(live.pid))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1 and f"another Snakemake run (pid {live.pid})" in proc.stderr
    assert lock.exists()


def test_the_makefile_runs_presets_through_the_runner():
    proc = subprocess.run(["make", "-n", "quick", "run", "PRESET=tiny", "VENV=/nonexistent"],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0 and "make: not found" in proc.stderr:
        pytest.skip("make is not installed")
    lines = [ln for ln in proc.stdout.splitlines() if "snakemake" in ln or "runner" in ln]
    assert lines and all("-m benchmark.runner" in ln for ln in lines), proc.stdout
    assert any("presets/tiny.yaml" in ln for ln in lines)


# ------------------------------------------------------------------ a SIGKILLed run, resumed
def _results(workdir: Path) -> dict:
    out = {}
    for path in sorted((workdir / "results" / "tiny" / "runs").rglob("*.json")):
        record = json.loads(path.read_text())
        out[str(path.relative_to(workdir))] = {
            "metrics": {k: {f: v.get(f) for f in ("correct", "n", "acc")} if v else v
                        for k, v in record["metrics"].items()},
            "flags": record.get("flags"),
            "sparsity": record.get("sparsity"),
        }
    return out


def _run_cmd(workdir: Path) -> list[str]:
    """What `make run PRESET=tiny` runs, pointed at another working directory."""
    return [sys.executable, "-m", "benchmark.runner", "-s", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--profile", str(REPO / "workflows" / "profiles" / "local"), "--cores", "2",
            "--configfile", str(TINY)]


@pytest.mark.e2e
@pytest.mark.skipif(not Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_sigkilled_run_resumes_with_the_same_command_and_the_same_results(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir()
    killed.mkdir()
    proc = subprocess.run(_run_cmd(straight), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    # the same command, killed with everything it started once the mask search is under way
    run = subprocess.Popen(_run_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=REPO, start_new_session=True)
    prune_log = killed / "work" / "tiny" / "logs" / "prune"
    deadline = time.monotonic() + 600
    while not (prune_log.is_dir() and any(prune_log.rglob("*.log"))):
        assert run.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the mask search never started"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert list((killed / ".snakemake" / "locks").glob("*.lock")), "no stale lock to recover from"
    assert not (killed / "results" / "tiny" / "leaderboard.md").exists()

    proc = subprocess.run(_run_cmd(killed), capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert (killed / "results" / "tiny" / "leaderboard.md").is_file()
    assert _results(killed) == _results(straight) != {}


def test_a_target_after_the_config_files_is_passed_as_a_target():
    from benchmark.runner import targets_first

    args = ["--profile", "p", "--configfile", "presets/a.yaml", "presets/b.yml", "table_main", "--cores", "2"]
    assert targets_first(args) == ["table_main", "--profile", "p", "--configfile", "presets/a.yaml",
                                   "presets/b.yml", "--cores", "2"]
    plain = ["--cores", "2", "--configfile", "presets/a.yaml"]
    assert targets_first(plain) == plain
