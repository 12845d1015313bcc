"""The GPU speed check of one short run: step-time ratios, HYDRA epoch against the public-style
step, AutoAttack overhead, and the cost estimate's calibration entries.

A GPU machine is lent for about 15 minutes in all (its start-up included) and reaches no package
index, so this is ONE prepared script with a fixed, prioritised matrix that ends within
``--budget-s`` (default 480 s) on one H100/H200. It keeps its own clock: before each part it
estimates the part's cost from what it has measured so far and skips the part when the budget
left is short, saying so. Parts, in priority order (costs estimated from a ResNet18 bf16 PGD-10
step of 75-160 ms at batch 128):

  1 steps:resnet18:bf16   ResNet18, CIFAR shape, batch 128, bf16 + channels_last: one optimiser
                          step of dense PGD-AT (the pretrain step), HYDRA search, HYDRA + S2AP,
                          HARP search, finetune, finetune + AWP. Interleaved rounds (the order
                          rotates every round), 2 warm-up steps each excluded, medians of
                          10 rounds x 2 steps. About 6 x 22 steps x 0.13 s = 20 s.
  2 epoch:resnet18:bf16   our HYDRA epoch (``Trainer.fit``, TRADES as the paper presets) against
                          the public-style HYDRA step defined below, same data, same loader,
                          24 steps of 128 synthetic CIFAR-shaped images standing for an epoch
                          (an epoch of CIFAR-10 is 390 such steps; the ratio is per step), 3
                          interleaved rounds. About 3 x 24 x (0.14 + 0.25) s = 30 s.
  3 autoattack:resnet18   AutoAttack standard on 500 images: ours (run_autoattack as the evaluate
                          stage calls it: one shard of 500, batch 500, a state folder) against a
                          bare pyautoattack call, same model, images and seed; per-image flags
                          compared. The model is QUICKLY TRAINED here (60 PGD-AT steps on
                          synthetic data in which half the images carry a class pattern far
                          above eps and half one below it), so that some images survive APGD
                          and FAB-T and Square run as on a robust model. About 2 x 30-60 s.
  4 eval:resnet18         clean and PGD-50 seconds per image (evaluation's own functions,
                          batch 500, every image attacked: an upper bound). A few seconds.
  5 steps:resnet18:fp32   part 1 in float32 (no channels_last). About 40 s.
  6 autoattack2:resnet18  a second AutoAttack round in the other order (ours first).
  7 steps:wrn28_4:bf16    part 1 for WideResNet-28-4. About 35 s.
  8 eval:wrn28_4          part 4 plus AutoAttack (ours alone) on 100 images for WRN-28-4.
  9 steps:wrn28_4:fp32    part 1 for WRN-28-4 in float32. About 70 s.
 10 steps:vgg16_bn:fp32   part 1 for VGG16-BN in float32 (the paper presets' precision).
 11 eval:vgg16_bn         part 8 for VGG16-BN: with part 10, its calibration entry.

Goals, printed as PASS or FAIL (NOT RUN when their part was skipped):
  HYDRA step / dense step <= 1.10; S2AP step / HYDRA step <= 1.15 (part 1);
  our HYDRA epoch / public-style HYDRA epoch <= 0.5 (part 2);
  our AutoAttack time / bare pyautoattack time <= 1.02 (parts 3 and 6).

The public-style HYDRA step (``PublicStyle*`` below) is a re-implementation written for this
check from the behaviour docs/methods.md describes, no code copied: every masked layer computes
its mask inside its forward pass by a FULL SORT of |scores| (dropping the floor((1 - k) n)
smallest), on every forward pass -- each attack step's included -- with the straight-through
gradient to the scores; the scores stay trainable parameters throughout (the attack's graph holds
them), the weights are frozen, BatchNorm trains. Its attack and loss are the suite's own
(RobustLoss: TRADES from x + 0.001 N(0, 1), sign steps), so the comparison isolates the mask
machinery; nothing docs/methods.md does not describe is modelled. tests/test_gpu_check.py checks that
it computes our masks and our score update.

Calibration (read by the cost estimate): one entry per architecture and precision whose steps,
evaluation and AutoAttack figures were all measured, in the format of
benchmark/calibration/calibration.json: seconds per optimiser step (pretrain, search,
search + S2AP, finetune, finetune + AWP) and per evaluated image (clean, PGD-50, AutoAttack
standard). Evaluation always runs in float32 (benchmark.evaluation.readiness), so an architecture's bf16 and
fp32 entries share their per-image figures. The training loss of the step figures is PGD-AT
(TRADES costs one more forward per attack step). AutoAttack's cost depends on how many images
survive each attack: the survival of the quickly-trained model is printed beside it.

Output (``--out``, default $OUT when set, else build/gpu_check/), rewritten after every part so
that a run stopped by its time limit keeps what it measured:
  gpu_check.log                everything printed
  figures.json                 every figure, the environment and the goals
  calibration_fragment.json    {"format": "apbench-calibration", "version": 1, "entries": [...]}
Merge the fragment into the repository's calibration file afterwards (no GPU needed):
  python speed/gpu_check.py --merge build/gpu_check/calibration_fragment.json

What the GPU machine needs beyond what it has (torch, numpy, tqdm are there): pyautoattack
(pure Python). Bring it as a carried folder, no index needed:
  here:   python speed/gpu_check.py --bundle-deps .whl/site      (copies pyautoattack without its
          42 MB examples/ folder; .whl/ is git-ignored), then carry ".whl"
  there:  export PYTHONPATH=$PWD/.whl/site; python3 speed/gpu_check.py --check-imports
          PYTHONUNBUFFERED=1 python3 speed/gpu_check.py --budget-s 480
  as one device call: carry [".whl"], timeout_s 570, command
          export PYTHONPATH=$PWD/.whl/site PYTHONUNBUFFERED=1; python3 speed/gpu_check.py
          --check-imports && python3 speed/gpu_check.py --budget-s 480
(or the 42 MB wheel: pip download --no-deps --only-binary=:all: -d .whl pyautoattack==0.2.0, and
pip install --no-index --no-deps --target "$TMPDIR/site" .whl/*.whl there). ``--check-imports`` prints
what is missing in a second or two, before any GPU work.

CPU test of the whole structure (tests/test_gpu_check.py; under a minute):
  python speed/gpu_check.py --device cpu --quick --out build/gpu_check_cpu
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# torch-free: the calibration format, its checks and its merge are the cost estimate's own
from benchmark.planning import calibration as cal  # noqa: E402

CALIBRATION_FILE = cal.CALIBRATION_FILE
SECONDS_KEYS = cal.SECONDS
# the variants of a steps part and the calibration key each one measures
VARIANTS = {"dense": "pretrain_step", "hydra": "search_step", "hydra+s2ap": "search_step_s2ap",
            "harp": None, "finetune": "finetune_step", "finetune+awp": "finetune_step_awp"}
# step cost relative to the dense step: only for the budget's estimates
VARIANT_COST = {"dense": 1.0, "hydra": 1.25, "hydra+s2ap": 1.65, "harp": 1.35, "finetune": 1.1,
                "finetune+awp": 1.5}
ARCH_COST = {"resnet18": 1.0, "wrn28_4": 1.8, "vgg16_bn": 1.0}
PRECISION_COST = {"bf16": 1.0, "fp32": 2.0}
GOALS = (("hydra_step/dense_step", 1.10), ("s2ap_step/hydra_step", 1.15),
         ("our_hydra_epoch/public_style_hydra_epoch", 0.5), ("our_autoattack/bare_autoattack", 1.02))
# pure-Python packages the GPU machine lacks, and what to leave out when bundling them
BUNDLE = {"pyautoattack": ("examples", "__pycache__")}


# ---------------------------------------------------------------- the matrix
@dataclass
class Matrix:
    """Sizes of every part; ``quick`` shrinks them for the CPU test of the structure."""
    quick: bool
    batch: int = 128
    attack_steps: int = 10
    widths: dict = field(default_factory=lambda: {"resnet18": 1.0, "wrn28_4": 1.0, "vgg16_bn": 1.0})
    rounds: int = 10
    reps: int = 2
    warmup: int = 2
    sparsity: float = 0.9
    epoch_steps: int = 24
    epoch_rounds: int = 3
    aa_images: int = 500
    aa_batch: int = 500
    aa_images_extra: int = 100
    aa_train_steps: int = 60
    eval_images: int = 500
    eval_batch: int = 500
    pgd_steps: int = 50

    @classmethod
    def for_args(cls, args) -> Matrix:
        if args.quick:
            m = cls(quick=True, batch=8, attack_steps=2,
                    widths={"resnet18": 0.0625, "wrn28_4": 0.0625, "vgg16_bn": 0.0625},
                    rounds=2, reps=1, warmup=1, epoch_steps=3, epoch_rounds=1, aa_images=8, aa_batch=8,
                    aa_images_extra=4, aa_train_steps=6, eval_images=8, eval_batch=8, pgd_steps=5)
        else:
            m = cls(quick=False)
        for name in ("rounds", "reps", "epoch_steps", "epoch_rounds", "aa_images", "aa_train_steps"):
            value = getattr(args, name.replace("-", "_"), None)
            if value is not None:
                setattr(m, name, value)
        return m


# ---------------------------------------------------------------- output
class Report:
    """Prints every line and keeps it in gpu_check.log; the figures go to figures.json."""

    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "gpu_check.log", "w", encoding="utf-8")  # noqa: SIM115 - open for the run
        self.figures: dict[str, Any] = {"format": "apbench-gpu-check", "version": 1, "parts": {},
                                        "goals": {}}

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def save(self, entries: list[dict]) -> None:
        from benchmark.core.io import atomic_write_json

        atomic_write_json(self.out / "figures.json", self.figures)
        atomic_write_json(self.out / "calibration_fragment.json", fragment(entries))

    def close(self) -> None:
        self.log.close()


def fragment(entries: list[dict]) -> dict:
    return {"format": cal.FORMAT, "version": cal.VERSION, "entries": entries}


class Budget:
    def __init__(self, seconds: float):
        self.total = float(seconds)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


class Timer:
    """Seconds of one call: CUDA events around it on a GPU (after a synchronise, so no earlier
    work leaks in), the wall clock on a CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        import torch

        if not self.cuda:
            t0 = time.perf_counter()
            out = fn()
            return time.perf_counter() - t0, out
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, out


def spread(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "n": len(times), "times_s": times}


# ---------------------------------------------------------------- environment
def environment(device) -> dict:
    import torch

    env: dict[str, Any] = {
        "device": str(device), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "platform": platform.platform(), "revision": _revision()}
    for name in ("numpy", "pyautoattack"):
        try:  # a bundled pyautoattack (--bundle-deps) has no package metadata, only __version__
            env[name] = getattr(importlib.import_module(name), "__version__", "unknown")
        except ImportError:
            env[name] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update({"device_name": torch.cuda.get_device_name(device),
                    "capability": f"{props.major}.{props.minor}",
                    "multiprocessors": props.multi_processor_count,
                    "memory_total_gib": total / 2**30, "memory_free_gib": free / 2**30,
                    "cudnn": torch.backends.cudnn.version(),
                    "tf32_conv": torch.backends.cudnn.allow_tf32,
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                    "cudnn_benchmark": torch.backends.cudnn.benchmark})
    else:
        env["device_name"] = cal.cpu_name()
    return env


def _revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def print_environment(say: Report, env: dict) -> None:
    say(f"device: {env['device']} {env['device_name']}")
    if "capability" in env:
        say(f"  capability {env['capability']}, {env['multiprocessors']} multiprocessors, "
            f"memory {env['memory_total_gib']:.1f} GiB total, {env['memory_free_gib']:.1f} GiB free")
        say(f"  cuDNN {env['cudnn']}, TF32 conv {env['tf32_conv']}, TF32 matmul {env['tf32_matmul']}, "
            f"cudnn.benchmark {env['cudnn_benchmark']}")
    say(f"torch {env['torch']} (CUDA {env['cuda']}), python {env['python']}, numpy {env['numpy']}, "
        f"pyautoattack {env['pyautoattack']}")
    say(f"CPU cores {env['cpu_count']}, torch threads {env['threads']}; {env['platform']}; "
        f"suite revision {env['revision']}")


# ---------------------------------------------------------------- imports and dependencies
def check_imports() -> int:
    """What this script imports, each reported; exit status 1 when something is missing."""
    missing = []
    modules = ["torch", "numpy", "tqdm", "pyautoattack", "benchmark.training.loop", "benchmark.training.stages",
               "benchmark.evaluation.protocol", "benchmark.evaluation.autoattack", "methods.base", "methods.hydra",
               "methods.harp", "methods.s2ap"]
    for name in modules:
        try:
            mod = importlib.import_module(name)
            print(f"ok       {name} {getattr(mod, '__version__', '')}".rstrip())
        except ImportError as exc:
            missing.append(getattr(exc, "name", None) or name)
            print(f"MISSING  {name}: {exc}")
    try:
        import torch
        if torch.cuda.is_available():
            print(f"CUDA     {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})")
        else:
            print("CUDA     not available: the check would run on the CPU (pass --device cpu --quick)")
    except ImportError:
        pass
    if missing:
        print(f"missing: {', '.join(sorted(set(missing)))}. Bring pure-Python packages with "
              f"`python speed/gpu_check.py --bundle-deps .whl/site` on a machine that has them, "
              f"carry .whl and export PYTHONPATH=$PWD/.whl/site")
        return 1
    print("all imports found")
    return 0


def bundle_deps(target: Path) -> int:
    """Copies the pure-Python packages the GPU machine lacks into ``target`` (for PYTHONPATH)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, leave_out in BUNDLE.items():
        mod = importlib.import_module(name)
        src = Path(mod.__file__).parent
        dst = target / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*leave_out))
        size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        print(f"{name} {getattr(mod, '__version__', '')}: {src} -> {dst} ({size / 1e6:.1f} MB)")
    print(f"carry the folder holding {target} and export PYTHONPATH={target} on the GPU machine")
    return 0


# ---------------------------------------------------------------- the calibration file
def merge(fragment_path: Path, calibration_path: Path) -> int:
    """Merges a fragment's entries into the calibration file: same key, replaced; new, added."""
    from benchmark.core.io import read_json

    frag = read_json(fragment_path)
    check_calibration(frag, fragment_path)
    if not calibration_path.is_file():
        print(f"error: no calibration file at {calibration_path}; it is part of the repository "
              f"(the cost estimate's data). Create it first, or pass --calibration PATH",
              file=sys.stderr)
        return 2
    quick = [e["arch"] for e in frag["entries"] if "--quick" in str(e.get("command", ""))]
    if quick:
        print(f"error: {fragment_path} was made with --quick (tiny models, the structure test); "
              f"its figures are not a calibration", file=sys.stderr)
        return 2
    existing = read_json(calibration_path)
    check_calibration(existing, calibration_path)
    old_keys = {cal.key(e) for e in existing["entries"]}
    replaced = sum(cal.key(e) in old_keys for e in frag["entries"])
    added = len(frag["entries"]) - replaced
    cal.merge(calibration_path, frag["entries"])
    print(f"{calibration_path}: {replaced} entr{'y' if replaced == 1 else 'ies'} replaced, {added} added")
    return 0


def check_calibration(doc: Any, path: Path | str) -> None:
    """The format the cost estimate reads (benchmark.planning.calibration), with a measured, positive figure
    for every step and image; a CalibrationError (a ValueError) naming the file and the field."""
    found = cal.problems(doc)
    if not found:
        found = [f"entries[{i}].seconds.{k}: {e['seconds'][k]!r}, a measured time is positive"
                 for i, e in enumerate(doc["entries"]) for k in cal.SECONDS if not e["seconds"][k] > 0]
    if found:
        raise cal.CalibrationError(f"{path}: " + "; ".join(found))


# ---------------------------------------------------------------- synthetic data
def random_data(n: int, info, seed: int):
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


# ---------------------------------------------------------------- reference: public-style HYDRA
# NOT the suite's code path: a re-implementation of the public HYDRA training step, written from
# the behaviour docs/methods.md describes ("the public code sorts all scores on every forward
# pass, attack steps included; same mask, more work"), to measure what our once-per-step mask
# saves. No public code was copied.
# torch is imported inside functions throughout: --check-imports, --bundle-deps and --merge run
# (and report) on a machine without it
@functools.cache
def _public_style_classes():
    """(sorted-mask autograd function, conv layer, linear layer) of the public-style reference."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PublicStyleSortedMask(torch.autograd.Function):
        """Forward: keep all but the ``drop`` smallest |s|, found by a full sort on every call.
        Backward: straight through to |s| (autograd's abs then multiplies by sign(s))."""

        @staticmethod
        def forward(ctx, abs_scores, drop):
            order = torch.sort(abs_scores.flatten()).indices
            mask = torch.ones(abs_scores.numel(), device=abs_scores.device, dtype=abs_scores.dtype)
            mask[order[:drop]] = 0
            return mask.view_as(abs_scores)

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    class PublicStyleConv2d(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, self.weight * public_style_mask(self.scores, self.drop), self.bias)

    class PublicStyleLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * public_style_mask(self.scores, self.drop), self.bias)

    return PublicStyleSortedMask, PublicStyleConv2d, PublicStyleLinear


def public_style_mask(scores, drop: int):
    """The public-style layer's mask of ``scores``: a full sort of |scores|, every call."""
    return _public_style_classes()[0].apply(scores.abs(), drop)


def _public_style_layer(module, keep: float):
    """A Conv2d/Linear twin whose forward recomputes its mask from the scores on every call."""
    from torch import nn

    from benchmark.core.masking import kept_count

    _, conv, linear = _public_style_classes()
    if isinstance(module, nn.Conv2d):
        new = conv(module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                   padding=module.padding, dilation=module.dilation, groups=module.groups,
                   bias=module.bias is not None, padding_mode=module.padding_mode,
                   device=module.weight.device)
    else:
        new = linear(module.in_features, module.out_features, bias=module.bias is not None,
                     device=module.weight.device)
    new.load_state_dict(module.state_dict())
    w = new.weight.detach()
    # HYDRA's scaled initialisation, as docs/methods.md states it: sqrt(6 / fan_in) * w / max|w|
    new.scores = nn.Parameter(math.sqrt(6.0 / w[0].numel()) * w / w.abs().max().clamp_min(1e-12))
    # the published count: a layer of n weights keeps n - floor((1 - k) n)
    new.drop = w.numel() - kept_count(w.numel(), keep)
    new.train(module.training)
    return new


def to_public_style(model, keep: float):
    """Replaces every Conv2d and Linear (first and last included) by its public-style twin."""
    from torch import nn

    for name, child in list(model.named_children()):
        if type(child) in (nn.Conv2d, nn.Linear):
            setattr(model, name, _public_style_layer(child, keep))
        else:
            to_public_style(child, keep)
    return model


class PublicStyleHydra:
    """The public-style search step: attack, loss, backward, SGD on scores and BatchNorm.

    The attack and loss are the suite's (RobustLoss), so that the only difference from our step is
    the mask machinery: a sort per layer per forward pass instead of a top-k per optimiser step,
    and the scores inside every attack graph instead of a folded, frozen product."""

    def __init__(self, model, cfg, device, *, bf16: bool = False, channels_last: bool = False):
        import torch
        from torch import nn

        from benchmark.training.loop import build_optimizer
        from benchmark.training.losses import RobustLoss

        self.bf16 = bf16 and device.type == "cuda"
        self.channels_last = channels_last and device.type == "cuda"
        if self.channels_last:  # laid out like its inputs, as our stages lay out theirs
            model = model.to(memory_format=torch.channels_last)
        self.model, self.cfg, self.device = model, cfg, device
        params = []
        for module in model.modules():
            is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
            for pname, p in module.named_parameters(recurse=False):
                trains = pname == "scores" or (is_bn and cfg.train_bn)
                p.requires_grad_(trains)
                if trains:
                    params.append(p)
        self.optimizer = build_optimizer(params, cfg)
        self.loss = RobustLoss(cfg.loss, cfg.attack, trades_beta=cfg.trades_beta,
                               adv_eval_mode=cfg.adv_eval_mode)
        self._torch = torch

    def autocast(self):
        if self.bf16:
            return self._torch.autocast("cuda", dtype=self._torch.bfloat16)
        return self._torch.autocast("cpu", enabled=False)

    def step(self, x, y) -> float:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=self._torch.channels_last)
        with self.autocast():
            batch = self.loss.prepare(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, _ = self.loss.loss(self.model, batch)
        loss.backward()
        self.optimizer.step()
        return loss.item()  # a training loop that logs its loss reads it every step

    def epoch(self, dataset, seed: int) -> int:
        """One pass over ``dataset`` in the order our Trainer draws with the same seed."""
        from benchmark.training.loop import make_loader

        loader = make_loader(dataset, self.cfg.batch_size, shuffle=True,
                             generator=self._torch.Generator().manual_seed(seed),
                             drop_last=len(dataset) > self.cfg.batch_size)
        self.model.train()
        steps = 0
        for x, y in loader:
            loss = self.step(x, y)
            if not math.isfinite(loss):
                raise FloatingPointError(f"public-style HYDRA: loss is {loss}")
            steps += 1
        return steps


# ---------------------------------------------------------------- the suite's code paths
def train_cfg(info, m: Matrix, loss: str = "pgd_at", epochs: int = 20, lr: float = 0.1):
    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig

    return TrainConfig(epochs=epochs, lr=lr, momentum=0.9, weight_decay=5e-4, batch_size=m.batch,
                       loss=loss, attack=AttackConfig(info.eps, m.attack_steps, info.step_size),
                       val_attack_steps=0)


def stage_training(name: str, cfg, dataset, device, precision: str):
    """The stages' own trainer set-up (benchmark.training.stages.StageTraining), without files."""
    from benchmark.training.stages import StageTraining

    lowp = precision == "bf16"
    return StageTraining(name=name, train=cfg, train_set=dataset, val_set=None, device=device,
                         seed=0, fingerprint="gpu_check", bf16=lowp, channels_last=lowp)


def search_model(method_name: str, arch: str, width: float, info, m: Matrix, cfg, run, device):
    """As the prune stage builds it: plain model, then the method's search set-up and mode."""
    import torch

    from benchmark.core import masking
    from benchmark.core.models import build_model
    from benchmark.core.registry import method_registry

    torch.manual_seed(0)
    model = build_model(arch, info, width=width)
    method = method_registry().get(method_name)(m.sparsity)
    method.prepare_search_model(model, run.score_init_context(torch.Generator().manual_seed(0)),
                                weights_generator=torch.Generator().manual_seed(0))
    masking.set_mode(model, "search", train_bn=cfg.train_bn)
    return run.layout(model), method


def make_trainer(variant: str, arch: str, width: float, precision: str, info, m: Matrix, data, device):
    """One variant's Trainer, built as the pretrain / prune / finetune stage builds it, with its
    hooks started at a mid-search epoch (S2AP past its warm-up, AWP active)."""
    import torch

    from benchmark.core import masking
    from benchmark.core.models import build_model

    cfg = train_cfg(info, m)
    if variant == "dense":
        run = stage_training("pretrain", cfg, data, device, precision)
        torch.manual_seed(0)
        model = run.layout(build_model(arch, info, width=width).to(device))
        tr = run.trainer(model, list(model.parameters()))
    elif variant in ("finetune", "finetune+awp"):
        run = stage_training("finetune", cfg, data, device, precision)
        model, method = search_model("hydra", arch, width, info, m, cfg, run, device)
        method.finalize_search(model)
        masking.set_mode(model, "finetune")
        masking.apply_masks_to_weights(model)
        hooks = method.finetune_hooks(model, cfg)
        if variant == "finetune+awp":
            hooks.append(method.s2ap_finetune_hook({"gamma": 0.01, "warmup_epochs": 0}))
        tr = run.trainer(model, [p for p in model.parameters() if p.requires_grad], hooks)
    else:
        run = stage_training("prune", cfg, data, device, precision)
        name = variant.split("+")[0]
        model, method = search_model(name, arch, width, info, m, cfg, run, device)
        hooks = method.search_hooks(model, cfg)
        if variant.endswith("+s2ap"):
            hooks.append(method.s2ap_search_hook({"gamma": 0.01, "warmup": 0.25}, cfg.epochs))
        tr = run.trainer(model, method.search_params(model, cfg), hooks)
    for hook in tr.hooks:
        hook.on_fit_start(tr)
        hook.on_epoch_start(tr, cfg.epochs // 2)
    tr.model.train()
    return tr


# ---------------------------------------------------------------- the check
class Check:
    def __init__(self, args, say: Report):
        import torch

        from benchmark.core.datasets import get_info

        self.args, self.say = args, say
        self.torch = torch
        self.device = torch.device(args.device)
        self.m = Matrix.for_args(args)
        self.info = get_info("cifar10")
        self.timer = Timer(self.device)
        self.budget = Budget(args.budget_s)
        self.lowp = "bf16" if self.device.type == "cuda" else "fp32"
        self.precisions = ["bf16", "fp32"] if self.device.type == "cuda" else ["fp32"]
        self.steps: dict[tuple[str, str], dict] = {}
        self.evals: dict[str, dict] = {}
        self.aa_runs: dict[str, list[float]] = {"bare": [], "ours": []}
        self.aa_model = None
        self.entries: list[dict] = []
        self.errors = 0
        # seconds of the dense step of ResNet18 at the first precision: the unit of the estimates
        self.unit = 0.12 if self.device.type == "cuda" else 0.05

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> list[tuple[str, Callable[[], float], Callable[[], None]]]:
        lowp = self.lowp
        parts = [(f"steps:resnet18:{lowp}", lambda: self.est_steps("resnet18", lowp),
                  lambda: self.part_steps("resnet18", lowp)),
                 (f"epoch:resnet18:{lowp}", self.est_epoch, lambda: self.part_epoch("resnet18", lowp)),
                 ("autoattack:resnet18", lambda: self.est_aa("resnet18", 2), self.part_autoattack),
                 ("eval:resnet18", lambda: self.est_eval("resnet18"), lambda: self.part_eval("resnet18"))]
        if "fp32" in self.precisions and lowp != "fp32":
            parts.append(("steps:resnet18:fp32", lambda: self.est_steps("resnet18", "fp32"),
                          lambda: self.part_steps("resnet18", "fp32")))
        parts.append(("autoattack2:resnet18", lambda: self.est_aa("resnet18", 2), self.part_autoattack2))
        parts.append((f"steps:wrn28_4:{lowp}", lambda: self.est_steps("wrn28_4", lowp),
                      lambda: self.part_steps("wrn28_4", lowp)))
        parts.append(("eval:wrn28_4", lambda: self.est_eval("wrn28_4", aa=True),
                      lambda: self.part_eval("wrn28_4", aa=True)))
        if "fp32" in self.precisions and lowp != "fp32":
            parts.append(("steps:wrn28_4:fp32", lambda: self.est_steps("wrn28_4", "fp32"),
                          lambda: self.part_steps("wrn28_4", "fp32")))
        parts.append(("steps:vgg16_bn:fp32", lambda: self.est_steps("vgg16_bn", "fp32"),
                      lambda: self.part_steps("vgg16_bn", "fp32")))
        parts.append(("eval:vgg16_bn", lambda: self.est_eval("vgg16_bn", aa=True),
                      lambda: self.part_eval("vgg16_bn", aa=True)))
        wanted = set(self.args.parts.split(",")) if self.args.parts else None
        return [p for p in parts if wanted is None or p[0] in wanted or p[0].split(":")[0] in wanted]

    # -- estimates (seconds; only to decide what fits) ----------------------------------------
    def _step_unit(self, arch: str, precision: str) -> float:
        precision = precision if self.device.type == "cuda" else "bf16"
        return self.unit * ARCH_COST.get(arch, 1.5) * PRECISION_COST[precision]

    def est_steps(self, arch: str, precision: str) -> float:
        m = self.m
        n = m.warmup + m.rounds * m.reps
        return 3.0 + n * self._step_unit(arch, precision) * sum(VARIANT_COST.values())

    def est_epoch(self) -> float:
        m = self.m
        # TRADES is about 1.2x a PGD-AT step; the public-style step about twice ours (sorts)
        return 3.0 + (m.epoch_rounds + 0.2) * m.epoch_steps * self.unit * (1.25 * 1.2 + 2.5)

    def est_aa(self, arch: str, runs: int) -> float:
        if self.aa_runs["bare"] or self.aa_runs["ours"]:
            one = statistics.median(self.aa_runs["bare"] + self.aa_runs["ours"])
        else:
            # about 1,500 forward-backward passes per image for a model with half its images
            # robust, at batch 500 a pass costs about a PGD-step's pass per image
            one = self.m.aa_images * 1500 * self.unit / 11 / self.m.batch * 1.5
        train = self.m.aa_train_steps * self.unit * 1.2
        return train + runs * one * ARCH_COST.get(arch, 1.5) + 3.0

    def est_eval(self, arch: str, aa: bool = False) -> float:
        m = self.m
        passes = m.eval_images * (m.pgd_steps + 2) / m.batch
        t = 3.0 + passes * self.unit / 11 * ARCH_COST.get(arch, 1.5) * 2
        if aa:
            train = m.aa_train_steps * self.unit * 1.2 * ARCH_COST.get(arch, 1.5)
            t += train + (self.est_aa(arch, 1) - 3.0) * m.aa_images_extra / max(m.aa_images, 1)
        return t

    # -- part 1: step times -------------------------------------------------------------------
    def part_steps(self, arch: str, precision: str) -> dict:
        from torch.utils.data import TensorDataset

        from benchmark.core.registry import method_registry

        m, say = self.m, self.say
        width = m.widths[arch]
        x, y = random_data(m.batch, self.info, 0)
        if self.device.type == "cuda":  # what the stages' loader hands over
            x, y = x.pin_memory(), y.pin_memory()
        data = TensorDataset(x, y)
        registered = set(method_registry().names())
        variants = [v for v in VARIANTS if v in ("dense", "finetune", "finetune+awp")
                    or v.split("+")[0] in registered]
        trainers = {v: make_trainer(v, arch, width, precision, self.info, m, data, self.device)
                    for v in variants}
        say(f"  {arch} width {width}, batch {m.batch}, PGD-{m.attack_steps}, {precision}"
            f"{' + channels_last' if precision == 'bf16' else ''}, sparsity {m.sparsity}; "
            f"{m.warmup} warm-up steps, {m.rounds} rounds x {m.reps} steps")
        for _ in range(m.warmup):  # allocator, cuDNN plans, first-call overheads
            for v in variants:
                trainers[v].train_step(x, y)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(m.rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                for _ in range(m.reps):
                    t, loss = self.timer(lambda tr=trainers[v]: tr.train_step(x, y))
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"{v}: loss {loss}")
                    times[v].append(t)
        out = {"arch": arch, "width": width, "precision": precision, "batch": m.batch,
               "attack_steps": m.attack_steps, "loss": "pgd_at", "variants": {}, "ratios": {}}
        for v in variants:
            out["variants"][v] = spread(times[v])
            s = out["variants"][v]
            say(f"  {v:13s} median {s['median_s'] * 1e3:8.1f} ms   min {s['min_s'] * 1e3:8.1f}   "
                f"max {s['max_s'] * 1e3:8.1f}")
        for a, b in (("hydra", "dense"), ("hydra+s2ap", "hydra"), ("harp", "hydra"),
                     ("finetune", "dense"), ("finetune+awp", "finetune")):
            if a in times and b in times:
                per = [ta / tb for ta, tb in zip(times[a], times[b])]
                ratio = out["variants"][a]["median_s"] / out["variants"][b]["median_s"]
                out["ratios"][f"{a}/{b}"] = {"median_ratio": ratio, "per_pair_median": statistics.median(per),
                                             "per_pair_min": min(per), "per_pair_max": max(per)}
                say(f"  {a} / {b}: {ratio:.3f} (per-pair median {statistics.median(per):.3f}, "
                    f"range {min(per):.3f}-{max(per):.3f})")
        self.steps[(arch, precision)] = out
        if arch == "resnet18" and precision == self.lowp:
            self.unit = out["variants"]["dense"]["median_s"]
            self.goal(0, out["ratios"].get("hydra/dense", {}).get("median_ratio"))
            self.goal(1, out["ratios"].get("hydra+s2ap/hydra", {}).get("median_ratio"))
        return out

    # -- part 2: our HYDRA epoch against the public-style step ----------------------------------
    def part_epoch(self, arch: str, precision: str) -> dict:
        import torch
        from torch.utils.data import TensorDataset

        from benchmark.core.models import build_model

        m, say = self.m, self.say
        width = m.widths[arch]
        cfg = train_cfg(self.info, m, loss="trades", epochs=1)
        x, y = random_data(m.epoch_steps * m.batch, self.info, 1)
        data = TensorDataset(x, y)
        warm = TensorDataset(x[:2 * m.batch], y[:2 * m.batch])
        run = stage_training("prune", cfg, data, self.device, precision)
        ours, method = search_model("hydra", arch, width, self.info, m, cfg, run, self.device)
        torch.manual_seed(0)
        ref_model = to_public_style(build_model(arch, self.info, width=width), 1.0 - m.sparsity).to(self.device)
        ref = PublicStyleHydra(ref_model, cfg, self.device, bf16=run.bf16, channels_last=run.channels_last)

        def our_epoch(dataset):
            tr = stage_training("prune", cfg, dataset, self.device, precision).trainer(
                ours, method.search_params(ours, cfg), method.search_hooks(ours, cfg))
            tr.fit()

        say(f"  {arch} width {width}, TRADES PGD-{m.attack_steps}, {precision}; an 'epoch' is "
            f"{m.epoch_steps} steps of {m.batch} synthetic CIFAR-shaped images from CPU memory "
            f"through the suite's loader (Trainer.fit; the reference walks the same loader order); "
            f"{m.epoch_rounds} interleaved rounds after a 2-step warm-up of each")
        our_epoch(warm)
        ref.epoch(warm, 0)
        times: dict[str, list[float]] = {"ours": [], "public_style": []}
        for r in range(m.epoch_rounds):
            order = ("ours", "public_style") if r % 2 == 0 else ("public_style", "ours")
            for who in order:
                fn = (lambda: our_epoch(data)) if who == "ours" else (lambda: ref.epoch(data, 0))
                t, _ = self.timer(fn)
                times[who].append(t)
            say(f"  round {r + 1}: ours {times['ours'][-1]:.2f} s, public-style {times['public_style'][-1]:.2f} s "
                f"(first: {order[0]})")
        out = {"arch": arch, "width": width, "precision": precision, "loss": "trades",
               "steps_per_epoch": m.epoch_steps, "batch": m.batch,
               "ours": spread(times["ours"]), "public_style": spread(times["public_style"])}
        ratio = out["ours"]["median_s"] / out["public_style"]["median_s"]
        out["ratio"] = ratio
        ours_s = out['ours']['median_s']
        say(f"  our epoch median {ours_s:.2f} s ({ours_s / m.epoch_steps * 1e3:.1f} ms/step), "
            f"public-style {out['public_style']['median_s']:.2f} s "
            f"({out['public_style']['median_s'] / m.epoch_steps * 1e3:.1f} ms/step); ratio {ratio:.3f}")
        self.goal(2, ratio)
        return out

    # -- part 3 and 6: AutoAttack, ours against bare --------------------------------------------
    def quick_trained(self, arch: str, steps: int):
        """A model trained for ``steps`` PGD-AT steps on margin_data (the pretrain stage's trainer),
        then rebuilt plain and made ready for evaluation as the evaluate stage does."""
        import torch
        from torch.utils.data import TensorDataset

        from benchmark.core.models import build_model
        from benchmark.evaluation.protocol import prepare_for_eval

        m = self.m
        width = m.widths[arch]
        cfg = train_cfg(self.info, m, loss="pgd_at", epochs=1, lr=0.05)
        cfg.schedule = "constant"
        x, y = margin_data(max(steps, 1) * m.batch, self.info, 2)
        run = stage_training("pretrain", cfg, TensorDataset(x, y), self.device, self.lowp)
        torch.manual_seed(0)
        model = run.layout(build_model(arch, self.info, width=width).to(self.device))
        if steps > 0:
            run.trainer(model, list(model.parameters())).fit()
        plain = build_model(arch, self.info, width=width)
        plain.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return prepare_for_eval(plain.to(self.device))

    def aa_bare(self, model, x, y):
        from pyautoattack import AutoAttack

        adversary = AutoAttack(model, norm="Linf", eps=self.info.eps, seed=0, version="standard",
                               device=str(self.device))
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=self.m.aa_batch)
        return (y_adv.detach().cpu() == y.cpu())

    def aa_ours(self, model, x, y, n_shard: int | None = None):
        from benchmark.evaluation.autoattack import run_autoattack

        state = Path(tempfile.mkdtemp(prefix="gpu_check_aa_"))  # not in --out: $OUT brings back 8 files
        try:  # a fresh state folder: an earlier run's shard files would be resumed, not attacked
            return run_autoattack(model, x, y, eps=self.info.eps, version="standard", attacks=None,
                                  seed=0, batch_size=self.m.aa_batch,
                                  shard_size=n_shard or self.m.aa_batch, state_dir=state,
                                  device=self.device, progress=True)
        finally:
            shutil.rmtree(state, ignore_errors=True)

    def part_autoattack(self) -> dict:
        m, say = self.m, self.say
        t_train, model = self.timer(lambda: self.quick_trained("resnet18", m.aa_train_steps))
        x, y = margin_data(m.aa_images, self.info, 3)
        self.aa_model = (model, x, y)
        say(f"  model: ResNet18 width {m.widths['resnet18']} trained {m.aa_train_steps} PGD-AT steps "
            f"({t_train:.1f} s) on synthetic images (half a class pattern far above eps, half below); "
            f"AutoAttack standard, eps {self.info.eps:.4f}, {m.aa_images} images, batch {m.aa_batch}, "
            f"seed 0; ours: one shard with a state folder, as the evaluate stage runs it")
        self.aa_warmup(model, x, y)
        out = self.aa_round(model, x, y, ("bare", "ours"))
        out["train_steps"] = m.aa_train_steps
        return out

    def part_autoattack2(self) -> dict:
        if self.aa_model is None:
            raise RuntimeError("part autoattack:resnet18 did not run")
        return self.aa_round(*self.aa_model, ("ours", "bare"))

    def aa_warmup(self, model, x, y) -> None:
        from pyautoattack import AutoAttack

        # the kernels of the attack's batch shapes, outside the timed runs
        adversary = AutoAttack(model, norm="Linf", eps=self.info.eps, seed=0, version="standard",
                               device=str(self.device))
        adversary.attacks_to_run = ["apgd-ce"]
        adversary.apgd.n_iter = 2
        adversary.run_standard_evaluation(x, y, batch_size=self.m.aa_batch)

    def aa_round(self, model, x, y, order) -> dict:
        say = self.say
        flags, summary = {}, None
        for i, who in enumerate(order):
            if i == 1 and self.aa_runs[order[0]][-1] * 1.1 > self.budget.left():
                self.say(f"  {who}: SKIPPED ({self.aa_runs[order[0]][-1]:.0f} s for the first run, "
                         f"{self.budget.left():.0f} s of the budget left)")
                self.aa_runs[order[0]].pop()
                return {"order": list(order), "skipped": who}
            if who == "bare":
                t, flags["bare"] = self.timer(lambda: self.aa_bare(model, x, y))
            else:
                t, summary = self.timer(lambda: self.aa_ours(model, x, y))
                flags["ours"] = summary["flags"]
            self.aa_runs[who].append(t)
            say(f"  {who}: {t:.2f} s")
        same = bool(flags["ours"].equal(flags["bare"]))
        overhead = summary["seconds"] - summary["attack_seconds"]
        n = summary["n"]
        say(f"  identical per-image flags: {same}; AutoAttack accuracy {summary['acc']:.3f} "
            f"(clean {summary['clean_acc']:.3f}; after " +
            ", ".join(f"{a} {v:.3f}" for a, v in summary["robust_after"].items()) + ")")
        say(f"  our time outside pyautoattack's run_standard_evaluation: {overhead * 1e3:.1f} ms "
            f"({100 * overhead / max(summary['attack_seconds'], 1e-9):.2f} % of the attack)")
        ratio = statistics.median(self.aa_runs["ours"]) / statistics.median(self.aa_runs["bare"])
        say(f"  ours / bare (medians of {len(self.aa_runs['ours'])} run(s) each): {ratio:.4f}")
        if not same:
            raise RuntimeError("our AutoAttack flags differ from the bare call's")
        self.evals.setdefault("resnet18", {})["autoattack_image"] = statistics.median(self.aa_runs["ours"]) / n
        self.goal(3, ratio)
        return {"order": list(order), "bare": spread(self.aa_runs["bare"]), "ours": spread(self.aa_runs["ours"]),
                "ratio": ratio, "identical_flags": same, "overhead_s": overhead, "n": n,
                "acc": summary["acc"], "clean_acc": summary["clean_acc"],
                "robust_after": summary["robust_after"], "perturbed": summary["perturbed"]}

    # -- part 4 and 8: evaluation costs ----------------------------------------------------------
    def part_eval(self, arch: str, aa: bool = False) -> dict:
        import torch

        from benchmark.evaluation.protocol import clean_flags, pgd_flags

        m, say = self.m, self.say
        model = (self.aa_model[0] if arch == "resnet18" and self.aa_model is not None
                 else self.quick_trained(arch, m.aa_train_steps if aa else 0))
        x, y = margin_data(m.eval_images, self.info, 4)
        every = torch.ones(m.eval_images, dtype=torch.bool)
        pgd_flags(model, (x[:m.eval_batch], y[:m.eval_batch]), self.info.eps, steps=1,
                  batch_size=m.eval_batch, clean=every[:m.eval_batch])  # warm-up
        t_clean, _ = self.timer(lambda: clean_flags(model, (x, y), batch_size=m.eval_batch))
        t_pgd, _ = self.timer(lambda: pgd_flags(model, (x, y), self.info.eps, steps=m.pgd_steps,
                                                batch_size=m.eval_batch, clean=every))
        ev = self.evals.setdefault(arch, {})
        ev.update({"clean_image": t_clean / m.eval_images, "pgd_image": t_pgd / m.eval_images})
        say(f"  {arch}: clean {t_clean:.3f} s, PGD-{m.pgd_steps} {t_pgd:.2f} s on {m.eval_images} "
            f"images (batch {m.eval_batch}, every image attacked): {ev['clean_image'] * 1e3:.3f} and "
            f"{ev['pgd_image'] * 1e3:.2f} ms per image")
        out = {"arch": arch, "images": m.eval_images, "batch": m.eval_batch, "pgd_steps": m.pgd_steps,
               "clean_s": t_clean, "pgd_s": t_pgd}
        if aa:
            n = m.aa_images_extra
            xa, ya = margin_data(n, self.info, 3)
            self.aa_warmup(model, xa, ya)
            t, summary = self.timer(lambda: self.aa_ours(model, xa, ya, n_shard=n))
            ev["autoattack_image"] = t / n
            out["autoattack"] = {"n": n, "seconds": t, "acc": summary["acc"], "clean_acc": summary["clean_acc"],
                                 "robust_after": summary["robust_after"], "train_steps": m.aa_train_steps}
            say(f"  {arch}: AutoAttack standard (ours) {t:.2f} s on {n} images, "
                f"{ev['autoattack_image'] * 1e3:.1f} ms per image; accuracy {summary['acc']:.3f} "
                f"(clean {summary['clean_acc']:.3f})")
        return out

    # -- goals, calibration ------------------------------------------------------------------------
    def goal(self, i: int, value: float | None) -> None:
        name, limit = GOALS[i]
        if value is None:
            return
        status = "PASS" if value <= limit else "FAIL"
        self.say.figures["goals"][name] = {"value": value, "limit": limit, "status": status}
        self.say(f"  -> goal {name} = {value:.3f} (<= {limit}): {status}")

    def calibration_entries(self) -> list[dict]:
        env = self.say.figures["env"]
        cmd = "python speed/gpu_check.py" + "".join(f" {a}" for a in sys.argv[1:])
        entries = []
        for (arch, precision), st in self.steps.items():
            ev = self.evals.get(arch, {})
            seconds = {VARIANTS[v]: s["median_s"] for v, s in st["variants"].items() if VARIANTS[v]}
            seconds.update({k: ev[k] for k in ("pgd_image", "clean_image", "autoattack_image") if k in ev})
            missing = [k for k in SECONDS_KEYS if k not in seconds]
            if missing:
                continue
            entries.append({
                "device": self.device.type, "device_name": env["device_name"],
                "threads": None if self.device.type == "cuda" else self.torch.get_num_threads(),
                "arch": arch, "input_shape": [self.info.in_channels, self.info.image_size, self.info.image_size],
                "num_classes": self.info.num_classes, "width": st["width"], "batch_size": st["batch"],
                "precision": precision, "seconds": {k: seconds[k] for k in SECONDS_KEYS},
                "measured": dt.date.today().isoformat(), "command": cmd})
        return entries

    def free(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> int:
        say, m = self.say, self.m
        env = environment(self.device)
        say.figures.update({"env": env, "args": vars(self.args) | {"out": str(self.args.out)},
                            "matrix": m.__dict__, "started": dt.datetime.now().isoformat(timespec="seconds")})
        say("== environment")
        print_environment(say, env)
        if m.quick:
            say("QUICK MODE: tiny models and sizes, the structure test; figures and goals say nothing "
                "about a GPU")
        say(f"budget {self.budget.total:.0f} s")
        say.save([])
        for name, estimate, fn in self.plan():
            est = estimate()
            left = self.budget.left()
            say("")
            if est > left:
                say(f"== {name}: SKIPPED (needs about {est:.0f} s, {left:.0f} s of the budget left)")
                say.figures["parts"][name] = {"status": "skipped", "estimate_s": est, "left_s": left}
                say.save(self.entries)
                continue
            say(f"== {name} (estimate {est:.0f} s, {left:.0f} s left)")
            t0 = time.perf_counter()
            try:
                out = fn()
                status = "done"
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                self.errors += 1
                status, out = "error", {"error": f"{type(exc).__name__}: {exc}"}
                for line in traceback.format_exc().rstrip().splitlines():
                    say(f"  ! {line}")
            self.free()  # the part's models and trainers went with its frame
            took = time.perf_counter() - t0
            say(f"   {name}: {status} in {took:.1f} s (elapsed {self.budget.elapsed():.0f} s)")
            say.figures["parts"][name] = {"status": status, "seconds": took, "estimate_s": est, **(out or {})}
            self.entries = self.calibration_entries()
            say.figures["elapsed_s"] = self.budget.elapsed()
            say.save(self.entries)
        self.summary()
        return 1 if self.errors else 0

    def summary(self) -> None:
        say = self.say
        say("")
        say("== goals")
        for name, limit in GOALS:
            g = say.figures["goals"].get(name)
            if g is None:
                say.figures["goals"][name] = {"value": None, "limit": limit, "status": "NOT RUN"}
                say(f"GOAL {name} <= {limit}: NOT RUN (its part was skipped or failed)")
            else:
                say(f"GOAL {name} = {g['value']:.3f} <= {limit}: {g['status']}")
        say("")
        say("== calibration entries")
        for e in self.entries:
            secs = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in e["seconds"].items())
            say(f"  {e['arch']} {e['precision']} on {e['device_name']}: {secs}")
        for (arch, precision) in self.steps:
            if not any(e["arch"] == arch and e["precision"] == precision for e in self.entries):
                say(f"  {arch} {precision}: no entry (its evaluation or AutoAttack figures are missing)")
        say.figures["elapsed_s"] = self.budget.elapsed()
        say(f"elapsed {self.budget.elapsed():.0f} s of {self.budget.total:.0f} s; files in {self.args.out}: "
            f"gpu_check.log, figures.json, calibration_fragment.json")
        say.save(self.entries)


# ---------------------------------------------------------------- command line
def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "build" / "gpu_check"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for the matrix, the goals and the files.")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the CPU test of the structure")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="seconds the whole run may take; parts that would not fit are skipped")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else build/gpu_check)")
    ap.add_argument("--parts", default=None,
                    help="comma-separated part names or kinds (steps, epoch, autoattack, autoattack2, eval)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--epoch-steps", type=int, default=None)
    ap.add_argument("--epoch-rounds", type=int, default=None)
    ap.add_argument("--aa-images", type=int, default=None)
    ap.add_argument("--aa-train-steps", type=int, default=None)
    ap.add_argument("--check-imports", action="store_true", help="report missing packages and exit")
    ap.add_argument("--bundle-deps", type=Path, metavar="DIR",
                    help="copy the pure-Python packages the GPU machine lacks into DIR and exit")
    ap.add_argument("--merge", type=Path, metavar="FRAGMENT",
                    help="merge a calibration fragment into --calibration and exit")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION_FILE,
                    help=f"the calibration file --merge writes (default {CALIBRATION_FILE.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    if args.check_imports:
        return check_imports()
    if args.bundle_deps:
        return bundle_deps(args.bundle_deps)
    if args.merge:
        return merge(args.merge, args.calibration)

    import logging

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU; pass --device cpu --quick for the "
              "structure test", file=sys.stderr)
        return 2
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    args.out = (args.out or default_out()).resolve()
    # the library's warnings reach the log; its per-epoch and per-attack INFO lines would drown it
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="  [log] %(name)s: %(message)s")
    os.environ.setdefault("APBENCH_PROGRESS", "0")
    say = Report(args.out)
    try:
        return Check(args, say).run()
    finally:
        say.close()


if __name__ == "__main__":
    sys.exit(main())
