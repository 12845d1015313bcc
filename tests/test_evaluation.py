import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from benchmark.evaluation.protocol import assert_eval_ready, clean_flags, evaluate_model, pgd_flags, prepare_for_eval


class Picker(nn.Module):
    """Predicts argmax of the first 10 input values: predictions known in advance."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.flatten(1)[:, :10] * self.scale


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def toy_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def test_prepare_for_eval_sets_everything():
    m = small_cnn().double().train()
    prepare_for_eval(m)
    assert not any(mod.training for mod in m.modules())
    assert all(not p.requires_grad for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert m[1].running_mean.dtype == torch.float32


def test_refuses_train_mode_model_and_names_the_module():
    m = prepare_for_eval(small_cnn())
    m[1].train()  # one BatchNorm left in training mode
    x, y = toy_data()
    with pytest.raises(RuntimeError, match=r"module 1 \(BatchNorm2d\) is in training mode"):
        clean_flags(m, (x, y))
    with pytest.raises(RuntimeError, match="training mode"):
        pgd_flags(m, (x, y), eps=0.1, steps=2)
    with pytest.raises(RuntimeError, match="training mode"):
        evaluate_model(m, (x, y), {"eps": 0.1, "pgd_steps": 1, "autoattack": None})
    # BatchNorm statistics must be untouched by the refused call
    assert m[1].num_batches_tracked.item() == 0


def test_refuses_grad_and_low_precision():
    m = small_cnn().eval()
    with pytest.raises(RuntimeError, match="requires grad"):
        assert_eval_ready(m)
    m.requires_grad_(False).to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="bfloat16"):
        assert_eval_ready(m)


def test_clean_flags_known_predictions_in_order():
    m = prepare_for_eval(Picker())
    n = 12
    x = torch.zeros(n, 1, 4, 4)
    pred = torch.arange(n) % 10
    x.view(n, -1)[torch.arange(n), pred] = 1.0
    y = pred.clone()
    wrong = torch.tensor([1, 4, 5, 11])
    y[wrong] = (y[wrong] + 3) % 10
    expected = torch.ones(n, dtype=torch.bool)
    expected[wrong] = False
    assert torch.equal(clean_flags(m, (x, y), batch_size=5), expected)
    ds = TensorDataset(x, y)
    assert torch.equal(clean_flags(m, ds, batch_size=4, n=7), expected[:7])
    # a generic Dataset (not TensorDataset) goes through an ordered loader
    listed = [(x[i], int(y[i])) for i in range(n)]
    assert torch.equal(clean_flags(m, listed_dataset(listed), batch_size=5), expected)
    assert torch.equal(clean_flags(m, DataLoader(ds, batch_size=3, shuffle=False)), expected)
    with pytest.raises(ValueError, match="shuffle=False"):
        clean_flags(m, DataLoader(ds, batch_size=3, shuffle=True))


def listed_dataset(items):
    class _DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i]

    return _DS()


def test_pgd_reproducible_and_never_above_clean():
    m = prepare_for_eval(small_cnn())
    x, _ = toy_data(32)
    with torch.no_grad():
        y = m(x).argmax(1)
    y[:5] = (y[:5] + 1) % 10  # some clean mistakes
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = pgd_flags(m, (x, y), eps=0.05, steps=5, seed=3, batch_size=8)
    # the caller's RNG stream is left alone
    assert torch.equal(torch.get_rng_state(), before)
    b = pgd_flags(m, (x, y), eps=0.05, steps=5, seed=3, batch_size=8)
    assert torch.equal(a, b)
    clean = clean_flags(m, (x, y))
    assert not (a & ~clean).any()
    assert a.sum() < clean.sum()  # the attack breaks something at this radius
    # eps = 0: nothing changes, PGD accuracy equals clean accuracy
    assert torch.equal(pgd_flags(m, (x, y), eps=0.0, steps=3, step_size=0.01), clean)


def test_evaluate_model_structure():
    m = prepare_for_eval(small_cnn())
    x, y = toy_data(20)
    cfg = {"eps": 0.05, "pgd_steps": 3, "pgd_step_size": None, "clean_n": None, "pgd_n": 12,
           "batch_size": 8,
           "autoattack": {"n_images": 6, "version": "standard", "attacks": ["apgd-ce"],
                          "batch_size": 6, "shard_size": None, "seed": 0, "state_dir": None}}
    out = evaluate_model(m, TensorDataset(x, y), cfg, progress=False)
    met, flags = out["metrics"], out["flags"]
    assert met["clean"]["n"] == 20 and len(flags["clean"]) == 20
    assert met["pgd"]["n"] == 12 and len(flags["pgd"]) == 12
    assert met["pgd"]["step_size"] == pytest.approx(2.5 * 0.05 / 3)
    assert met["autoattack"]["n"] == 6 and len(flags["autoattack"]) == 6
    assert met["autoattack"]["standard"] is False
    for name in ("clean", "pgd", "autoattack"):
        assert 0.0 <= met[name]["acc"] <= 1.0
        assert met[name]["correct"] == flags[name].count("1")
    assert met["clean"]["acc"] == pytest.approx(clean_flags(m, (x, y)).float().mean().item())
    assert set(out["timing"]) == {"clean_s", "pgd_s", "autoattack_s"}
    # AutoAttack and PGD never count an image the model already gets wrong
    for name in ("pgd", "autoattack"):
        f = flags[name]
        assert all(c == "1" for c, a in zip(flags["clean"], f) if a == "1")


def test_evaluate_model_config_errors_and_skip():
    m = prepare_for_eval(small_cnn())
    x, y = toy_data(4)
    with pytest.raises(ValueError, match="unknown evaluation config keys"):
        evaluate_model(m, (x, y), {"eps": 0.1, "pgd_stpes": 3})
    with pytest.raises(ValueError, match="positive eps"):
        evaluate_model(m, (x, y), {"pgd_steps": 3})
    out = evaluate_model(m, (x, y), {"eps": 0.1, "pgd_steps": 1, "autoattack": None})
    assert out["metrics"]["autoattack"] is None and out["flags"]["autoattack"] is None
