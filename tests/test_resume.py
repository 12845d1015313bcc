"""A training process killed after epoch k and resumed ends with the same weights as an
uninterrupted one (CPU, fixed seed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.io import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def stage_config(tmp_path, epochs):
    return {
        "data": {"root": str(tmp_path / "data"), "train_subset": 192, "val_size": 64, "batch_size": 64},
        "model": {"width": 0.25},
        "runtime": {"device": "cpu", "threads": 1},
        "train": {"epochs": epochs, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
                  "loss": "trades", "attack": {"eps": None, "steps": 2, "step_size": None},
                  "val_attack_steps": 1},
    }


def run_pretrain(tmp_path, name, cfg, crash_after=None):
    env = dict(os.environ)
    env.pop("APBENCH_CRASH_AFTER_EPOCH", None)
    if crash_after is not None:
        env["APBENCH_CRASH_AFTER_EPOCH"] = f"pretrain:{crash_after}"
    cmd = [sys.executable, "-m", "benchmark", "pretrain", "--config", json.dumps(cfg),
           "--dataset", "fashion-mnist", "--arch", "small_cnn", "--seed", "3",
           "--out", str(tmp_path / name / "dense.pt"), "--state-dir", str(tmp_path / name / "state")]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs the Debian package dataset-fashion-mnist (installed by .ci/run)")
def test_killed_and_resumed_training_matches_uninterrupted(tmp_path):
    cfg = stage_config(tmp_path, epochs=3)
    full = run_pretrain(tmp_path, "full", cfg)
    assert full.returncode == 0, full.stderr
    crashed = run_pretrain(tmp_path, "resumed", cfg, crash_after=1)
    assert crashed.returncode == 9, crashed.stderr  # died right after the epoch-1 checkpoint
    assert not (tmp_path / "resumed" / "dense.pt").exists()
    resumed = run_pretrain(tmp_path, "resumed", cfg)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "after epoch 1" in resumed.stdout
    a = load_checkpoint(tmp_path / "full" / "dense.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "dense.pt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_from_another_config_is_not_resumed(tmp_path):
    import torch.nn as nn
    from torch.utils.data import TensorDataset

    from benchmark.attacks import AttackConfig
    from benchmark.training import Trainer, TrainConfig

    ds = TensorDataset(torch.rand(32, 1, 4, 4), torch.randint(0, 2, (32,)))
    cfg = TrainConfig(epochs=1, lr=0.1, batch_size=16, attack=AttackConfig(0.1, 1, 0.1), val_attack_steps=0)

    def trainer(fp):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        return Trainer(net, list(net.parameters()), cfg, train_set=ds, val_set=None,
                       device=torch.device("cpu"), seed=0, state_path=tmp_path / "s.pt", fingerprint=fp)

    trainer("a").fit()
    t = trainer("b")
    assert t.try_resume() is False and t.epoch == 0
    t = trainer("a")
    assert t.try_resume() is True and t.epoch == 1
