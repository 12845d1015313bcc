"""The runner's guards: one run per preset at a time (an OS lock that dies with its process), a
run far over the machine confirmed first, a preset refused in one line before Snakemake starts;
writes that fail (a full disk, a path through a file) end in one line naming the path and the
remedy, with nothing partial left; and the same training twice gives byte-identical model files."""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest

from benchmark.planning import run_guard

REPO = Path(__file__).resolve().parent.parent


def _runner(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark.runner", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


HOLDER = textwrap.dedent("""\
    import os, sys
    from pathlib import Path
    from benchmark.planning import run_guard
    run_guard.acquire(Path(sys.argv[1]), ["python", "-m", "benchmark.runner", "--configfile", "tiny.yaml"])
    print("held", flush=True)
    os.execv("/bin/sleep", ["sleep", "60"])  # as the runner execs Snakemake: the lock goes along
    """)


def test_a_second_run_of_a_preset_stops_naming_the_running_one_and_a_dead_runs_lock_clears(tmp_path):
    results = tmp_path / "results" / "tiny"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(results)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = _runner("--directory", str(tmp_path), "--cores", "1", "--configfile",
                       str(REPO / "presets" / "tiny.yaml"), cwd=tmp_path)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "Traceback" not in out, out
        assert f"another run of this preset is working in {results}" in out
        assert f"pid {holder.pid}" in out and "--configfile tiny.yaml" in out and "started" in out
        assert not (tmp_path / ".snakemake").exists()  # Snakemake never started
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed run left its lock file; the kernel released its lock with the process
    assert (results / run_guard.LOCK_NAME).is_file()
    fd = run_guard.acquire(results, ["next"])
    os.close(fd)


def test_a_run_far_over_the_machine_needs_a_yes(tmp_path):
    assert run_guard.confirm_cost(10.0, yes=False, limit=72) is None
    assert run_guard.confirm_cost(None, yes=False, limit=72) is None
    assert run_guard.confirm_cost(1e6, yes=True, limit=72) is None
    with pytest.raises(run_guard.NotConfirmed, match="1,000,000 h .* --yes"):
        run_guard.confirm_cost(1e6, yes=False, limit=72, interactive=False)
    # the runner, without a terminal: the paper preset on this machine's device is refused
    env_limit = {"APBENCH_CONFIRM_HOURS": "0.05"}  # quick: about half an hour
    proc = subprocess.run([sys.executable, "-m", "benchmark.runner", "--directory", str(tmp_path),
                           "--cores", "1", "--configfile", str(REPO / "presets" / "quick.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env_limit})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Run with --yes" in out and "Traceback" not in out, out
    assert not (tmp_path / ".snakemake").exists()


def test_a_bad_preset_is_one_line_before_snakemake(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text((REPO / "presets" / "tiny.yaml").read_text().replace("name: tiny\n", "name: tiny\nname: x\n"))
    proc = _runner("--directory", str(tmp_path), "--cores", "1", "--configfile", str(preset), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "duplicate key 'name'" in out and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1


def _limited(limit_bytes: int):
    def apply():
        # a full disk, without root's privileges or a mount: writes past the limit fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    fx.write_result(root, method="dense", sparsity=0)
    fx.write_result(root, method="hydra", s2ap="off", sparsity=90)
    return root


def test_a_full_disk_ends_in_one_line_naming_the_path_with_nothing_partial(runs, tmp_path):
    out = tmp_path / "board"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "aggregate", "--runs", str(runs),
                           "--out", str(out), "--no-plots"], capture_output=True, text=True,
                          timeout=300, preexec_fn=_limited(100), cwd=tmp_path)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert f"cannot write {out}/" in err and "the disk is full" in err, err
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True


def test_a_path_through_a_file_ends_in_one_line(runs, tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    out = tmp_path / "afile" / "board"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "aggregate", "--runs", str(runs),
                           "--out", str(out), "--no-plots"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert f"cannot write {out}/" in err and "is a file" in err, err


@pytest.mark.slow
def test_the_same_training_twice_gives_byte_identical_model_files(tmp_path):
    from benchmark.core import config as C
    from benchmark.training import stages

    cfg = C.validate(C.load_preset(REPO / "presets" / "tiny.yaml"))
    stage = C.stage_config(cfg, "pretrain", dataset="fashion-mnist", arch="small_cnn", method="hydra")
    digests = []
    for i in range(2):
        out = tmp_path / f"dense{i}.pt"
        stages.pretrain(stage, dataset="fashion-mnist", arch="small_cnn", seed=0, out=out)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
        time.sleep(0.01)
    assert digests[0] == digests[1]
    # the timings went beside the model, and a reader gets them back
    _, meta = stages._read_artifact(tmp_path / "dense1.pt")
    assert meta["timing"]["pretrain_s"] > 0 and all("time_s" in h for h in meta["history"])
