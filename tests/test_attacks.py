"""PGD stays in the eps-ball and in [0, 1], and actually raises the loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.evaluation.attacks import AttackConfig, pgd_linf


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


def test_pgd_stays_in_ball_and_unit_box():
    model = _model()
    x = torch.rand(16, 3, 8, 8)
    x[:4] = 0.0
    x[4:8] = 1.0
    y = torch.randint(0, 4, (16,))
    for loss, start in [("ce", "uniform"), ("kl", "trades")]:
        cfg = AttackConfig(eps=0.1, steps=7, step_size=0.03)
        x_adv = pgd_linf(model, x, y, cfg, loss=loss, start_noise=start)
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_pgd_increases_the_loss():
    model = _model()
    x, y = torch.rand(64, 3, 8, 8), torch.randint(0, 4, (64,))
    x_adv = pgd_linf(model, x, y, AttackConfig(eps=0.1, steps=10, step_size=0.025))
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.05


def test_zero_steps_returns_the_input():
    model = _model()
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    assert torch.equal(pgd_linf(model, x, y, AttackConfig(0.1, 0, 0.01)), x)
