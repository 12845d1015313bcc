"""GPU memory of one job, PREDICTED before any job runs, and the check that runtime.jobs_per_gpu
(k) jobs fit on one card together: a k the card cannot hold is one clear line before any job,
rather than jobs that run out of memory (or wait on each other) once started.

The prediction, per rule whose jobs use a GPU, is the largest job of that rule in the plan
(benchmark/planning/jobgraph.py) for the run's targets:

    job = CUDA_CONTEXT_GIB + parameters x state bytes per parameter + batch x bytes per image

- parameters: those of the preset's model, built on the CPU for its dataset at model.width by the
  registry's builder (benchmark.core.models.build_model);
- state bytes per parameter (STATE_BYTES): weights, gradients, SGD's momentum and, in the masked
  models of the search and the finetuning, the learned scores with their gradient and momentum,
  the mask and the folded weight x mask; S2AP's and AWP's extra copies; a bf16 weight copy under
  autocast;
- bytes per image: the outputs of the model's leaf modules in one forward of one image on the CPU
  (forward hooks, as benchmark.evaluation.batching does for the CPU; under the CPU's bf16 autocast
  for a bf16 stage, so each output counts in the dtype autocast gives it), times the forwards the
  step keeps for its backward (LOSS_GRAPHS: TRADES keeps the clean and the adversarial one), times
  BACKWARD_FACTOR, plus INPUT_COPIES input images; the batch is the stage's
  (pretrain/prune/finetune.batch_size, per-method overrides included) for training, the larger of
  evaluate.batch_size and evaluate.autoattack.batch_size for evaluation (always float32), at most
  the images it evaluates.

Measured against what autograd really keeps (torch.autograd.graph.saved_tensors_hooks, on the
CPU), the leaf outputs are 1.1 to 1.9 times the saved activations (ResNet18 on CIFAR-10 5.7 vs
4.5 MiB per image, WRN-28-4 7.6 vs 7.1, ResNet-50 on ImageNet 122 vs 82, ViT 10.1 vs 5.3), so the
prediction errs high; the margin is for what it does not count: cuDNN's workspaces, the caching
allocator's rounding and fragments. It is a prediction, not a measurement, and says so in every
message; APBENCH_GPU_MEMORY_CHECK=off starts a run it refuses (a job that does not fit then stops
with CUDA's out-of-memory error). Only a forward of one image runs (ResNet-50 at 224 px: about a
second on the CPU), never a batch.

A null evaluation batch size is chosen from the free memory when the job starts
(benchmark/evaluation/batching.py): with k jobs on a card each sees only what the others leave,
and jobs that start together may each see the whole card free. It is counted at NULL_BATCH image
(the least the choice can give, so the check refuses only what cannot run at all) and a note says
to set the batch sizes when k > 1.

The card's memory: runtime.gpu_memory_gib when set; else, on a workstation run (the runner's
--gpus, workflows/profiles/local-gpu), the smallest card nvidia-smi lists; for the estimate, the
card the calibration was measured on (KNOWN_CARDS_GIB). Where nothing tells it (a SLURM login node
without the setting), the check is skipped with one line saying so.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core.datasets import get_info
from benchmark.planning.jobgraph import JobGraph

GIB = 2**30
# Each job is a process with its own CUDA context: the driver's context, the cuBLAS/cuDNN handles
# and the kernels loaded on first use take about half a GiB on a current card and toolkit (a bare
# torch process that has run one convolution shows ~500 MiB in nvidia-smi). Torch's allocator never
# sees it, so neither does the batch chooser's free-memory figure; k jobs pay it k times.
CUDA_CONTEXT_GIB = 0.5
# bytes each parameter holds on the card through a job, float32. Every parameter is counted as if
# it were prunable (BatchNorm and bias parameters are few): an upper bound.
STATE_BYTES = {
    # the weight, its gradient, SGD's momentum
    "pretrain": 12,
    # a masked model (benchmark/core/masking.py): weight, one learned score per weight (score-based
    # pruning: HYDRA, HARP, RST), mask, the folded weight x mask the attack reuses; the search
    # trains the scores: their gradient and SGD's momentum on them
    "prune": 24,
    # the masked model training its weights: weight gradient and momentum, and the weight x mask
    # product the backward keeps, besides weight, scores, mask and folded product
    "finetune": 28,
    # evaluation: the masked model, no gradient or optimiser
    "evaluate": 16,
}
# S2AP's score-space step (prune, s2ap on/score): the perturbed scores, their mask, the originals
S2AP_EXTRA_BYTES = 12
# AWP (finetune, s2ap on/awp): the proxy model's weights, mask and gradient, and the perturbation
AWP_EXTRA_BYTES = 20
# bf16 autocast keeps a bfloat16 copy of every weight for the step
BF16_COPY_BYTES = 2
# forwards a training step keeps for its backward: TRADES differentiates its KL term through the
# clean and the adversarial forward together; PGD-AT, free and clean training keep one (an
# attack's own steps free their graph before the next)
LOSS_GRAPHS = {"trades": 2}
# the saved activations plus, in the backward, the gradients of the layers being differentiated
BACKWARD_FACTOR = 1.5
# input-sized tensors per image: the batch, its adversarial copy, their gradient, an attack's best
# point, momentum and step (APGD), free training's perturbation
INPUT_COPIES = 8
NULL_BATCH = 1

TRAIN_RULES = {"pretrain": "pretrain", "prune": "prune", "prune_second_seed": "prune",
               "finetune": "finetune"}
EVAL_RULES = ("evaluate", "evaluate_dense", "autoattack_shard")
# nvidia-smi's memory.total (MiB) of the cards the calibration names (benchmark/calibration):
# "H100" is the 80 GB card (an H100 NVL has more: taking the smaller errs safe)
KNOWN_CARDS_GIB = {"H200": 143771 / 1024, "H100": 81559 / 1024}
CHECK_ENV = "APBENCH_GPU_MEMORY_CHECK"
PREDICTED = "PREDICTED, not measured"


@dataclass(frozen=True)
class JobMemory:
    """The predicted memory of one job."""

    rule: str
    dataset: str
    arch: str
    batch_size: int | None  # the preset's; None: chosen from free memory at run time
    counted_batch: int
    precision: str
    parameters: int
    state_bytes: int  # per parameter
    image_bytes: int  # per image, factors included
    field: str  # the preset field that sets the batch size

    @property
    def bytes(self) -> int:
        return int(CUDA_CONTEXT_GIB * GIB + self.parameters * self.state_bytes
                   + self.counted_batch * self.image_bytes)

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def describe(self) -> str:
        batch = (f"batch {self.batch_size}" if self.batch_size is not None
                 else f"batch null, counted as {self.counted_batch}")
        return f"{self.dataset}/{self.arch}, {batch}, {self.precision}"


# ---------------------------------------------------------------- what one job needs
def _stage_of(cfg: Mapping[str, Any], job) -> tuple[str, dict[str, Any]]:
    if job.rule in EVAL_RULES:
        return "evaluate", cfg["evaluate"]
    stage = TRAIN_RULES[job.rule]
    if stage == "pretrain":
        return stage, apcfg.stage_config(cfg, stage, dataset=job.dataset, arch=job.arch,
                                         method=job.method)
    traits = (job.cell or {}).get("traits")
    return stage, apcfg.stage_config(cfg, stage, dataset=job.dataset, arch=job.arch,
                                     method=job.method, s2ap=job.s2ap, traits=traits)


def _images_evaluated(cfg: Mapping[str, Any], dataset: str) -> int:
    info = get_info(dataset)
    subset = cfg["data"].get("test_subset")
    test = info.test_size if subset is None else min(info.test_size, int(subset))
    ev = cfg["evaluate"]
    counts = [ev.get("clean_n"), ev.get("pgd_n"), (ev.get("autoattack") or {}).get("n_images")]
    return max(1, min(test, max(test if n is None else int(n) for n in counts)))


def _batch(cfg: Mapping[str, Any], job, stage: str, stage_cfg: Mapping[str, Any]
           ) -> tuple[int | None, str]:
    if stage != "evaluate":
        return int(stage_cfg["train"]["batch_size"]), f"{stage}.batch_size"
    ev, aa = cfg["evaluate"], cfg["evaluate"].get("autoattack") or {}
    sizes = {"evaluate.autoattack.batch_size": aa.get("batch_size") if aa.get("n_images") else 0}
    if job.rule != "autoattack_shard":
        sizes["evaluate.batch_size"] = ev.get("batch_size")
    if any(v is None for v in sizes.values()):
        return None, " / ".join(f for f, v in sizes.items() if v is None)
    field, size = max(sizes.items(), key=lambda kv: kv[1])
    images = _images_evaluated(cfg, job.dataset)
    if job.rule == "autoattack_shard":  # a shard job attacks its shard's images only
        images = min(images, int(aa.get("shard_size") or images))
    return min(int(size), images), field


def _probe(dataset: str, arch: str, width: float, bf16: bool) -> tuple[int, int, int]:
    """(parameters, leaf-module output bytes of one image, bytes of one input image) of the model
    built on the CPU. The forward hooks are those of benchmark.evaluation.batching's CPU figure,
    on the leaf modules only (a container's output is its last child's tensor, counted again
    otherwise), without its factors (a CPU-RAM factor paired with a 50 % share of the free memory:
    with it ImageNet's AutoAttack at batch 250 would be predicted at 150 GiB)."""
    import torch  # deferred: torch

    from benchmark.core.models import build_model  # deferred: torch

    info = get_info(dataset)
    model = build_model(arch, info, width=width).eval()
    x = torch.zeros(1, info.in_channels, info.image_size, info.image_size)
    total = 0

    def hook(_m, _a, out):
        nonlocal total
        if torch.is_tensor(out):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters()), total, x.numel() * x.element_size()


def job_memory(cfg: Mapping[str, Any], job, probes: dict | None = None) -> JobMemory | None:
    """The predicted memory of one job of the plan (a benchmark.planning.jobgraph.Job); None for a
    rule that uses no GPU."""
    if job.rule not in TRAIN_RULES and job.rule not in EVAL_RULES:
        return None
    probes = {} if probes is None else probes
    stage, stage_cfg = _stage_of(cfg, job)
    bf16 = stage != "evaluate" and bool(cfg["runtime"].get("bf16"))
    key = (job.dataset, job.arch, float(cfg["model"]["width"]), bf16)
    if key not in probes:
        probes[key] = _probe(*key)
    params, outputs, image = probes[key]
    state = STATE_BYTES[stage] + (BF16_COPY_BYTES if bf16 else 0)
    if stage == "prune" and stage_cfg.get("s2ap"):
        state += S2AP_EXTRA_BYTES
    if stage == "finetune" and stage_cfg.get("awp"):
        state += AWP_EXTRA_BYTES
    graphs = 1 if stage == "evaluate" else LOSS_GRAPHS.get(stage_cfg["train"]["loss"], 1)
    per_image = int(math.ceil(outputs * graphs * BACKWARD_FACTOR)) + INPUT_COPIES * image
    batch, field = _batch(cfg, job, stage, stage_cfg)
    return JobMemory(rule=job.rule, dataset=job.dataset, arch=job.arch, batch_size=batch,
                     counted_batch=NULL_BATCH if batch is None else batch,
                     precision="bf16" if bf16 else "fp32", parameters=params, state_bytes=state,
                     image_bytes=per_image, field=field)


def predict(cfg: Mapping[str, Any], targets: Sequence[str] = ("all",),
            search_dirs: Iterable[str | Path] = ()) -> dict[str, JobMemory]:
    """The largest job of each GPU rule in the plan of ``targets``, by rule, in plan order."""
    plan = JobGraph(cfg, search_dirs).plan(list(targets) or ["all"])
    probes: dict = {}
    seen: dict[tuple, JobMemory | None] = {}
    worst: dict[str, JobMemory] = {}
    for rule, jobs in plan.jobs.items():
        for job in jobs:
            key = (rule, job.dataset, job.arch, job.method, job.s2ap)
            if key not in seen:
                seen[key] = job_memory(cfg, job, probes)
            mem = seen[key]
            if mem is not None and (rule not in worst or mem.bytes > worst[rule].bytes):
                worst[rule] = mem
    return worst


def notes(jobs: Mapping[str, JobMemory]) -> list[str]:
    """A line for each rule whose batch size is chosen at run time."""
    return [f"{rule}: {mem.field} null, chosen from the free memory when the job starts; with k jobs "
            "on a card each sees only what the others leave (jobs that start together may each see "
            f"the whole card), so it is counted here at {NULL_BATCH} image; set it when "
            "runtime.jobs_per_gpu is above 1"
            for rule, mem in jobs.items() if mem.batch_size is None]


def largest_k(job: JobMemory, card_gib: float) -> int:
    """How many such jobs fit on a card of ``card_gib`` together (0: not even one)."""
    return int(card_gib * GIB // job.bytes)


# ---------------------------------------------------------------- the card
def parse_nvidia_smi(text: str) -> float | None:
    """The smallest card of ``nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits``
    (one MiB figure a line), in GiB; None when it lists none."""
    sizes = []
    for line in text.splitlines():
        try:
            mib = float(line.strip())
        except ValueError:
            continue  # "[N/A]" or a warning line
        if math.isfinite(mib) and mib > 0:
            sizes.append(mib / 1024)
    return min(sizes) if sizes else None


def nvidia_smi_gib(path: str | None = None, timeout: float = 30) -> float | None:
    """The smallest card nvidia-smi lists (``path``: where to look for it, default PATH); None when
    there is no nvidia-smi or it lists no card."""
    exe = shutil.which("nvidia-smi", path=path)
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else None


def known_card_gib(device_names: Iterable[str]) -> tuple[float, str] | None:
    """The smallest of the named cards KNOWN_CARDS_GIB knows: (GiB, name); None if none is known."""
    found = []
    for name in device_names:
        key = next((k for k in sorted(KNOWN_CARDS_GIB, key=len, reverse=True)
                    if k.lower() in str(name).lower()), None)
        if key is not None:
            found.append((KNOWN_CARDS_GIB[key], str(name)))
    return min(found) if found else None


def card_memory(cfg: Mapping[str, Any], *, workstation: bool,
                path: str | None = None) -> tuple[float | None, str]:
    """(GiB of one card, where the figure comes from), or (None, why it is unknown)."""
    set_gib = cfg["runtime"].get("gpu_memory_gib")
    if set_gib is not None:
        return float(set_gib), "runtime.gpu_memory_gib"
    if not workstation:
        return None, "runtime.gpu_memory_gib is not set and the cards are not on this machine"
    gib = nvidia_smi_gib(path)
    if gib is None:
        return None, "runtime.gpu_memory_gib is not set and nvidia-smi lists no card here"
    return gib, "nvidia-smi, the smallest card"


# ---------------------------------------------------------------- the check
def problem(jobs: Mapping[str, JobMemory], k: int, card_gib: float, source: str) -> str | None:
    """One line refusing ``k`` jobs per card of ``card_gib`` GiB, or None when they fit."""
    if not jobs:
        return None
    job = max(jobs.values(), key=lambda j: j.bytes)
    if k * job.bytes <= card_gib * GIB:
        return None
    fits = largest_k(job, card_gib)
    head = f"GPU memory ({PREDICTED}): rule {job.rule} ({job.describe()}) needs {gib(job.gib)} per job"
    if k > 1:
        head += f", runtime.jobs_per_gpu {k} x {gib(job.gib)} = {gib(k * job.gib)}"
    remedy = (f"at most {fits} job{'s fit' if fits > 1 else ' fits'} on it: set runtime.jobs_per_gpu: "
              f"{fits}" if fits >= 1 else f"not even one job fits: lower {job.field}")
    return (f"{head}, more than the card's {gib(card_gib)} ({source}); {remedy} "
            f"({CHECK_ENV}=off starts it anyway)")


def gib(value: float) -> str:
    """A size in GiB, to two decimals below 10 GiB (a small job's 0.54 is not 0.5)."""
    return f"{value:.2f} GiB" if value < 10 else f"{value:.1f} GiB"


def check(cfg: Mapping[str, Any], *, workstation: bool, targets: Sequence[str] = ("all",),
          search_dirs: Iterable[str | Path] = (), path: str | None = None,
          environ: Mapping[str, str] | None = None) -> tuple[str | None, list[str]]:
    """Before any job of a run on GPUs: (the refusal or None, lines to print). ``workstation``:
    the cards are on this machine (nvidia-smi may read them)."""
    env = os.environ if environ is None else environ
    if env.get(CHECK_ENV, "").strip().lower() == "off":
        return None, [f"GPU memory check: off ({CHECK_ENV}=off)"]
    card_gib, source = card_memory(cfg, workstation=workstation, path=path)
    if card_gib is None:
        return None, [f"GPU memory check skipped: {source} (set runtime.gpu_memory_gib to check that "
                      "runtime.jobs_per_gpu jobs fit on one card)"]
    k = int(cfg["runtime"].get("jobs_per_gpu") or 1)
    jobs = predict(cfg, targets, search_dirs)
    lines = notes(jobs) if k > 1 else []
    return problem(jobs, k, card_gib, source), lines


__all__ = ["CUDA_CONTEXT_GIB", "JobMemory", "card_memory", "check", "gib", "job_memory", "known_card_gib",
           "largest_k", "notes", "nvidia_smi_gib", "parse_nvidia_smi", "predict", "problem"]
