"""A training process killed after epoch k, or stopped by SIGTERM in the middle of an epoch, and
resumed ends with the same weights as an uninterrupted one (CPU, fixed seed); its log shows where it
is and when it will end."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR
from benchmark.core.io import load_checkpoint

# real training runs, killed and resumed (seconds each): make test-fast leaves them out
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
needs_fashion_mnist = pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR).is_dir(),
    reason="needs the Debian package dataset-fashion-mnist (installed by .ci/run)")


def stage_config(root: Path, epochs):
    return {
        "data": {"root": str(root / "data"), "train_subset": 192, "val_size": 64, "batch_size": 64},
        "model": {"width": 0.25},
        "runtime": {"device": "cpu", "threads": 1},
        "train": {"epochs": epochs, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
                  "loss": "trades", "attack": {"eps": None, "steps": 2, "step_size": None},
                  "val_attack_steps": 1},
    }


def run_pretrain(root: Path, name, cfg, env_extra=None):
    """One `pretrain` job with its output sent to a log file, as Snakemake does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APBENCH_")}
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "benchmark", "pretrain", "--config", json.dumps(cfg),
           "--dataset", "fashion-mnist", "--arch", "small_cnn", "--seed", "3",
           "--out", str(root / name / "dense.pt"), "--state-dir", str(root / name / "state")]
    (root / name).mkdir(parents=True, exist_ok=True)
    log = root / name / f"job{len(list((root / name).glob('job*.log')))}.log"
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    return proc.returncode, log.read_text()


def final_weights(root: Path, name: str) -> dict:
    return load_checkpoint(root / name / "dense.pt")["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    code, log = run_pretrain(root, "full", stage_config(root, epochs=3))
    assert code == 0, log
    return root, log


@needs_fashion_mnist
def test_killed_and_resumed_training_matches_uninterrupted(uninterrupted):
    root, _ = uninterrupted
    cfg = stage_config(root, epochs=3)
    code, log = run_pretrain(root, "killed", cfg, {"APBENCH_CRASH_AFTER_EPOCH": "pretrain:1"})
    assert code == 9, log  # died right after the epoch-1 checkpoint
    assert not (root / "killed" / "dense.pt").exists()
    code, log = run_pretrain(root, "killed", cfg)
    assert code == 0, log
    assert "resumed from" in log and "after epoch 1" in log
    assert_same_weights(final_weights(root, "full"), final_weights(root, "killed"))


@needs_fashion_mnist
def test_sigterm_mid_epoch_keeps_the_checkpoint_and_resumes_identically(uninterrupted):
    root, _ = uninterrupted
    cfg = stage_config(root, epochs=3)
    # 3 steps per epoch: step 5 is the middle of epoch 2
    code, log = run_pretrain(root, "stopped", cfg, {"APBENCH_SIGTERM_AFTER_STEP": "pretrain:5"})
    assert code == 128 + signal.SIGTERM, log
    assert "Traceback" not in log
    assert "stopped by SIGTERM during epoch 2/3" in log
    state = root / "stopped" / "state" / "pretrain.pt"
    assert f"checkpoint after epoch 1 is kept in {state}" in log
    assert load_checkpoint(state)["epoch"] == 1
    assert not (root / "stopped" / "dense.pt").exists()
    code, log = run_pretrain(root, "stopped", cfg)
    assert code == 0, log
    assert "resumed from" in log and "after epoch 1" in log
    assert_same_weights(final_weights(root, "full"), final_weights(root, "stopped"))


@needs_fashion_mnist
def test_job_log_shows_epoch_lines_with_an_eta(uninterrupted):
    _, log = uninterrupted
    line = re.compile(r"^\d\d:\d\d:\d\d \[pretrain\] epoch (\d)/3 loss=\S+ lr=\S+ .*\| elapsed \d+:\d\d:\d\d, "
                      r"[\d.]+ s/epoch, remaining \d+:\d\d:\d\d, eta \d\d:\d\d:\d\d$", re.M)
    assert [int(m.group(1)) for m in line.finditer(log)] == [1, 2, 3], log
    assert "\r" not in log  # no progress bar drawn into a file


# ------------------------------------------------------------------------------ in-process
def _tiny_trainer(tmp_path, epochs=3, hooks=(), fingerprint="a"):
    import torch.nn as nn
    from torch.utils.data import TensorDataset

    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig, Trainer

    gen = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(48, 1, 4, 4, generator=gen), torch.randint(0, 2, (48,), generator=gen))
    cfg = TrainConfig(epochs=epochs, lr=0.1, batch_size=16, attack=AttackConfig(0.1, 1, 0.1), val_attack_steps=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    return Trainer(net, list(net.parameters()), cfg, train_set=ds, val_set=None, device=torch.device("cpu"),
                   seed=0, state_path=tmp_path / "s.pt", hooks=list(hooks), fingerprint=fingerprint,
                   log=lambda m: None)


needs_main_thread = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                       reason="signal handlers need the main thread")


@needs_main_thread
def test_sigterm_during_a_checkpoint_write_lets_it_finish(tmp_path, monkeypatch):
    """The signal arrives while the epoch-1 checkpoint is being written (its bytes are out, the
    rename is still to come): the write completes, the loop stops after it, and that checkpoint
    resumes to the uninterrupted weights."""
    from benchmark.core.errors import Interrupted

    reference = _tiny_trainer(tmp_path / "ref")
    reference.fit()
    real_save = torch.save

    def save_then_signal(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    def ignored(signum, frame):  # a loop that handled no signals would otherwise end pytest
        pass

    monkeypatch.setattr(torch, "save", save_then_signal)
    before = signal.signal(signal.SIGTERM, ignored)
    try:
        with pytest.raises(Interrupted) as exc:
            _tiny_trainer(tmp_path).fit()
        assert signal.getsignal(signal.SIGTERM) is ignored  # the loop's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, before)
        monkeypatch.setattr(torch, "save", real_save)
    assert exc.value.exit_code == 143 and "after epoch 1/3" in str(exc.value)
    assert load_checkpoint(tmp_path / "s.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    resumed = _tiny_trainer(tmp_path)
    resumed.fit()
    for a, b in zip(reference.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_from_another_config_is_not_resumed(tmp_path):
    import torch.nn as nn
    from torch.utils.data import TensorDataset

    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig, Trainer

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
