"""Progress lines of the training loop: formats, and the in-epoch lines of a job without a terminal."""
from __future__ import annotations

import datetime as dt
import re
import time

import torch

from benchmark.runtime import progress


def test_duration_and_clock_formats():
    assert progress.duration(0) == "0:00:00"
    assert progress.duration(3725.4) == "1:02:05"
    assert progress.duration(90 * 3600) == "90:00:00"  # hours unbounded, as SLURM prints them
    now = dt.datetime(2025, 3, 1, 10, 0, 0)
    assert progress.clock(dt.datetime(2025, 3, 1, 23, 59, 1), now) == "23:59:01"
    assert progress.clock(dt.datetime(2025, 3, 2, 0, 5, 0), now) == "2025-03-02 00:05"


def test_eta_counts_only_the_work_done_in_this_process():
    # resumed after epoch 4 of 10, 100 s ago; epochs 5 and 6 done since: 50 s each, 4 to go
    eta = progress.Eta(total=10, done=4, start=time.perf_counter() - 100)
    assert eta.line(4).startswith("elapsed ")
    m = re.fullmatch(r"elapsed (\S+), ([\d.]+) s/epoch, remaining (\S+), eta .+", eta.line(6))
    assert m, eta.line(6)
    seconds = lambda hms: sum(int(x) * f for x, f in zip(hms.split(":"), (3600, 60, 1)))  # noqa: E731
    per = float(m.group(2))
    assert per >= 50 and abs(seconds(m.group(1)) - 2 * per) <= 1 and abs(seconds(m.group(3)) - 4 * per) <= 1


def test_bars_only_on_a_terminal_unless_forced(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert not progress.show_bars()
    monkeypatch.setenv(progress.PROGRESS_ENV, "1")
    assert progress.show_bars() and progress.in_epoch_interval() == 0.0


def test_job_without_terminal_logs_steps_within_an_epoch(monkeypatch):
    import torch.nn as nn
    from torch.utils.data import TensorDataset

    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig, Trainer

    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    monkeypatch.setenv(progress.PROGRESS_INTERVAL_ENV, "1e-9")  # every step
    ds = TensorDataset(torch.rand(48, 1, 4, 4), torch.randint(0, 2, (48,)))
    cfg = TrainConfig(epochs=2, lr=0.1, batch_size=16, attack=AttackConfig(0.1, 1, 0.1), val_attack_steps=0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    lines: list[str] = []
    Trainer(net, list(net.parameters()), cfg, train_set=ds, val_set=None, device=torch.device("cpu"),
            seed=0, log=lines.append, desc="prune").fit()
    steps = [ln for ln in lines if " step " in ln]
    # the last step of an epoch is reported by the epoch line itself
    assert [ln.split(" step ")[1].split()[0] for ln in steps] == ["1/3", "2/3"] * 2, lines
    assert all(re.search(r"s/step, remaining \d+:\d\d:\d\d, eta ", ln) for ln in steps), steps
    epochs = [ln for ln in lines if re.match(r"\[prune\] epoch \d/2 loss=", ln)]
    assert len(epochs) == 2 and all("s/epoch, remaining" in ln for ln in epochs), lines
