"""Score-space diagnostics: flip fractions, stability, sharpness, the STE Hessian, and that none of
them changes the model or the caller's RNG."""
import json
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from benchmark.core import masking
from benchmark.evaluation.attacks import AttackConfig
from benchmark.training import diagnostics as D


def toy_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(32, 3))


def search_model(net=None, keep=0.3, granularity="weight"):
    net = masking.to_masked(net if net is not None else toy_net(), granularity)
    masking.scaled_score_init(net)
    masking.set_keep(net, keep)
    masking.refresh_masks(net)
    masking.set_mode(net, "search")
    # BN running stats away from their init, so a stray train-mode forward would show
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def batch(n=32, size=8, classes=3):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


ATTACK = AttackConfig(0.1, 2, 0.05)


# ---------------------------------------------------------------- mask agreement (seed stability)
def test_flip_fraction_identical_zero_disjoint_one():
    a = {"l1": torch.tensor([1, 1, 0, 0], dtype=torch.bool), "l2": torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)}
    b = {"l1": torch.tensor([0, 0, 1, 1], dtype=torch.bool), "l2": torch.tensor([[0, 1], [0, 0]], dtype=torch.bool)}
    assert D.mask_agreement(a, a)["flip_fraction"] == 0.0
    assert D.mask_agreement(a, b)["flip_fraction"] == 1.0
    # one of two kept weights moved in l1 only: 2 flips / (2 * 3 kept)
    c = {"l1": torch.tensor([1, 0, 1, 0], dtype=torch.bool), "l2": a["l2"]}
    assert D.mask_agreement(a, c)["flip_fraction"] == pytest.approx(2 / 6)
    with pytest.raises(KeyError):
        D.mask_agreement(a, {"l1": a["l1"]})


def test_mask_agreement_identical_and_overlapping():
    net = search_model()
    m = masking.get_masks(net)
    s = D.mask_agreement(m, m)
    assert s["flip_fraction"] == 0.0 and s["jaccard"] == 1.0
    assert all(v == {"flip_fraction": 0.0, "jaccard": 1.0} for v in s["layers"].values())
    a = {"x": torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)}
    b = {"x": torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.bool)}
    s = D.mask_agreement(a, b)
    assert s["jaccard"] == pytest.approx(2 / 4) and s["flip_fraction"] == pytest.approx(2 / 6)
    json.dumps(s)


# ---------------------------------------------------------------- the model is left untouched
def _snapshot(net):
    return {
        "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "grads": {n: (None if p.grad is None else p.grad.clone()) for n, p in net.named_parameters()},
        "flags": {n: p.requires_grad for n, p in net.named_parameters()},
        "training": [m.training for m in net.modules()],
        "modes": [(l.mode, l.score_grad) for _, l in masking.masked_layers(net)],
        "rng": torch.get_rng_state().clone(),
    }


def _assert_same(a, b):
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for k in a["grads"]:
        assert (a["grads"][k] is None) == (b["grads"][k] is None), k
        if a["grads"][k] is not None:
            assert torch.equal(a["grads"][k], b["grads"][k]), k
    assert a["flags"] == b["flags"]
    assert a["training"] == b["training"]
    assert a["modes"] == b["modes"]
    assert torch.equal(a["rng"], b["rng"])


def _calls(x, y):
    return [
        lambda net: D.mask_stability(net, x, y, radii=(0.05, 0.5), n_random=2,
                                     generator=torch.Generator().manual_seed(0), attack=ATTACK),
        lambda net: D.score_sharpness(net, x, y, 0.2, attack=ATTACK),
        lambda net: D.hessian_top_eigenvalue(net, x, y, iters=3, generator=torch.Generator().manual_seed(0)),
        lambda net: D.search_diagnostics(net, TensorDataset(x, y), {"radii": [0.05], "n_random": 2,
                                                                     "hessian_iters": 2, "batch_size": 16},
                                         ATTACK, "cpu", seed=3),
    ]


@pytest.mark.parametrize("setup", ["search_train", "search_eval", "finetune"])
def test_every_function_leaves_model_and_rng_unchanged(setup):
    x, y = batch()
    for call in _calls(x, y):
        net = search_model()
        if setup == "search_eval":
            net.eval()
        if setup == "finetune":
            masking.set_mode(net, "finetune")
        # stale grads from a training step must survive (diagnostics use autograd.grad)
        for p in net.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)
        torch.manual_seed(123)
        # a stored mask that is not top-k of the scores (loaded masks, say) must survive too
        with torch.no_grad():
            net[0].mask.view(-1)[:2] = 1.0 - net[0].mask.view(-1)[:2]
        before = _snapshot(net)
        call(net)
        _assert_same(before, _snapshot(net))


def test_results_are_deterministic():
    x, y = batch()
    net = search_model()
    cfg = {"radii": [0.05, 0.2], "n_random": 3, "hessian_iters": 3, "batch_size": 16}
    a = D.search_diagnostics(net, TensorDataset(x, y), cfg, ATTACK, "cpu", seed=1)
    b = D.search_diagnostics(net, TensorDataset(x, y), cfg, ATTACK, "cpu", seed=1)
    assert a == b
    json.dumps(a)
    for r in ("0.05", "0.2"):
        for k in ("stability_random_r", "stability_random_std_r", "stability_worst_r"):
            assert k + r in a
    assert {"sharpness_r0.05", "hessian_top_eig", "diag_batch", "diag_loss"} <= set(a)
    assert a["diag_batch"] == 16
    assert all(math.isfinite(v) for v in a.values())
    off = D.search_diagnostics(net, TensorDataset(x, y), {**cfg, "hessian_iters": 0}, ATTACK, "cpu", seed=1)
    assert "hessian_top_eig" not in off
    with pytest.raises(ValueError, match="unknown diagnostics"):
        D.search_diagnostics(net, TensorDataset(x, y), {"radius": 1}, ATTACK, "cpu", seed=1)


def test_dense_model_gives_empty_diagnostics():
    x, y = batch()
    assert D.search_diagnostics(toy_net(), TensorDataset(x, y), {}, ATTACK, "cpu", seed=0) == {}


# ---------------------------------------------------------------- stability
def test_radius_zero_flips_nothing():
    x, y = batch()
    net = search_model()
    out = D.mask_stability(net, x, y, radii=(0.0,), n_random=3, generator=torch.Generator().manual_seed(0))
    assert out[0.0] == {"random": 0.0, "random_std": 0.0, "worst": 0.0}


@pytest.mark.parametrize("norm", ["l2", "linf", "adaptive"])
def test_stability_grows_with_radius_and_is_finite(norm):
    x, y = batch()
    net = search_model()
    out = D.mask_stability(net, x, y, radii=(0.001, 0.1, 1.0), n_random=5, norm=norm,
                           generator=torch.Generator().manual_seed(0), attack=ATTACK)
    assert out[0.1]["random"] >= out[0.001]["random"]
    assert out[1.0]["random"] > out[0.001]["random"]
    assert out[1.0]["random"] > 0
    for v in out.values():
        assert 0.0 <= v["worst"] <= 1.0 and 0.0 <= v["random"] <= 1.0 and math.isfinite(v["random_std"])


def test_channel_masks_count_weights():
    x, y = batch()
    net = search_model(keep=0.5, granularity="channel")
    out = D.mask_stability(net, x, y, radii=(0.0, 0.5), n_random=2, generator=torch.Generator().manual_seed(0))
    assert out[0.0]["random"] == 0.0
    assert 0.0 <= out[0.5]["worst"] <= 1.0


# ---------------------------------------------------------------- sharpness
def test_sharpness_small_radius_and_first_order():
    x, y = batch()
    net = search_model()
    small = D.score_sharpness(net, x, y, 1e-6)
    # no weight crosses the top-k boundary: the piecewise-constant masked loss does not move
    assert small["flip_fraction"] == 0.0
    assert small["loss_perturbed"] >= small["loss"] - 1e-6
    assert small["sharpness"] == pytest.approx(0.0, abs=1e-6)
    big = D.score_sharpness(net, x, y, 0.3, attack=ATTACK)
    assert big["flip_fraction"] > 0
    assert all(math.isfinite(v) for v in big.values())
    assert big["first_order"] >= 0.0  # g . z* = r ||s|| ||g|| for the l2 step


# ---------------------------------------------------------------- Hessian
def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def _exact_ste_hessian(net, x, y):
    """Full Hessian over the flattened score vector of the STE surrogate, via functional_call."""
    names = [f"{n}.scores" for n, _ in masking.masked_layers(net)]
    params = dict(net.named_parameters())
    shapes = [params[n].shape for n in names]
    flat0 = torch.cat([params[n].detach().flatten() for n in names])

    def f(flat):
        tensors, i = {}, 0
        for n, shp in zip(names, shapes):
            k = math.prod(shp)
            tensors[n] = flat[i:i + k].view(shp)
            i += k
        out = torch.func.functional_call(net, tensors, (x,))
        return nn.functional.cross_entropy(out.float(), y)

    net.eval()
    return torch.autograd.functional.hessian(f, flat0)


def test_hessian_eigenvalue_matches_exact():
    x, y = batch(n=16, size=6)
    net = search_model(tiny_net(), keep=0.5)
    net.eval()
    H = _exact_ste_hessian(net, x, y)
    masking.set_mode(net, "search")
    assert torch.allclose(H, H.T, atol=1e-6)
    ev = torch.linalg.eigvalsh(H.double())
    top = ev[ev.abs().argmax()].item()
    assert abs(top) > 1e-6  # the surrogate has curvature (a zero Hessian would test nothing)
    est = D.hessian_top_eigenvalue(net, x, y, iters=200, tol=1e-9, generator=torch.Generator().manual_seed(0))
    assert est == pytest.approx(top, rel=0.05)


def test_hessian_matches_ste_formula_on_a_linear_layer():
    # logits = (w * m) x, so H_s = D H_W D with D = diag(w sign s): check one HVP against it
    torch.manual_seed(0)
    net = search_model(nn.Sequential(nn.Flatten(), nn.Linear(6, 3, bias=False)), keep=0.5)
    layer = net[1]
    with torch.no_grad():  # signs of s independent of w, so sign(s) matters in D
        layer.scores.copy_(torch.randn(layer.scores.shape, generator=torch.Generator().manual_seed(5)))
    masking.refresh_masks(net)
    assert ((layer.scores.sign() * layer.weight.sign()) < 0).any()
    net.eval()
    x, y = torch.randn(10, 1, 6), torch.randint(0, 3, (10,))
    w, m = layer.weight.detach(), layer.mask.detach()

    def loss_w(weff):
        return nn.functional.cross_entropy(x.flatten(1) @ weff.view(3, 6).T, y)

    HW = torch.autograd.functional.hessian(loss_w, (w * m).flatten())
    d = (w * layer.scores.detach().sign()).flatten()
    Hs = d[:, None] * HW * d[None, :]
    assert torch.allclose(_exact_ste_hessian(net, x, y), Hs, atol=1e-6)
    masking.set_mode(net, "search")
    ev = torch.linalg.eigvalsh(Hs.double())
    top = ev[ev.abs().argmax()].item()
    est = D.hessian_top_eigenvalue(net, x, y, iters=500, tol=1e-10, generator=torch.Generator().manual_seed(1))
    assert est == pytest.approx(top, rel=0.02)


def test_losses_are_taken_in_eval_mode():
    # BN running statistics and no dropout: the loss is a function of the model, not of the batch's draw
    x, y = batch()
    net = search_model()
    net.train()
    got = D.score_sharpness(net, x, y, 1e-6)["loss"]
    net.eval()
    with torch.no_grad():
        want = nn.functional.cross_entropy(net(x), y).item()
    assert got == pytest.approx(want, rel=1e-6)
