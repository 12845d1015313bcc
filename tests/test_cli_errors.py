"""Expected failures of `python -m benchmark` end in one message and exit status 2; the traceback
appears only with --debug or APBENCH_DEBUG=1. Run as subprocesses, as Snakemake runs them."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.core.errors import DEBUG_ENV

ROOT = Path(__file__).resolve().parent.parent

TRAIN = {"epochs": 1, "lr": 0.05, "batch_size": 8, "attack": {"eps": None, "steps": 1, "step_size": None}}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    message = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(message) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)


@pytest.mark.slow
def test_missing_checkpoint_is_one_message(tmp_path):
    missing = tmp_path / "search.pt"
    proc = run_cli("stability", "--a", str(missing), "--b", str(missing), "--out", str(tmp_path / "s.json"))
    assert_clean_failure(proc, "checkpoint not found", str(missing), "--debug")
    assert len(proc.stderr.strip().splitlines()) <= 2


@pytest.mark.slow
def test_debug_flag_and_env_var_show_the_traceback(tmp_path):
    missing = str(tmp_path / "search.pt")
    args = ["stability", "--a", missing, "--b", missing, "--out", str(tmp_path / "s.json")]
    for proc in (run_cli(*args, "--debug"), run_cli(*args, env={DEBUG_ENV: "1"})):
        assert proc.returncode == 2
        assert "Traceback" in proc.stderr and "MissingFileError" in proc.stderr
        assert "checkpoint not found" in proc.stderr


def test_debug_is_accepted_before_and_after_the_command():
    parser = cli.build_parser()
    base = ["stability", "--a", "a", "--b", "b", "--out", "o"]
    assert cli.debug_requested(parser.parse_args(["--debug", *base]))
    assert cli.debug_requested(parser.parse_args([*base, "--debug"]))
    os.environ.pop(DEBUG_ENV, None)
    assert not cli.debug_requested(parser.parse_args(base))


@pytest.mark.slow
def test_unsafe_checkpoint_is_refused_without_running_its_code(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, evil)
    proc = run_cli("stability", "--a", str(evil), "--b", str(evil), "--out", str(tmp_path / "s.json"))
    assert_clean_failure(proc, "cannot load checkpoint", str(evil), "weights_only=True")
    assert not marker.exists()


@pytest.mark.slow
def test_checkpoint_of_another_architecture_names_file_and_model(tmp_path):
    from benchmark.core.datasets import get_info
    from benchmark.core.io import atomic_torch_save
    from benchmark.core.models import build_model

    model = build_model("small_cnn", get_info("fashion-mnist"), width=0.25)
    path = tmp_path / "model.pt"
    atomic_torch_save({"state_dict": model.state_dict(), "masks": None, "meta": "{}"}, path)
    cfg = {"data": {"root": str(tmp_path / "data")}, "model": {"width": 0.25},
           "runtime": {"device": "cpu"}, "evaluate": {"eps": None, "pgd": None, "autoattack": None}}
    cell = {"dataset": "fashion-mnist", "arch": "resnet18", "method": "dense", "s2ap": "n/a",
            "sparsity": 0, "seed": 0}
    proc = run_cli("evaluate", "--config", json.dumps(cfg), "--model", str(path), "--cell", json.dumps(cell),
                   "--out", str(tmp_path / "r.json"))
    assert_clean_failure(proc, str(path), "does not fit the resnet18 model of fashion-mnist")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_unknown_method_lists_the_choices(tmp_path):
    cfg = {"data": {"root": str(tmp_path / "data")}, "runtime": {"device": "cpu"}, "train": TRAIN}
    proc = run_cli("prune", "--config", json.dumps(cfg), "--dataset", "fashion-mnist", "--arch", "small_cnn",
                   "--seed", "0", "--method", "nope", "--sparsity", "90", "--out", str(tmp_path / "s.pt"))
    assert_clean_failure(proc, "unknown method 'nope'", "hydra")


@pytest.mark.slow
def test_bad_config_names_the_field(tmp_path):
    cfg = {"data": {"root": str(tmp_path / "data")}, "runtime": {"device": "cpu"},
           "train": {**TRAIN, "epoch": 3}}
    proc = run_cli("pretrain", "--config", json.dumps(cfg), "--dataset", "fashion-mnist", "--arch",
                   "small_cnn", "--seed", "0", "--out", str(tmp_path / "dense.pt"))
    assert_clean_failure(proc, "train.epoch")


@pytest.mark.slow
def test_missing_dataset_says_which_and_the_remedy(tmp_path):
    cfg = {"data": {"root": str(tmp_path / "data"), "download": False}, "runtime": {"device": "cpu"},
           "train": TRAIN}
    proc = run_cli("pretrain", "--config", json.dumps(cfg), "--dataset", "cifar10", "--arch", "small_cnn",
                   "--seed", "0", "--out", str(tmp_path / "dense.pt"))
    assert_clean_failure(proc, "dataset 'cifar10' not found", "data.download: true",
                         str(tmp_path / "data" / "cifar-10-batches-py"))


def test_unreadable_config_file_is_a_usage_error(tmp_path):
    proc = run_cli("pretrain", "--config", f"@{tmp_path / 'nope.json'}", "--dataset", "cifar10", "--arch",
                   "small_cnn", "--seed", "0", "--out", str(tmp_path / "dense.pt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot read" in proc.stderr and "nope.json" in proc.stderr


@pytest.mark.slow
def test_method_file_flag_registers_the_file():
    proc = run_cli("methods", "--method-file", "examples/my_method.py")
    assert proc.returncode == 0, proc.stderr
    assert "hydra_global" in proc.stdout


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only expected failures are shortened: an unexpected exception propagates unchanged."""
    import signal

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "run", boom)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        with pytest.raises(ZeroDivisionError):
            cli.main(["methods"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        root.handlers[:], root.level = before[0], before[1]
