"""AutoAttack shards as jobs of their own (runtime.autoattack_shard_jobs): each shard job writes
its shard where the evaluation finds it done, and the evaluation's numbers are those of one
evaluation that ran every shard itself. The workflow schedules one job per shard, before the
evaluation that reads them."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core import config as C
from benchmark.core.io import read_json
from benchmark.training import stages

REPO = Path(__file__).resolve().parent.parent
DATASET, ARCH = "fashion-mnist", "small_cnn"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    cfg = copy.deepcopy(C.load_preset(REPO / "presets" / "tiny.yaml"))
    cfg["data"]["root"] = str(root / "data")
    cfg["evaluate"]["autoattack"].update(n_images=8, shard_size=3, batch_size=None)
    dense = root / "dense.pt"
    stages.pretrain(C.stage_config(cfg, "pretrain", dataset=DATASET, arch=ARCH), dataset=DATASET,
                    arch=ARCH, seed=0, out=dense)
    return cfg, dense, root


CELL = {"dataset": DATASET, "arch": ARCH, "method": "dense", "s2ap": "n/a", "sparsity": 0.0,
        "seed": 0, "preset": "tiny"}


@pytest.mark.slow
def test_shard_jobs_then_the_evaluation_give_the_numbers_of_one_evaluation(tiny):
    cfg, dense, root = tiny
    ecfg = C.stage_config(cfg, "evaluate", dataset=DATASET, arch=ARCH)
    state = root / "state_jobs"
    receipts = [stages.autoattack_shard(ecfg, model_path=dense, cell=CELL, shard=i,
                                        out=root / f"shard{i}.json", state_dir=state)
                for i in range(4)]
    assert [r["shards"] for r in receipts] == [[0], [1], [2], []]  # 8 images in shards of 3
    assert all(read_json(root / f"shard{i}.json")["shard"] == i for i in range(4))
    sharded = stages.evaluate(ecfg, model_path=dense, cell=CELL, out=root / "a.json", state_dir=state)
    alone = stages.evaluate(ecfg, model_path=dense, cell=CELL, out=root / "b.json",
                            state_dir=root / "state_alone")
    aa = sharded["metrics"]["autoattack"]
    assert aa["n_shards"] == 3 and aa["resumed_shards"] == 3
    assert alone["metrics"]["autoattack"]["resumed_shards"] == 0
    assert sharded["flags"] == alone["flags"]
    for key in ("correct", "n", "robust_after", "perturbed", "batch_size", "attack_params"):
        assert aa[key] == alone["metrics"]["autoattack"][key], key
    # every stage's CPU thread count is recorded (it changes the last bits of a CPU run)
    threads = sharded["provenance"]["threads"]
    assert set(threads) == {"pretrain", "evaluate"} and all(t >= 1 for t in threads.values())


@pytest.mark.slow
def test_the_workflow_runs_one_job_per_shard_before_each_evaluation(tmp_path):
    extra = tmp_path / "shards.yaml"
    extra.write_text("runtime: {device: cpu, threads: 1, bf16: false, channels_last: false, "
                     "autoattack_shard_jobs: true}\n"
                     "evaluate: {autoattack: {n_images: 8, version: standard, attacks: [apgd-ce], "
                     "batch_size: 8, shard_size: 3, seed: 0}}\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                           "--cores", "2", "--configfile", str(REPO / "presets" / "tiny.yaml"),
                           str(extra)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # 2 models (dense, hydra) x 3 shards
    assert any(line.split() == ["autoattack_shard", "6"] for line in out.splitlines())
    plain = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                            "--cores", "2", "--configfile", str(REPO / "presets" / "tiny.yaml")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert plain.returncode == 0 and "autoattack_shard" not in plain.stdout + plain.stderr
