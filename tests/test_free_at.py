"""Free adversarial training (Shafahi et al. 2019, as the public HYDRA/HARP trainer/freeadv.py):
each minibatch is replayed m times, one optimiser step each; the perturbation is ascended by
eps * sign(grad of the same backward), clipped to the eps-ball, and carried across replays and
minibatches; it restarts at zero each epoch. Also the two other opt-in training options of the
paper presets: keep: best_val and bn_refresh."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.errors import ConfigError
from benchmark.evaluation.attacks import AttackConfig
from benchmark.training.loop import TrainConfig, Trainer, TrainHook
from benchmark.training.losses import RobustLoss

EPS = 0.05


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.rand(n, 3, 4, 4, generator=g),
                                          torch.randint(0, 3, (n,), generator=g))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 3))


class _CountSteps(TrainHook):
    def __init__(self):
        self.steps, self.lrs = 0, []

    def after_step(self, trainer):  # called once per optimiser step
        self.steps += 1


def test_each_minibatch_takes_m_optimiser_steps():
    model, data, count = _model(), _data(), _CountSteps()
    cfg = TrainConfig(epochs=2, lr=0.1, loss="free", free_replays=3, batch_size=4,
                      attack=AttackConfig(EPS, 0, 0.0), val_attack_steps=0)
    trainer = Trainer(model, list(model.parameters()), cfg, train_set=data, val_set=None,
                      device=torch.device("cpu"), seed=0, hooks=[count])
    trainer.fit()
    assert count.steps == trainer.global_step == 2 * 3 * 3  # epochs x minibatches x replays


def test_the_perturbation_is_the_signed_gradient_ascent_kept_across_replays_and_clipped():
    torch.manual_seed(0)
    model, loss = _model(), RobustLoss("free", AttackConfig(EPS, 0, 0.0), replays=4)
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    delta = torch.zeros_like(x)
    for _ in range(4):
        batch = loss.prepare(model, x, y)
        # the replay's input is the clean batch plus the carried perturbation
        assert torch.allclose(batch.x_adv, (x + delta).clamp(0, 1))
        # the gradient the update must use: of the training loss at that input
        d = delta.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model((x + d).clamp(0, 1)), y), d)
        out, _ = loss.loss(model, batch)
        out.backward()
        loss.after_backward()
        delta = (delta + EPS * g.sign()).clamp(-EPS, EPS)
        assert torch.allclose(loss._delta, delta)
        assert float(loss._delta.abs().max()) <= float(torch.tensor(EPS))
    assert float(delta.abs().max()) == pytest.approx(EPS)  # it did reach the ball's edge


def test_the_perturbation_is_carried_to_the_next_minibatch_and_reset_each_epoch():
    model, loss = _model(), RobustLoss("free", AttackConfig(EPS, 0, 0.0), replays=1)
    x1, x2, y = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    out, _ = loss.loss(model, loss.prepare(model, x1, y))
    out.backward()
    loss.after_backward()
    carried = loss._delta.clone()
    assert carried.abs().sum() > 0
    assert torch.allclose(loss.prepare(model, x2, y).x_adv, (x2 + carried).clamp(0, 1))
    loss.after_backward()  # nothing backpropagated: the perturbation stays
    loss.start_epoch()
    assert torch.equal(loss.prepare(model, x2, y).x_adv, x2)


def test_a_second_backward_pass_does_not_steer_the_perturbation():
    """A plug-in's second pass (S2AP at s + z) adds gradients; the perturbation takes the first's."""
    model, loss = _model(), RobustLoss("free", AttackConfig(EPS, 0, 0.0), replays=1)
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    batch = loss.prepare(model, x, y)
    out, _ = loss.loss(model, batch)
    out.backward(retain_graph=True)
    first = loss._grad.clone()
    (-10 * out).backward()
    loss.after_backward()
    assert torch.allclose(loss._delta, (EPS * first.sign()).clamp(-EPS, EPS))


def test_a_second_prepare_within_a_step_keeps_the_perturbation_and_its_gradient():
    model, loss = _model(), RobustLoss("free", AttackConfig(EPS, 0, 0.0), replays=1)
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    batch = loss.prepare(model, x, y)
    out, _ = loss.loss(model, batch)
    out.backward()
    first = loss._grad.clone()
    again = loss.prepare(model, x, y)  # S2AP with regenerate: true asks again before the update
    assert torch.equal(again.x_adv, batch.x_adv)
    loss.after_backward()
    assert torch.allclose(loss._delta, (EPS * first.sign()).clamp(-EPS, EPS))


def test_replays_below_one_and_replays_for_another_loss_are_refused():
    with pytest.raises(ValueError, match="at least once"):
        RobustLoss("free", AttackConfig(EPS, 0, 0.0), replays=0)
    with pytest.raises(ValueError, match="applies to loss 'free' only"):
        RobustLoss("pgd_at", AttackConfig(EPS, 1, EPS), replays=2)


def test_default_options_leave_the_loop_as_it_was():
    """replays 1, no BN refresh, keep last: the same weights as before these options existed
    (one optimiser step per minibatch, the last epoch's model)."""
    data = _data()
    runs = []
    for extra in ({}, {"keep": "last", "bn_refresh": False, "free_replays": 1}):
        model = _model()
        cfg = TrainConfig(epochs=2, lr=0.1, loss="clean", batch_size=4, val_attack_steps=0, **extra)
        t = Trainer(model, list(model.parameters()), cfg, train_set=data, val_set=None,
                    device=torch.device("cpu"), seed=0)
        t.fit()
        runs.append((t.global_step, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0] == 6
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_bn_refresh_adds_a_natural_forward_that_moves_the_running_statistics_only():
    data = _data()
    stats = []
    for refresh in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 3))
        cfg = TrainConfig(epochs=1, lr=0.0, loss="clean", batch_size=4, val_attack_steps=0,
                          bn_refresh=refresh)
        t = Trainer(model, list(model.parameters()), cfg, train_set=data, val_set=None,
                    device=torch.device("cpu"), seed=0)
        t.fit()
        stats.append((int(model[0].num_batches_tracked), model[0].running_mean.clone()))
    assert stats[0][0] == 3 and stats[1][0] == 6  # one extra BN update per minibatch
    assert not torch.equal(stats[0][1], stats[1][1])


class _Gate(TrainHook):
    """Allows selection from epoch ``start`` on (HARP: once its budget is met)."""

    def __init__(self, start):
        self.start, self.epochs = start, 0

    def on_epoch_end(self, trainer, epoch, record):
        self.epochs = epoch + 1

    def selection_allowed(self, trainer):
        return self.epochs >= self.start


def _keep_run(keep, hook=None, scores=None, val=True):
    data = _data(16)
    model = _model()
    cfg = TrainConfig(epochs=4, lr=0.5, loss="clean", batch_size=8, val_attack_steps=0, keep=keep)
    t = Trainer(model, list(model.parameters()), cfg, train_set=data,
                val_set=_data(8, seed=1) if val else None, device=torch.device("cpu"), seed=0,
                hooks=[hook] if hook else [])
    if scores is not None:  # a validation score per epoch, chosen by the test
        it = iter(scores)
        import benchmark.training.loop as T

        orig = T.validate
        T.validate = lambda *a, **k: {**orig(*a, **k), "val_pgd": next(it)}
        try:
            t.fit()
        finally:
            T.validate = orig
    else:
        t.fit()
    return t


def test_keep_best_val_restores_the_best_selectable_epoch_and_marks_it():
    t = _keep_run("best_val", scores=[0.3, 0.9, 0.5, 0.4])
    assert [r.get("kept") for r in t.history] == [None, True, None, None]
    assert t.best["epoch"] == 2
    assert all(torch.equal(v, t.best["model"][k]) for k, v in t.model.state_dict().items())
    last = _keep_run("last", scores=[0.3, 0.9, 0.5, 0.4])
    assert not any("kept" in r for r in last.history)


def test_keep_best_val_counts_only_epochs_the_hooks_allow():
    t = _keep_run("best_val", hook=_Gate(3), scores=[0.3, 0.9, 0.5, 0.4])
    assert t.best["epoch"] == 3  # epoch 2 was best but came before the budget was met
    assert [r["selectable"] for r in t.history] == [False, False, True, True]
    t = _keep_run("best_val", hook=_Gate(9), scores=[0.3, 0.9, 0.5, 0.4])
    assert t.best is None and t.history[-1]["kept"].startswith("last")


def test_keep_best_val_without_a_validation_split_is_refused():
    with pytest.raises(ConfigError, match="no validation split"):
        _keep_run("best_val", val=False)


def test_keep_best_val_survives_a_resume(tmp_path, monkeypatch):
    import benchmark.training.loop as T

    data, val = _data(16), _data(8, seed=1)
    cfg = TrainConfig(epochs=3, lr=0.5, loss="clean", batch_size=8, val_attack_steps=0, keep="best_val")
    scores = iter([0.9, 0.1, 0.2])  # epoch 1 is the best; the resumed run sees only epoch 3
    orig = T.validate
    monkeypatch.setattr(T, "validate", lambda *a, **k: {**orig(*a, **k), "val_pgd": next(scores)})

    def trainer(epochs):
        model = _model()
        t = Trainer(model, list(model.parameters()), TrainConfig(**cfg.__dict__), train_set=data,
                    val_set=val, device=torch.device("cpu"), seed=0, state_path=tmp_path / "s.pt")
        t.cfg.epochs = epochs
        return t

    first = trainer(2)
    first.fit()
    kept = {k: v.clone() for k, v in first.best["model"].items()}
    second = trainer(3)
    second.fit()  # resumes after epoch 2, with the best so far read from the checkpoint
    assert second.best["epoch"] == 1
    assert [r.get("kept") for r in second.history] == [True, None, None]
    assert all(torch.equal(v, kept[k]) for k, v in second.model.state_dict().items())


def test_the_cost_estimate_counts_one_pass_per_replay():
    from benchmark.planning import estimate

    assert estimate._passes(10, "free", 4) == 4
    assert estimate._passes(10, "pgd_at") == 11 and estimate._passes(10, "trades") == 12


@pytest.mark.slow
def test_the_stages_run_free_at_keep_best_val_and_bn_refresh_and_record_the_kept_epoch(tmp_path):
    """The real pretrain and HARP search stages with the paper presets' options (on synthetic
    stand-in data): the history marks the kept epoch, and the search counts an epoch as
    selectable only once HARP's budget was met."""
    import copy as _copy
    from pathlib import Path

    from benchmark.core import config as C
    from benchmark.training import stages

    cfg = _copy.deepcopy(C.load_preset(Path(__file__).resolve().parent.parent / "presets" / "tiny.yaml"))
    cfg["data"].update(synthetic=True, train_subset=64, val_size=32, test_subset=16, root=str(tmp_path))
    for stage in ("pretrain", "prune"):
        cfg[stage].update(epochs=2, batch_size=32, keep="best_val", bn_refresh=True)
    cfg["pretrain"].update(loss="free", free_replays=2)
    cfg["methods"] = {"harp": {"options": {"gamma": 5.0}}}
    dense = tmp_path / "dense.pt"
    meta = stages.pretrain(C.stage_config(cfg, "pretrain", dataset="fashion-mnist", arch="small_cnn"),
                           dataset="fashion-mnist", arch="small_cnn", seed=0, out=dense)
    assert [r.get("kept") for r in meta["history"]].count(True) == 1
    assert meta["configs"]["pretrain"]["train"]["free_replays"] == 2
    meta = stages.prune(C.stage_config(cfg, "prune", dataset="fashion-mnist", arch="small_cnn",
                                       method="harp", s2ap="off"),
                        dataset="fashion-mnist", arch="small_cnn", method="harp", s2ap="off",
                        sparsity=90.0, seed=0, dense=dense, out=tmp_path / "search.pt")
    history = meta["history"]
    assert [r["selectable"] for r in history] == [r["harp_frozen"] for r in history]
    kept = [r.get("kept") for r in history]
    assert kept.count(True) == 1 or str(kept[-1]).startswith("last")
