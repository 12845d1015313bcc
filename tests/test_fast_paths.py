"""The speed-ups give bit for bit the numbers of the code they replace.

Every fast path (benchmark.core.fastpaths: channels-last max pooling, the eval BatchNorm input
gradient, the identity adaptive pool, attacks that differentiate the input only) keeps the
reference path behind a switch. Each layer is compared with its nn counterpart on inputs full of
ties (ReLU zeros, repeated values), through double backward; and one model of the tiny preset goes
through the real stages twice, once on each path (pretraining, a HYDRA search with S2AP and its
diagnostics, finetuning with AWP, and the evaluation with every AutoAttack attack): every weight,
mask, flag, accuracy and diagnostic must be equal.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from benchmark.core import config as C
from benchmark.core import fastpaths
from benchmark.core.models.norm import BatchNorm2d
from benchmark.core.models.pooling import AdaptiveAvgPool2d, MaxPool2d
from benchmark.evaluation.attacks import AttackConfig, pgd_linf
from benchmark.training import stages

REPO = Path(__file__).resolve().parent.parent
DATASET, ARCH = "fashion-mnist", "small_cnn"


def _grads(layer, x, create_graph=False):
    x = x.clone().requires_grad_(True)
    out = layer(x)
    w = torch.linspace(-1, 1, out.numel()).view_as(out)
    (g,) = torch.autograd.grad(((out * w).sum()) ** 2, x, create_graph=create_graph)
    if not create_graph:
        return out.detach(), g, None
    (h,) = torch.autograd.grad((g * torch.cos(torch.arange(g.numel()).view_as(g).float())).sum(), x)
    return out.detach(), g.detach(), h


def _ties(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.round(torch.randn(shape, generator=g) * 2) / 2)  # zeros and repeats


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (2, 2, 1), (3, 1, 1)])
def test_max_pool_equals_nn_max_pool_with_ties_and_double_backward(kernel, stride, padding):
    x = _ties((3, 4, 9, 10))
    ref, fast = nn.MaxPool2d(kernel, stride, padding), MaxPool2d(kernel, stride, padding)
    for a, b in zip(_grads(ref, x, True), _grads(fast, x, True)):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(ref(x), fast(x))
        assert fast(x).is_contiguous()


def test_adaptive_pool_identity_equals_the_kernel_including_negative_zero():
    x = torch.tensor([-0.0, 0.0, 1.5, -2.0]).view(1, 4, 1, 1).expand(2, 4, 4, 4).contiguous()
    ref, fast = nn.AdaptiveAvgPool2d(4), AdaptiveAvgPool2d(4)
    assert torch.equal(torch.signbit(ref(x)), torch.signbit(fast(x)))
    for a, b in zip(_grads(ref, x), _grads(fast, x)):
        if a is not None:
            assert torch.equal(a, b)
    assert torch.equal(ref(torch.ones(1, 2, 6, 6)), fast(torch.ones(1, 2, 6, 6)))  # pools 6 -> 4


@pytest.mark.parametrize("affine", [True, False])
def test_eval_batch_norm_gradient_equals_pytorchs_kernel(affine):
    g = torch.Generator().manual_seed(1)
    ref, fast = nn.BatchNorm2d(5, affine=affine), BatchNorm2d(5, affine=affine)
    ref.running_mean.normal_(generator=g)
    ref.running_var.uniform_(0.01, 5, generator=g)
    if affine:
        ref.weight.data.normal_(1, 0.5, generator=g)
        ref.bias.data.normal_(0, 0.5, generator=g)
    fast.load_state_dict(ref.state_dict())
    for m in (ref, fast):
        m.eval()
        m.requires_grad_(False)
    x = torch.randn(7, 5, 6, 6, generator=g) * 3
    for a, b in zip(_grads(ref, x, True), _grads(fast, x, True)):
        assert torch.equal(a, b)


def test_input_only_attack_leaves_parameter_flags_as_they_were():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 1, 5, 5))
    model[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    pgd_linf(model, torch.rand(2, 1, 5, 5), torch.tensor([0, 1]), AttackConfig(0.1, 2, 0.05))
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def _digest_state(path) -> str:
    ckpt = torch.load(path, weights_only=True)
    h = hashlib.sha256()
    for part in ("state_dict", "masks"):
        for k, v in sorted((ckpt.get(part) or {}).items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _numbers(obj):
    """The record without what legitimately differs between two runs (times, provenance)."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()
                if k not in ("timing", "provenance", "seconds", "attack_seconds", "time_s")}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def _pipeline(root: Path, reference: bool) -> dict:
    cfg = copy.deepcopy(C.load_preset(REPO / "presets" / "tiny.yaml"))
    cfg["data"]["root"] = str(root.parent / "data")
    # every attack of AutoAttack standard, at an eps small enough that FAB-T and Square run
    cfg["evaluate"]["eps"] = 0.03
    cfg["evaluate"]["autoattack"].update(n_images=16, attacks=None, batch_size=16, shard_size=8)
    traits = {"learns_scores": True, "needs_pretrain": True, "needs_finetune": True}
    root.mkdir(parents=True)
    out = {}
    with fastpaths.reference_paths(reference):
        dense = root / "dense.pt"
        stages.pretrain(C.stage_config(cfg, "pretrain", dataset=DATASET, arch=ARCH),
                        dataset=DATASET, arch=ARCH, seed=0, out=dense)
        kw = dict(dataset=DATASET, arch=ARCH, method="hydra", s2ap="on", sparsity=90.0, seed=0)
        stages.prune(C.stage_config(cfg, "prune", dataset=DATASET, arch=ARCH, method="hydra",
                                    s2ap="on", traits=traits), dense=dense, out=root / "search.pt", **kw)
        stages.finetune(C.stage_config(cfg, "finetune", dataset=DATASET, arch=ARCH, method="hydra",
                                       s2ap="on", traits=traits), search=root / "search.pt",
                        out=root / "model.pt", **kw)
        cell = {"dataset": DATASET, "arch": ARCH, "method": "hydra", "s2ap": "on",
                "sparsity": 90.0, "seed": 0, "preset": "tiny"}
        record = stages.evaluate(C.stage_config(cfg, "evaluate", dataset=DATASET, arch=ARCH),
                                 model_path=root / "model.pt", cell=cell, out=root / "result.json")
    for name in ("dense.pt", "search.pt", "model.pt"):
        ckpt = torch.load(root / name, weights_only=True)
        meta = json.loads(ckpt["meta"])
        out[name] = (_digest_state(root / name), _numbers(meta.get("history")),
                     _numbers(meta.get("diagnostics")))
    # record["model"] is the file's path and the sha256 of its bytes, timing metadata included;
    # its weights and masks are compared above
    out["result"] = _numbers({k: v for k, v in record.items() if k != "model"})
    return out


@pytest.mark.e2e
def test_a_tiny_preset_model_is_bitwise_identical_on_the_fast_and_the_reference_paths(tmp_path):
    fast = _pipeline(tmp_path / "fast", reference=False)
    ref = _pipeline(tmp_path / "reference", reference=True)
    for name in ("dense.pt", "search.pt", "model.pt"):
        assert fast[name] == ref[name], name
    assert fast["result"]["metrics"] == ref["result"]["metrics"]
    assert fast["result"]["flags"] == ref["result"]["flags"]
    assert fast["result"] == ref["result"]
    # the comparison saw every attack run
    aa = fast["result"]["metrics"]["autoattack"]
    assert aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa["n"] == 16
