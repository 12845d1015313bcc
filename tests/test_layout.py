"""Every training stage lays its model out like the trainer's inputs (runtime.channels_last on
CUDA), the masked layers included, and the layout changes no number. The conversion itself runs
on CPU tensors here; only the decision depends on the device."""
from __future__ import annotations

import torch

from benchmark.core import masking
from benchmark.core.datasets import get_info
from benchmark.core.models import build_model
from benchmark.training.loop import TrainConfig
from benchmark.training.stages import StageTraining
from methods.hydra import Hydra
from methods.random_prune import RandomPrune

torch.set_num_threads(2)


def run_on(device: str, channels_last: bool) -> StageTraining:
    return StageTraining(name="prune", train=TrainConfig(epochs=1, lr=0.1), train_set=None, val_set=None,
                         device=torch.device(device), seed=0, fingerprint="t",
                         channels_last=channels_last)


def searched(method):
    torch.manual_seed(0)
    model = build_model("small_cnn", get_info("fashion-mnist"))
    method.prepare_search_model(model, run_on("cpu", False).score_init_context(torch.Generator().manual_seed(0)))
    masking.set_mode(model, "search")
    return model


def conv_layers(model):
    return [layer for _, layer in masking.masked_layers(model) if layer.weight.dim() == 4]


def test_only_a_cuda_run_with_channels_last_converts_the_model():
    for device, flag in (("cpu", True), ("cuda", False)):
        model = searched(Hydra(0.9))
        assert run_on(device, flag).layout(model) is model
        assert all(layer.weight.is_contiguous() for layer in conv_layers(model))
    model = run_on("cuda", True).layout(searched(Hydra(0.9)))
    for layer in conv_layers(model):
        for t in (layer.weight, layer.mask, layer.scores):
            assert t.is_contiguous(memory_format=torch.channels_last)


def test_the_layout_changes_no_mask_and_no_output():
    x = torch.rand(4, 1, 32, 32)
    for method in (Hydra(0.99, {"unit_floor": True}), RandomPrune(0.95)):
        plain = searched(method).eval()
        laid = run_on("cuda", True).layout(searched(method)).eval()
        masking.refresh_masks(plain)
        masking.refresh_masks(laid)
        for (name, a), (_, b) in zip(masking.masked_layers(plain), masking.masked_layers(laid)):
            assert torch.equal(a.mask, b.mask), name
            # the folded weight keeps the weight's layout: no conversion at every call
            if b.weight.dim() == 4:
                assert b.effective_weight().is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.testing.assert_close(laid(x.contiguous(memory_format=torch.channels_last)), plain(x),
                                       rtol=1e-5, atol=1e-6)
