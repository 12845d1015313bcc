"""k jobs per GPU priced from the measured busy fraction (benchmark/planning/gpu_sharing.py): a prediction
the estimate prints beside its card time, with the k it recommends."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.errors import ConfigError
from benchmark.planning import gpu_sharing as gs

REPO = Path(__file__).resolve().parent.parent


def test_k_jobs_gain_until_the_card_is_saturated():
    b = 27.5 / 82.2  # bf16 dense step: GPU busy a third of the time
    assert gs.busy_fraction("pretrain", "bf16") == pytest.approx(b)
    assert gs.speedup(b, 1) == 1
    assert gs.speedup(b, 2) == 2
    assert gs.speedup(b, 3) == pytest.approx(1 / b)  # saturated: 2.99 jobs' work per job time
    assert gs.speedup(b, 4) == pytest.approx(1 / b)  # more jobs only share the same card
    with pytest.raises(ConfigError):
        gs.speedup(b, 0)


def test_unprofiled_rules_gain_nothing_and_the_smallest_best_k_is_recommended():
    assert gs.busy_fraction("evaluate", "fp32") == 1.0
    seconds = {"pretrain": 100.0, "evaluate": 50.0}
    assert gs.card_seconds(seconds, "bf16", 1) == 150.0
    assert gs.card_seconds(seconds, "bf16", 3) == pytest.approx(100 * 27.5 / 82.2 + 50)
    assert gs.recommended_k(seconds, "bf16") == 3
    assert gs.recommended_k({"evaluate": 50.0}, "fp32") == 1
    assert gs.recommended_k({"pretrain": None}, "fp32") == 1


def test_k_outside_one_to_max_is_refused():
    assert gs.k_problem(1) is None and gs.k_problem(gs.MAX_K) is None
    assert "at least 1" in gs.k_problem(0)
    assert "more than" in gs.k_problem(gs.MAX_K + 1)


@pytest.mark.slow
def test_the_estimate_prints_table_main_at_k_1_and_the_recommended_k():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "estimate", "--configfile",
                           str(REPO / "presets" / "paper_cifar10.yaml"), "--target", "table_main"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "PREDICTED" in out and "  k=1: " in out and ", recommended" in out
    k1 = next(line for line in out.splitlines() if line.startswith("  k=1: "))
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert k1.split(": ", 1)[1].split(" of ")[0] == total.split("  ")[-1].split(" of ")[0]
    bad = subprocess.run([sys.executable, "-m", "benchmark", "estimate", "--configfile",
                          str(REPO / "presets" / "paper_cifar10.yaml"), "--jobs-per-gpu", "0"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode != 0 and "at least 1" in bad.stderr
