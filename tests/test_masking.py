"""Mask counting, the straight-through gradient, scaled init and export."""
import math

import pytest
import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core.masking import kept_count, topk_mask_count


def toy_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def half_kept_net(mode="search"):
    """The toy net masked at 50 % from its scaled scores, in ``mode``."""
    net = masking.to_masked(toy_net())
    masking.scaled_score_init(net)
    masking.set_keep(net, 0.5)
    masking.refresh_masks(net)
    masking.set_mode(net, mode)
    return net


@pytest.mark.parametrize("n,keep,expected", [
    (144, 0.01, 2), (100, 0.1, 10), (100, 0.05, 5), (10, 0.01, 1), (7, 0.5, 4), (1000, 0.9, 900),
    (3, 0.0, 0), (5, 1.0, 5),
])
def test_kept_count_follows_hydra_rule(n, keep, expected):
    assert kept_count(n, keep) == expected
    if 0 < keep:
        assert kept_count(n, keep) == max(1, n - math.floor((1 - keep) * n + 1e-9))


def test_topk_mask_is_exact_under_ties_and_breaks_them_by_index():
    s = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])
    m = topk_mask_count(s, 2)
    assert m.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert topk_mask_count(torch.ones(10), 3).tolist() == [1.0] * 3 + [0.0] * 7
    # negative scores count by magnitude
    assert topk_mask_count(torch.tensor([-3.0, 1.0, 2.0]), 1).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("keep", [0.1, 0.05, 0.01, 0.5, 0.3333])
def test_every_layer_keeps_exactly_its_count(keep):
    net = masking.to_masked(toy_net())
    masking.scaled_score_init(net)
    for _, layer in masking.masked_layers(net):
        layer.scores.data = torch.randint(0, 3, layer.scores.shape).float()  # many ties
    masking.set_keep(net, keep)
    masking.refresh_masks(net)
    for name, layer in masking.masked_layers(net):
        assert int(layer.mask.sum()) == kept_count(layer.weight.numel(), keep), name


def test_straight_through_gradient_equals_analytic_value():
    torch.manual_seed(1)
    layer = masking.to_masked(nn.Sequential(nn.Linear(6, 4)))[0]
    layer.scores.data = torch.randn(4, 6)
    layer.keep = 0.5
    layer.refresh_mask()
    masking.set_mode(nn.Sequential(layer), "search")
    x = torch.randn(3, 6)
    out = layer(x)
    g_out = torch.randn_like(out)
    out.backward(g_out)
    # d/d(w*m) of sum(g_out * (x @ (w*m)^T)) is g_out^T x; chain through |s| gives w * sign(s)
    expected = (g_out.t() @ x) * layer.weight.detach() * torch.sign(layer.scores.detach())
    torch.testing.assert_close(layer.scores.grad, expected)
    assert layer.weight.grad is None  # weights are frozen in the search
    # the forward value is the masked product, not the scores
    torch.testing.assert_close(out, x @ (layer.weight * layer.mask).t() + layer.bias)


def test_scaled_init_reproduces_layerwise_magnitude_pruning():
    net = masking.to_masked(toy_net())
    masking.scaled_score_init(net)
    masking.set_keep(net, 0.2)
    masking.refresh_masks(net)
    for name, layer in masking.masked_layers(net):
        w = layer.weight.detach().abs().flatten()
        k = kept_count(w.numel(), 0.2)
        expected = torch.zeros_like(w)
        expected[torch.topk(w, k).indices] = 1
        assert torch.equal(layer.mask.flatten(), expected), name
        fan_in = layer.weight[0].numel()
        assert layer.scores.abs().max().item() == pytest.approx(math.sqrt(6 / fan_in), rel=1e-5)


def test_attack_forward_takes_no_score_gradient():
    net = half_kept_net()
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    with masking.scores_frozen(net):
        net(x).sum().backward()
    assert all(layer.scores.grad is None for _, layer in masking.masked_layers(net))
    assert x.grad is not None


def test_export_loads_into_plain_architecture_with_matching_sparsity():
    net = masking.to_masked(toy_net())
    masking.scaled_score_init(net)
    masking.set_keep(net, 0.1)
    masking.refresh_masks(net)
    masking.set_mode(net, "finetune")
    masks = masking.get_masks(net)
    plain = toy_net()
    plain.load_state_dict(masking.export_state_dict(net), strict=True)
    report = masking.sparsity_report(masks)
    zeros = sum(int((l.weight == 0).sum()) for _, l in masking.prunable_layers(plain))
    total = sum(l.weight.numel() for _, l in masking.prunable_layers(plain))
    assert zeros == total - report["kept"]  # no kept weight of a random init is exactly zero
    assert report["global"] == pytest.approx(1 - report["kept"] / report["total"])
    assert report["global"] > 0.85
    net.eval(), plain.eval()
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(net(x), plain(x))


def _pruned(keep=0.1):
    """A plain toy net pruned by magnitude through the real export, and its masks."""
    net = masking.to_masked(toy_net())
    masking.scaled_score_init(net)
    masking.set_keep(net, keep)
    masking.refresh_masks(net)
    masking.set_mode(net, "finetune")
    plain = toy_net()
    plain.load_state_dict(masking.export_state_dict(net))
    return plain, masking.get_masks(net)


def test_measured_sparsity_counts_zero_weights_and_records_the_mask_beside_it():
    plain, masks = _pruned()
    # a weight the mask keeps that happens to be zero: counted as sparse, and as kept by the mask
    plain[0].weight.data.view(-1)[masks["0"].view(-1).nonzero()[0]] = 0.0
    m = masking.measure_sparsity(plain, masks)
    report = masking.sparsity_report(masks)
    assert m["mask"]["kept"] == report["kept"] and m["kept_zero"] == 1
    assert m["zeros"] == m["total"] - report["kept"] + 1
    assert m["measured"] == m["zeros"] / m["total"] > report["global"]
    assert m["layers"]["0"]["mask_kept"] == int(masks["0"].sum())


def test_masks_none_measures_the_weights_instead_of_reporting_dense():
    plain, masks = _pruned()
    with_masks, without = masking.measure_sparsity(plain, masks), masking.measure_sparsity(plain)
    assert without["measured"] == with_masks["measured"] > 0.85
    assert without["mask"] is None and without["kept_zero"] is None


def test_dense_weights_with_a_mask_attached_are_refused():
    _, masks = _pruned()
    with pytest.raises(masking.SparsityError, match="outside its mask are non-zero"):
        masking.measure_sparsity(toy_net(), masks)


def test_nan_or_infinite_values_are_refused():
    plain, masks = _pruned()
    plain[3].weight.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(masking.SparsityError, match=r"parameter 3.weight holds 1 NaN"):
        masking.measure_sparsity(plain, masks)
    plain, _ = _pruned()
    plain[1].running_var[0] = float("inf")
    with pytest.raises(masking.SparsityError, match=r"buffer 1.running_var"):
        masking.measure_sparsity(plain)


def test_a_mask_of_another_shape_is_refused_never_broadcast():
    plain, masks = _pruned()
    masks["7"] = masks["7"][:1]  # (1, 8) would broadcast against the (5, 8) weight
    with pytest.raises(masking.SparsityError, match=r"mask of layer 7 has shape \(1, 8\)"):
        masking.measure_sparsity(plain, masks)
    _, masks = _pruned()
    del masks["3"]
    with pytest.raises(masking.SparsityError, match=r"missing \['3'\]"):
        masking.measure_sparsity(plain, masks)


def test_set_mode_search_trains_only_scores_and_bn():
    net = masking.to_masked(toy_net())
    masking.set_mode(net, "search", train_bn=True)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"0.scores", "1.weight", "1.bias", "3.scores", "7.scores"}
    masking.set_mode(net, "search", train_bn=False)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"0.scores", "3.scores", "7.scores"}
    masking.set_mode(net, "finetune")
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.endswith("scores"))


def test_attack_forward_follows_every_mask_refresh():
    # the attack reuses one folded w * m per optimiser step; a refresh must invalidate it
    net = half_kept_net()
    net.eval()
    x = torch.rand(2, 3, 8, 8)
    with masking.scores_frozen(net), torch.no_grad():
        before = net(x)
        for _, layer in masking.masked_layers(net):
            layer.scores.data = -layer.scores.data.abs().flip(-1)
        masking.refresh_masks(net)
        after = net(x)
        masking.set_mode(net, "finetune")
        expected = net(x)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, expected)


def test_one_per_row_keeps_every_class_and_equals_topk_when_topk_already_does():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(10, 64, generator=g)
    plain = masking.topk_mask_count(scores, 200)
    assert bool((plain.sum(1) >= 1).all())
    assert torch.equal(masking.topk_mask_rows(scores, 200), plain)
    scores[0] += 100.0  # a plain top-12 would keep class 0 only
    plain = masking.topk_mask_count(scores, 12)
    assert int((plain.sum(1) > 0).sum()) == 1
    rows = masking.topk_mask_rows(scores, 12)
    assert int(rows.sum()) == 12 and bool((rows.sum(1) >= 1).all())
    assert int(rows[0].sum()) == 3  # one per row, the other two are the largest of the rest
    for r in range(1, 10):
        assert bool(rows[r, scores[r].abs().argmax()] == 1)
    # fewer kept than rows: plain top-k (one per row is impossible)
    assert torch.equal(masking.topk_mask_rows(scores, 5), masking.topk_mask_count(scores, 5))


def test_input_channel_masks_prune_whole_columns_and_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    masking.to_masked(net, "in_channel")
    masking.scaled_score_init(net)
    masking.set_keep(net, 0.5)
    masking.refresh_masks(net)
    conv, lin = net[0], net[3]
    assert conv.scores.shape == (4,) and lin.scores.shape == (96,)
    masks = masking.get_masks(net)
    assert masks["0"].shape == conv.weight.shape
    assert int(masks["0"][:, :, 0, 0].any(0).sum()) == 2  # 2 of 4 input channels, every filter alike
    # the score of an input channel follows the norm of its weights (scaled init)
    norms = conv.weight.detach().transpose(0, 1).flatten(1).norm(dim=1)
    assert torch.equal(conv.mask.bool(), norms >= norms.sort().values[2])
    other = masking.to_masked(nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
                                            nn.Linear(6 * 4 * 4, 5)), "in_channel")
    masking.load_masks(other, masks)
    assert torch.equal(other[0].mask, conv.mask) and torch.equal(other[3].mask, lin.mask)
    masking.set_mode(net, "finetune")
    masking.apply_masks_to_weights(net)
    plain = nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    plain.load_state_dict(masking.export_state_dict(net))
    x = torch.rand(2, 4, 6, 6)
    torch.testing.assert_close(plain(x), net(x))
    assert masking.measure_sparsity(plain, masks, "in_channel")["measured"] == pytest.approx(0.5)
    half = {k: v.clone() for k, v in masks.items()}
    keep_col = int(conv.mask.nonzero()[0])
    half["0"][0, keep_col] = False  # part of a column
    with torch.no_grad():
        plain[0].weight[0, keep_col] = 0.0
    with pytest.raises(masking.SparsityError, match="part of an input channel"):
        masking.measure_sparsity(plain, half, "in_channel")


def test_a_finetune_attack_shares_one_product_per_optimiser_step_with_the_same_numbers():
    from benchmark.core import fastpaths

    net = half_kept_net("finetune")
    masking.apply_masks_to_weights(net)
    layer = next(layer for _, layer in masking.masked_layers(net))
    x = torch.rand(2, 3, 8, 8, requires_grad=True)

    def attack_pass():
        with masking.scores_frozen(net):
            (g,) = torch.autograd.grad(net(x).sum(), x)
        return g

    with fastpaths.reference_paths():
        reference = attack_pass()
    assert layer._folded is None  # the reference path multiplies on every pass
    first = attack_pass()
    folded = layer._folded[1]
    second = attack_pass()
    assert layer._folded[1] is folded  # one product for every pass of the attack
    assert torch.equal(first, reference) and torch.equal(second, reference)
    # the training pass outside the attack still takes the weight gradient through w * m
    net(x).sum().backward()
    pruned_grad = layer.weight.grad * (1 - layer.mask)
    assert layer.weight.grad.abs().sum() > 0 and torch.equal(pruned_grad, torch.zeros_like(pruned_grad))
    # an optimiser step changes the weights in place: the next attack folds them anew
    with torch.no_grad():
        layer.weight.mul_(2.0)
    attack_pass()
    assert layer._folded[1] is not folded
    torch.testing.assert_close(layer._folded[1], layer.weight * layer.mask)
