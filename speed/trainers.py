"""The one trainer builder of the speed tools (speed/gpu_check.py, speed/calibrate.py,
speed/bench_steps.py, speed/gpu_profile.py): a variant's model and ``Trainer`` built as the
pretrain, prune and finetune stages build them (``benchmark.training.stages.StageTraining``: the
same layout, precision and hooks), without files, with its hooks started at a mid-search epoch
(S2AP past its warm-up, AWP active), and the synthetic batches they are timed on.

A variant is ``dense`` (the pretraining step: every weight trains), ``<method>`` (that method's
mask-search step), ``<method>+s2ap`` (the same with S2AP's score-space step), ``finetune`` and
``finetune+awp`` (a masked finetune step of a HYDRA mask, without and with AWP). Only the
hyperparameters that shape the timed work are the caller's (batch, attack steps, loss); torch is
imported inside the functions, so a tool can report a missing package before it loads torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# each step variant and the calibration figure it measures (benchmark/planning/calibration.py);
# HARP's search step is timed for its ratio to HYDRA's and calibrates nothing
STEP_KEYS = {"dense": "pretrain_step", "hydra": "search_step", "hydra+s2ap": "search_step_s2ap",
             "harp": None, "finetune": "finetune_step", "finetune+awp": "finetune_step_awp"}
S2AP_HOOK = {"gamma": 0.01, "warmup": 0.25}
AWP_HOOK = {"gamma": 0.01, "warmup_epochs": 0}


def random_data(n: int, info, seed: int):
    """n uniform images of the dataset's shape and uniform labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, info.in_channels, info.image_size, info.image_size, generator=g)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    return x, y


def margin_data(n: int, info, seed: int, amplitudes=(0.25, 0.01), noise: float = 0.03):
    """Images whose class is a fixed +-1 block pattern (blocks of 4 x 4 pixels) of amplitude far
    above eps (0.25) for even indices and below it (0.01) for odd ones, plus noise: a model that
    learns the patterns keeps the first robust and loses the second to any attack, the mix a robust
    model gives AutoAttack. The patterns are the same for every seed."""
    import torch
    import torch.nn.functional as F

    side = info.image_size
    blocks = -(-side // 4)
    protos = torch.randint(0, 2, (info.num_classes, info.in_channels, blocks, blocks),
                           generator=torch.Generator().manual_seed(1234)).float() * 2 - 1
    protos = F.interpolate(protos, scale_factor=4, mode="nearest")[..., :side, :side]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    amp = torch.tensor([amplitudes[i % 2] for i in range(n)]).view(-1, 1, 1, 1)
    x = 0.5 + amp * protos[y] + noise * torch.randn(n, info.in_channels, side, side, generator=g)
    return x.clamp(0.0, 1.0), y


def train_config(info, *, batch: int, attack_steps: int, loss: str = "pgd_at", epochs: int = 20,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4):
    """A stage's TrainConfig at the dataset's eps and step size, no validation attack."""
    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig

    return TrainConfig(epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       batch_size=batch, loss=loss,
                       attack=AttackConfig(info.eps, attack_steps, info.step_size), val_attack_steps=0)


def stage_training(name: str, cfg, dataset, device, precision: str = "fp32"):
    """The stages' own trainer set-up (benchmark.training.stages.StageTraining), without files:
    bf16 with channels-last, as runtime.bf16 and runtime.channels_last set it, or float32."""
    from benchmark.training.stages import StageTraining

    lowp = precision == "bf16"
    return StageTraining(name=name, train=cfg, train_set=dataset, val_set=None, device=device,
                         seed=0, fingerprint="speed", bf16=lowp, channels_last=lowp)


def search_model(method_name: str, arch: str, width: float, info, sparsity: float, cfg, run):
    """As the prune stage builds it: plain model, then the method's search set-up and mode."""
    import torch

    from benchmark.core import masking
    from benchmark.core.models import build_model
    from benchmark.core.registry import method_registry

    torch.manual_seed(0)
    model = build_model(arch, info, width=width)
    method = method_registry().get(method_name)(sparsity)
    method.prepare_search_model(model, run.score_init_context(torch.Generator().manual_seed(0)),
                                weights_generator=torch.Generator().manual_seed(0))
    masking.set_mode(model, "search", train_bn=cfg.train_bn)
    return run.layout(model), method


def make_trainer(variant: str, arch: str, info, cfg, data, device, *, width: float = 1.0,
                 sparsity: float = 0.9, precision: str = "fp32",
                 s2ap: Mapping[str, Any] | None = None, awp: Mapping[str, Any] | None = None):
    """One variant's Trainer (module docstring), built as its stage builds it, its hooks started
    at the middle epoch; ``s2ap`` / ``awp``: the hook settings (default S2AP_HOOK, AWP_HOOK)."""
    import torch

    from benchmark.core import masking
    from benchmark.core.models import build_model

    if variant == "dense":
        run = stage_training("pretrain", cfg, data, device, precision)
        torch.manual_seed(0)
        model = run.layout(build_model(arch, info, width=width).to(device))
        tr = run.trainer(model, list(model.parameters()))
    elif variant in ("finetune", "finetune+awp"):
        run = stage_training("finetune", cfg, data, device, precision)
        model, method = search_model("hydra", arch, width, info, sparsity, cfg, run)
        method.finalize_search(model)
        masking.set_mode(model, "finetune")
        masking.apply_masks_to_weights(model)
        hooks = method.finetune_hooks(model, cfg)
        if variant == "finetune+awp":
            hooks.append(method.s2ap_finetune_hook(dict(awp or AWP_HOOK)))
        tr = run.trainer(model, [p for p in model.parameters() if p.requires_grad], hooks)
    else:
        run = stage_training("prune", cfg, data, device, precision)
        name = variant.split("+")[0]
        model, method = search_model(name, arch, width, info, sparsity, cfg, run)
        hooks = method.search_hooks(model, cfg)
        if variant.endswith("+s2ap"):
            hooks.append(method.s2ap_search_hook(dict(s2ap or S2AP_HOOK), cfg.epochs))
        tr = run.trainer(model, method.search_params(model, cfg), hooks)
    for hook in tr.hooks:
        hook.on_fit_start(tr)
        hook.on_epoch_start(tr, cfg.epochs // 2)
    tr.model.train()
    return tr
