"""Learning-rate schedules, stepped once per epoch: RST's step schedule is x0.1 at 50 % and at 75 %
of the epochs (its CIFAR configs: 160 epochs, x0.1 at epochs 80 and 120)."""
import pytest
import torch
import torch.nn as nn

from benchmark.core import io
from benchmark.training.loop import TrainConfig, Trainer, build_scheduler


def lrs_per_epoch(epochs: int, lr: float = 0.1, schedule: str = "step") -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = build_scheduler(opt, TrainConfig(epochs=epochs, lr=lr, schedule=schedule))
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_gives_rst_s_learning_rates_at_epochs_80_and_120_of_160():
    lrs = lrs_per_epoch(160)
    assert lrs[0] == pytest.approx(0.1) and lrs[79] == pytest.approx(0.1)
    assert lrs[80] == pytest.approx(0.01) and lrs[119] == pytest.approx(0.01)
    assert lrs[120] == pytest.approx(0.001) and lrs[159] == pytest.approx(0.001)
    assert len({round(v, 12) for v in lrs}) == 3


@pytest.mark.parametrize("epochs,expected", [
    (4, [0.1, 0.1, 0.01, 0.001]),
    (8, [0.1] * 4 + [0.01] * 2 + [0.001] * 2),
    # 0.5 * 5 = 2.5 and 0.75 * 5 = 3.75: epochs 0-2 at lr, epoch 3 at lr/10, epoch 4 at lr/100
    (5, [0.1, 0.1, 0.1, 0.01, 0.001]),
])
def test_step_schedule_milestones_for_short_runs(epochs, expected):
    assert lrs_per_epoch(epochs) == pytest.approx(expected)


def test_the_trainer_records_the_step_schedule_and_resumes_it(tmp_path):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 4), torch.randint(0, 2, (16,)))
    cfg = TrainConfig(epochs=4, lr=0.2, loss="clean", schedule="step", batch_size=8)
    state = tmp_path / "state.pt"

    def trainer(epochs):
        model = nn.Linear(4, 2)
        c = TrainConfig(**{**cfg.__dict__, "epochs": 4})
        t = Trainer(model, list(model.parameters()), c, train_set=data, val_set=None,
                    device=torch.device("cpu"), seed=0, state_path=state)
        t.cfg.epochs = epochs  # stop early, as a killed job would
        return t

    first = trainer(2).fit()
    assert [r["lr"] for r in first] == pytest.approx([0.2, 0.2])
    # the scheduler's state (with the step rule) travels through a weights_only checkpoint
    assert io.load_checkpoint(state)["scheduler"]["lr_lambdas"][0] == {"epochs": 4}
    full = trainer(4).fit()
    assert [r["lr"] for r in full] == pytest.approx([0.2, 0.2, 0.02, 0.002])
