"""Issue 3 through the real DAG: the "Add your method" example with S2AP off and on, HARP, seed
stability, the paired S2AP table and the gamma sweep, on the tiny preset."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"


def snakemake(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd),
           *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def tiny_variant(tmp_path: Path, **grid) -> Path:
    raw = yaml.safe_load((PRESETS / "tiny.yaml").read_text())
    raw["method_files"] = [str(REPO / "examples" / "my_method.py")]
    raw["grid"].update(grid)
    raw["diagnostics"]["seed_stability"] = True
    raw["gamma_sweep"] = {"gammas": [0.0, 0.05], "methods": ["hydra_global"]}
    path = tmp_path / "tiny_s2ap.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_example_method_is_a_valid_choice_only_with_its_plugin(tmp_path):
    preset = tiny_variant(tmp_path, methods=["hydra_global"])
    ok = snakemake("-n", "--cores", "1", "--configfile", preset, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    raw = yaml.safe_load(preset.read_text())
    raw["grid"]["methods"] = ["no_such_method"]
    preset.write_text(yaml.safe_dump(raw))
    bad = snakemake("-n", "--cores", "1", "--configfile", preset, cwd=tmp_path)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "no_such_method" in out and "hydra_global" in out and "harp" in out


@pytest.mark.e2e
@pytest.mark.skipif(not Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR).is_dir(),
                    reason="needs the Debian package dataset-fashion-mnist (installed by .ci/run)")
def test_example_method_runs_with_s2ap_into_the_leaderboard(tmp_path):
    preset = tiny_variant(tmp_path, methods=["hydra_global", "lwm"], s2ap=["off", "on"])
    # targets first: --configfile takes every word after it
    proc = snakemake("all", "gamma_sweep", "--cores", "2", "--configfile", preset, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    results = tmp_path / "results" / "tiny"
    with open(results / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    cells = {(r["method"], r["s2ap"]) for r in rows}
    assert {("dense", "n/a"), ("hydra_global", "off"), ("hydra_global", "on"), ("lwm", "n/a")} <= cells
    ours = [r for r in rows if r["method"] == "hydra_global"]
    for r in ours:  # diagnostics of the search, seed stability included, reach the leaderboard
        assert r["diag.mask_robust_acc"] != ""
        assert 0.0 <= float(r["diag.seed_flip_fraction"]) <= 1.0
        assert r["diag.stability_worst_r0.05"] != ""
    with open(results / "s2ap_paired.csv") as fh:
        pairs = list(csv.DictReader(fh))
    by_method = {p["method"]: p for p in pairs}
    pair = by_method["hydra_global"]
    # the tiny preset's models may have learned nothing: then the pair lists them as left out
    # (degenerate) instead of giving a delta, and their rows say why
    assert pair["s2ap_applicable"] == "True" and (pair["delta"] != "") != bool(pair["left_out"])
    if pair["left_out"]:
        assert any("degenerate" in r["flag"] for r in ours)
    assert by_method["lwm"]["s2ap_applicable"] == "False" and by_method["lwm"]["s2ap_aa"] == ""
    assert "S2AP" in (results / "leaderboard.md").read_text()
    with open(results / "gamma_sweep.csv") as fh:
        sweep = list(csv.DictReader(fh))
    assert sorted(float(r["gamma"]) for r in sweep) == [0.0, 0.05]
    assert sum(r["selected"] == "True" for r in sweep) == 1
    # a result deleted by hand comes back (Snakemake skips deleted intermediates by default)
    lost = results / "runs" / "fashion-mnist" / "small_cnn" / "hydra_global" / "on" / "sp90" / "seed0.json"
    lost.unlink()
    dry = snakemake("-n", "all", "--cores", "1", "--configfile", preset, cwd=tmp_path)
    assert "Nothing to be done" not in dry.stdout + dry.stderr
    assert "rule evaluate:" in dry.stdout + dry.stderr
