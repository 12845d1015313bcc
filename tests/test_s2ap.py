"""S2AP's score step and AWP: the perturbation's size, exactness of the second pass, restoring."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from benchmark.core import masking
from benchmark.evaluation.attacks import AttackConfig
from benchmark.training.loop import TrainConfig, Trainer
from benchmark.training.score_perturbation import NORMS, perturbation
from methods.base import KeepPrunedZero, RefreshMasks
from methods.s2ap import AWP, ScoreSharpness


def toy_net(dropout=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(32, 3))


def data(n=48):
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def search_model(dropout=0.0, keep=0.3):
    net = masking.to_masked(toy_net(dropout))
    masking.scaled_score_init(net)
    masking.set_keep(net, keep)
    masking.refresh_masks(net)
    masking.set_mode(net, "search")
    return net


def cfg(epochs=2):
    return TrainConfig(epochs=epochs, lr=0.1, weight_decay=1e-4, batch_size=16, loss="pgd_at",
                       attack=AttackConfig(0.1, 2, 0.05), val_attack_steps=0)


def run_search(net, hooks, epochs=2, seed=0):
    tr = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg(epochs), train_set=data(),
                 val_set=None, device=torch.device("cpu"), seed=seed, hooks=hooks)
    tr.fit()
    return tr


@pytest.mark.parametrize("norm", ["l2"])
def test_perturbation_has_relative_radius_gamma_in_every_layer(norm):
    torch.manual_seed(0)
    for shape in [(8, 3, 3, 3), (10, 20), (5,)]:
        s, g = torch.randn(shape), torch.randn(shape)
        z = perturbation(s, g, 0.05, norm)
        assert z.norm().item() == pytest.approx(0.05 * s.norm().item(), rel=1e-5)


def test_every_norm_is_documented_and_linf_has_its_radius():
    s, g = torch.randn(30), torch.randn(30)
    assert set(NORMS) == {"l2", "linf", "adaptive"}
    assert perturbation(s, g, 0.1, "linf").abs().max().item() == pytest.approx(0.1 * s.abs().max().item())
    with pytest.raises(ValueError, match="valid choices"):
        perturbation(s, g, 0.1, "l7")


@pytest.mark.parametrize("norm", list(NORMS))
def test_dead_layer_gives_zero_perturbation_not_nan(norm):
    z = perturbation(torch.randn(4, 4), torch.zeros(4, 4), 0.1, norm)
    assert torch.isfinite(z).all() and (z == 0).all()
    assert (perturbation(torch.randn(3), None, 0.1, norm) == 0).all()


def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gamma_zero_reproduces_base_method_bit_for_bit(dropout):
    base = search_model(dropout)
    run_search(base, [RefreshMasks()])
    rng_base = torch.get_rng_state()
    s2ap = search_model(dropout)
    run_search(s2ap, [RefreshMasks(), ScoreSharpness({"gamma": 0.0, "warmup": 0.0}, total_epochs=2)])
    rng_s2ap = torch.get_rng_state()
    a, b = _snapshot(base), _snapshot(s2ap)
    assert a.keys() == b.keys()
    for k in a:  # scores, masks, BN running stats and num_batches_tracked
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(rng_base, rng_s2ap)


def test_positive_gamma_changes_the_scores_but_nothing_frozen():
    base = search_model()
    run_search(base, [RefreshMasks()])
    s2ap = search_model()
    run_search(s2ap, [RefreshMasks(), ScoreSharpness({"gamma": 0.5, "warmup": 0.0}, total_epochs=2)])
    a, b = _snapshot(base), _snapshot(s2ap)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("scores"))
    for k in a:
        if k.endswith("weight") and a[k].dim() > 1:
            assert torch.equal(a[k], b[k]), k  # weights stay frozen in the search


def test_second_pass_leaves_bn_buffers_and_non_score_grads_from_pass_one():
    net = search_model()
    tr = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg(1), train_set=data(),
                 val_set=None, device=torch.device("cpu"), seed=0,
                 hooks=[ScoreSharpness({"gamma": 0.3, "warmup": 0.0}, total_epochs=1)])
    hook = tr.hooks[0]
    hook.on_epoch_start(tr, 0)
    x, y = data(16).tensors
    batch = tr.robust_loss.prepare(net, x, y)
    ref = copy.deepcopy(net)
    loss = tr.compute_loss(batch)
    loss.backward()
    ref_tr_grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    bn_after_pass1 = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    for p in net.parameters():
        p.grad = None
    net.load_state_dict(ref.state_dict())
    hook.backward(tr, batch)
    for k, v in net.state_dict().items():
        if k in bn_after_pass1:
            assert torch.equal(v, bn_after_pass1[k]), k
        if k.endswith("scores") or k.endswith("mask"):
            assert torch.equal(v, ref.state_dict()[k]), k
    for n, p in net.named_parameters():
        if not n.endswith("scores") and p.grad is not None:
            assert torch.equal(p.grad, ref_tr_grads[n]), n
    assert any(not torch.equal(p.grad, ref_tr_grads[n]) for n, p in net.named_parameters() if n.endswith("scores"))


def _flip_count_by_hand(net, hook_gamma):
    """|M(s + z) xor M(s)| / 2 over the kept count, from the formulas, for one batch."""
    x, y = data(16).tensors
    tr = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg(1), train_set=data(),
                 val_set=None, device=torch.device("cpu"), seed=0)
    batch = tr.robust_loss.prepare(net, x, y)
    tr.compute_loss(batch).backward()
    layers = [layer for _, layer in masking.masked_layers(net)]
    flipped = kept = 0
    for layer in layers:
        before = layer.mask.clone()
        z = perturbation(layer.scores.detach(), layer.scores.grad, hook_gamma)
        after = masking.topk_mask_count(layer.scores.detach() + z, layer.kept_target())
        flipped += int((after != before).sum())
        kept += int(before.sum())
    return flipped / 2 / kept, batch


def test_the_flipped_fraction_of_one_step_is_the_hand_computed_one():
    net = search_model()
    expected, batch = _flip_count_by_hand(copy.deepcopy(net), 0.3)
    assert expected > 0
    hook = ScoreSharpness({"gamma": 0.3, "warmup": 0.0}, total_epochs=1)
    tr = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg(1), train_set=data(),
                 val_set=None, device=torch.device("cpu"), seed=0, hooks=[hook])
    hook.on_epoch_start(tr, 0)
    hook.backward(tr, batch)
    record = {}
    hook.on_epoch_end(tr, 0, record)
    assert record == {"s2ap_flip_fraction": pytest.approx(expected), "s2ap_noflip_steps": 0,
                      "s2ap_steps": 1}


@pytest.mark.parametrize("gamma,active", [(1e-9, False), (0.3, True)])
def test_flips_are_recorded_per_epoch_and_summed_up_after_the_warmup(gamma, active):
    hook = ScoreSharpness({"gamma": gamma, "warmup": 0.34}, total_epochs=3)
    tr = run_search(search_model(), [RefreshMasks(), hook], epochs=3)
    assert "s2ap_steps" not in tr.history[0]  # the warm-up epoch takes no score step
    steps = len(tr.train_loader)
    for record in tr.history[1:]:
        assert record["s2ap_steps"] == steps
        assert (record["s2ap_noflip_steps"] == steps) is not active
        assert (record["s2ap_flip_fraction"] > 0) is active
    summary = hook.summary(tr.history)
    assert summary["s2ap_steps"] == 2 * steps and summary["s2ap_gamma"] == gamma
    assert summary["s2ap_flip_fraction_by_epoch"][0] is None
    if active:
        assert summary["s2ap_noflip_fraction"] < 0.5 and summary["s2ap_flip_fraction"] > 0
    else:
        assert summary["s2ap_noflip_fraction"] == 1.0 and summary["s2ap_flip_fraction"] == 0.0


def test_warmup_is_a_fraction_of_the_search_epochs():
    assert ScoreSharpness({"warmup": 0.25}, total_epochs=20).warmup_epochs == 5
    assert ScoreSharpness({"warmup": 0.25}, total_epochs=4).warmup_epochs == 1
    with pytest.raises(ValueError, match="valid"):
        ScoreSharpness({"gama": 1}, total_epochs=4)


def finetune_model():
    net = search_model(keep=0.3)
    masking.set_mode(net, "finetune")
    masking.apply_masks_to_weights(net)
    return net


def test_awp_restores_weights_exactly_and_keeps_pruned_weights_zero():
    net = finetune_model()
    awp = AWP({"gamma": 0.05})
    tr = Trainer(net, [p for p in net.parameters() if p.requires_grad], cfg(1), train_set=data(),
                 val_set=None, device=torch.device("cpu"), seed=0, hooks=[KeepPrunedZero(), awp])
    awp.on_fit_start(tr)
    awp.on_epoch_start(tr, 0)
    x, y = data(16).tensors
    batch = tr.robust_loss.prepare(net, x, y)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    v = awp.weight_perturbation(tr, batch)
    assert v, "no weight was perturbed"
    layers = dict(masking.masked_layers(net))
    for name, delta in v.items():
        layer = layers[name.rpartition(".")[0]]
        w = before[name] * layer.mask
        assert (delta[layer.mask == 0] == 0).all()  # only kept weights move
        assert delta.norm().item() == pytest.approx(0.05 * w.norm().item(), rel=1e-4)
    awp.backward(tr, batch)
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n]), n  # restored bit for bit
    # a full finetune epoch: pruned weights stay exactly zero
    tr.fit()
    for name, layer in masking.masked_layers(net):
        assert (layer.weight[layer.mask == 0] == 0).all(), name


def test_the_state_copy_handles_mixed_dtypes_and_reuses_one_scratch_set():
    from methods.s2ap import _copy_all

    live = [torch.randn(3, 4), torch.tensor(7, dtype=torch.int64), torch.randn(5, dtype=torch.float64),
            torch.ones(2, 2)]
    saved = [torch.empty_like(t) for t in live]
    _copy_all(saved, live)
    assert all(torch.equal(s, t) and s.dtype == t.dtype for s, t in zip(saved, live))
    hook = ScoreSharpness({"gamma": 0.3, "warmup": 0.0}, total_epochs=1)
    first = hook._scratch(live)
    assert hook._scratch(live) is first  # one set of copies for the whole search
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(first, live))
    assert hook._scratch(live[:2]) is not first  # another model: new copies
