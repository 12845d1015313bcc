"""What a preset costs before it runs: its jobs per workflow rule and their compute time.

Long because one cost model prices every rule: expected and upper AutoAttack costs, width scaling,
start-up, and the wall time over cores stage by stage belong together.

``python -m benchmark estimate --configfile presets/X.yaml [presets/smoke.yaml] [--device cuda]
[--target table_main]`` lists the jobs the workflow would run for the targets (``plan``: the
workflow's own job graph, benchmark/planning/jobgraph.py, so the counts equal a Snakemake dry
run's; tests/test_paper_presets.py and tests/test_jobgraph.py compare them) and what they cost on
the device from the calibration file (benchmark/planning/calibration.py), never from a guess: an
architecture, width, input shape or device that was not measured is reported as "no calibration
for ...".

The cost model, per job (seconds):

- training stage: epochs x steps per epoch x the calibrated step, scaled linearly from the
  calibration's batch size to the stage's, and from its PGD-AT 10-step attack to the stage's
  attack (a PGD-AT step with s attack steps is s + 1 forward/backward passes, a TRADES step
  s + 2); S2AP's score step and AWP count from the epoch their warm-up ends; plus a validation
  pass per epoch (clean + PGD at ``val_attack_steps`` on the validation slice);
- steps per epoch: the training images (the subset, else the training split less the validation
  slice) over the batch size, the last partial batch dropped as the trainer does;
- a search of a method that learns no scores: one validation pass; a stage with 0 epochs: none;
- evaluation: clean_n clean passes, pgd_n PGD images scaled from PGD-50 to the preset's steps,
  and AutoAttack on n_images: the upper bound prices every image at the calibration's figure for
  an image no attack breaks (all four attacks at full budget; a subset of the attacks counted as
  the full set); the expected cost prices ``EXPECTED_ROBUST_SHARE`` of them so and the rest at
  APGD-CE's share (an image the first attack breaks never meets the other three);
- every compute job: the calibration's ``job_start`` (a fresh process's imports and reading the
  dataset), when measured; a bookkeeping job (aggregation, tables) costs that start-up alone, in
  the wall time;
- not counted: the search diagnostics, the job scheduler's own start.

An architecture's width that was not measured is scaled from two measured widths
(benchmark/planning/calibration.py ``scale_width``). The wall time runs the jobs of each stage side by side
on ``cores // runtime.threads`` CPU slots (one per device on CUDA), a stage after the one before
it (``wall_seconds``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core.datasets import get_info
from benchmark.core.errors import ConfigError
from benchmark.core.paths import REPO_ROOT
from benchmark.planning import calibration as _cal
from benchmark.planning.jobgraph import Job, JobGraph, Plan

TRAINING_RULES = ("pretrain", "prune", "prune_second_seed", "finetune")
COMPUTE_RULES = ("import_dense", "pretrain", "prune", "prune_second_seed", "finetune", "evaluate",
                 "evaluate_dense")
BOOKKEEPING_RULES = ("seed_stability", "aggregate", "table", "figure")
# a bookkeeping job is priced at a job's start-up (its imports dominate: it trains nothing)
# The share of the evaluated images AutoAttack does not break, for the expected cost: adversarially
# trained models keep about half (our published quick run: 47-55 % for HYDRA at 90-99 % sparsity,
# the offline study 40-59 %; RobustBench's CIFAR-10 L-inf board 40-70 %). The upper bound takes 1.
EXPECTED_ROBUST_SHARE = 0.5
# the order the stages run in: a stage's jobs start once the stage before has finished
STAGE_LEVELS = (("import_dense", "pretrain"), ("prune", "prune_second_seed"), ("finetune",),
                ("evaluate", "evaluate_dense"), BOOKKEEPING_RULES)
# AutoAttack shard jobs (runtime.autoattack_shard_jobs) attack for their evaluation, whose cost
# counts every image of the AutoAttack already
COUNTED_IN_EVALUATE = ("autoattack_shard",)


# ---------------------------------------------------------------- the DAG, without Snakemake
def plan(cfg: Mapping[str, Any], targets: Sequence[str] = ("all",),
         search_dirs: Iterable[str | Path] = ()) -> Plan:
    """The jobs Snakemake runs for ``targets`` from scratch (``all`` or a table target): the
    workflow's own plan (benchmark/planning/jobgraph.py)."""
    return JobGraph(cfg, search_dirs).plan(targets)


# ---------------------------------------------------------------- what each job costs
class NoCalibration(LookupError):
    """What a job needs was never measured on the device."""


@dataclass
class Cost:
    seconds: float = 0.0
    missing: set = field(default_factory=set)
    used: dict = field(default_factory=dict)  # calibration key -> entry


def _info(dataset: str):

    return get_info(dataset)


def _entry(cal: _cal.Calibration, cost: Cost, *, device: str, dataset: str, arch: str,
           width: float, precision: str) -> dict[str, Any]:
    info = _info(dataset)
    shape = [info.in_channels, info.image_size, info.image_size]
    entry = cal.find(device=device, arch=arch, input_shape=shape, num_classes=info.num_classes,
                     width=width, precision=precision)
    if entry is None:
        what = (f"{arch} ({'x'.join(map(str, shape))}, {info.num_classes} classes, width "
                f"{width:g}, {precision}) on {device}")
        cost.missing.add(what)
        raise NoCalibration(what)
    cost.used[_cal.key(entry)] = entry
    return entry


def _passes(steps: int, loss: str, replays: int = 1) -> int:
    """Forward/backward passes of one training step (one minibatch): the attack's, then the
    loss's; free adversarial training has no attack and replays the minibatch ``replays`` times,
    one pass each."""
    if loss == "clean":
        return 1
    if loss == "free":
        return int(replays)
    return steps + (2 if loss == "trades" else 1)


def _train_images(cfg_data: Mapping[str, Any], info) -> int:
    n = info.train_size - int(cfg_data["val_size"])
    return n if cfg_data.get("train_subset") is None else min(int(cfg_data["train_subset"]), n)


def _steps_per_epoch(n: int, batch: int) -> int:
    return n // batch if n > batch else 1


def _training_seconds(stage_cfg: Mapping[str, Any], entry: Mapping[str, Any], info,
                      step_plain: str, step_plus: str | None, warm_epochs: int) -> float:
    train, data = stage_cfg["train"], stage_cfg["data"]
    epochs = int(train["epochs"])
    if epochs <= 0:
        return 0.0
    secs = entry["seconds"]
    attack_steps = int(train["attack"]["steps"])
    scale = (_passes(attack_steps, train["loss"], int(train.get("free_replays", 1)))
             / _passes(_cal.STEP_ATTACK_STEPS, "pgd_at")
             * int(train["batch_size"]) / int(entry["batch_size"]))
    steps = _steps_per_epoch(_train_images(data, info), int(train["batch_size"]))
    plain_epochs = epochs if step_plus is None else min(epochs, max(warm_epochs, 0))
    total = steps * scale * (plain_epochs * secs[step_plain]
                             + (epochs - plain_epochs) * (secs[step_plus] if step_plus else 0.0))
    return total + epochs * _validation_seconds(stage_cfg, entry)


def _validation_seconds(stage_cfg: Mapping[str, Any], entry: Mapping[str, Any]) -> float:
    n = int(stage_cfg["data"]["val_size"])
    steps = int(stage_cfg["train"]["val_attack_steps"])
    secs = entry["seconds"]
    return n * (secs["clean_image"] + secs["pgd_image"] * steps / _cal.PGD_IMAGE_STEPS)


def autoattack_image_seconds(entry: Mapping[str, Any], bound: bool) -> float:
    """AutoAttack per image: the calibration's figure (an image no attack breaks) as the upper
    bound; expected, ``EXPECTED_ROBUST_SHARE`` of the images at it and the rest at APGD-CE's share
    (the same figure when the calibration has no APGD-CE share)."""
    secs = entry["seconds"]
    full = secs["autoattack_image"]
    first = secs.get("autoattack_image_apgd_ce")
    if bound or first is None:
        return full
    return first + EXPECTED_ROBUST_SHARE * max(full - first, 0.0)


def _evaluation_seconds(cfg: Mapping[str, Any], entry: Mapping[str, Any], info,
                        bound: bool = False) -> float:
    ev, data = cfg["evaluate"], cfg["data"]
    test = info.test_size if data.get("test_subset") is None else min(int(data["test_subset"]),
                                                                       info.test_size)

    def n_of(v):
        return test if v is None else min(int(v), test)

    secs = entry["seconds"]
    total = n_of(ev["clean_n"]) * secs["clean_image"]
    total += n_of(ev["pgd_n"]) * secs["pgd_image"] * int(ev["pgd_steps"]) / _cal.PGD_IMAGE_STEPS
    aa = ev["autoattack"]
    if aa and aa.get("n_images"):
        total += n_of(aa["n_images"]) * autoattack_image_seconds(entry, bound)
    return total


def job_seconds(cfg: Mapping[str, Any], job: Job, cal: _cal.Calibration, device: str,
                cost: Cost, bound: bool = False) -> float:
    """Compute seconds of one job on ``device``, expected (``bound``: the upper bound), start-up
    included when calibrated; NoCalibration when its figures are missing."""
    if job.rule not in COMPUTE_RULES or job.rule == "import_dense":
        return 0.0
    return _stage_seconds(cfg, job, cal, device, cost, bound)


def _stage_seconds(cfg: Mapping[str, Any], job: Job, cal: _cal.Calibration, device: str,
                   cost: Cost, bound: bool) -> float:
    info = _info(job.dataset)
    bf16 = bool(cfg["runtime"].get("bf16")) and device == "cuda"
    width = float(cfg["model"]["width"])
    if job.rule in ("evaluate", "evaluate_dense"):
        # evaluation runs in float32 whatever the training precision
        entry = _entry(cal, cost, device=device, dataset=job.dataset, arch=job.arch, width=width,
                       precision="fp32")
        return _evaluation_seconds(cfg, entry, info, bound) + _start(entry)
    entry = _entry(cal, cost, device=device, dataset=job.dataset, arch=job.arch, width=width,
                   precision="bf16" if bf16 else "fp32")
    return _training_job_seconds(cfg, job, entry, info) + _start(entry)


def _start(entry: Mapping[str, Any]) -> float:
    return float(entry["seconds"].get("job_start") or 0.0)


def _training_job_seconds(cfg: Mapping[str, Any], job: Job, entry: Mapping[str, Any], info) -> float:
    traits = (job.cell or {}).get("traits") or {}
    if job.rule == "pretrain":
        stage = apcfg.stage_config(cfg, "pretrain", dataset=job.dataset, arch=job.arch,
                                   method=job.method)
        return _training_seconds(stage, entry, info, "pretrain_step", None, 0)
    stage_name = "prune" if job.rule in ("prune", "prune_second_seed") else "finetune"
    s2ap = job.s2ap
    stage = apcfg.stage_config(cfg, stage_name, dataset=job.dataset, arch=job.arch,
                               method=job.method, s2ap=s2ap, traits=traits)
    if stage_name == "prune":
        if not traits.get("learns_scores", True):
            return _validation_seconds(stage, entry)
        if stage.get("s2ap"):
            warm = int(math.floor(float(stage["s2ap"]["warmup"]) * int(stage["train"]["epochs"]) + 1e-9))
            return _training_seconds(stage, entry, info, "search_step", "search_step_s2ap", warm)
        return _training_seconds(stage, entry, info, "search_step", None, 0)
    if stage.get("awp"):
        return _training_seconds(stage, entry, info, "finetune_step", "finetune_step_awp",
                                 int(stage["awp"]["warmup_epochs"]))
    return _training_seconds(stage, entry, info, "finetune_step", None, 0)


@dataclass
class Estimate:
    counts: dict[str, int]
    seconds: dict[str, float | None]  # expected; None: some job of the rule has no calibration
    missing: set
    used: dict
    upper: dict[str, float | None] = field(default_factory=dict)  # the upper bound, likewise
    jobs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (expected, upper)


def estimate(cfg: Mapping[str, Any], plan_: Plan, cal: _cal.Calibration, device: str) -> Estimate:
    cost = Cost()
    seconds: dict[str, float | None] = {}
    upper: dict[str, float | None] = {}
    per_job: dict[str, list[tuple[float, float]]] = {}
    for rule, jobs in plan_.jobs.items():
        if rule not in COMPUTE_RULES:
            continue
        per_job[rule] = []
        complete = True
        for job in jobs:
            try:
                per_job[rule].append((job_seconds(cfg, job, cal, device, cost),
                                      job_seconds(cfg, job, cal, device, cost, bound=True)))
            except NoCalibration:
                complete = False
        seconds[rule] = sum(e for e, _ in per_job[rule]) if complete else None
        upper[rule] = sum(u for _, u in per_job[rule]) if complete else None
    start = max((float(e["seconds"].get("job_start") or 0.0) for e in cost.used.values()), default=0.0)
    for rule in BOOKKEEPING_RULES:
        if plan_.jobs.get(rule):
            per_job[rule] = [(start, start)] * len(plan_.jobs[rule])
    return Estimate(plan_.counts(), seconds, cost.missing, cost.used, upper, per_job)


def _makespan(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling of independent jobs on ``slots`` (as a job scheduler fills
    free cores; within 4/3 of the optimum)."""
    free = [0.0] * max(int(slots), 1)
    for d in sorted(durations, reverse=True):
        i = free.index(min(free))
        free[i] += d
    return max(free)


def wall_seconds(est: Estimate, slots: int, bound: bool = False) -> float | None:
    """Wall time of the jobs on ``slots`` side by side, stage after stage (STAGE_LEVELS); None
    when some job has no calibration."""
    if any(v is None for v in est.seconds.values()):
        return None
    total = 0.0
    for level in STAGE_LEVELS:
        durations = [u if bound else e for rule in level for e, u in est.jobs.get(rule, [])]
        total += _makespan(durations, slots)
    return total


def slots_of(cfg: Mapping[str, Any], device: str, cores: int | None) -> int:
    """Jobs that run side by side: on a CPU, the cores over each job's threads; one per device
    otherwise."""

    if device != "cpu":
        return 1
    cores = cores or os.cpu_count() or 1
    return max(1, int(cores) // max(int(cfg["runtime"].get("threads") or 1), 1))


# ---------------------------------------------------------------- the report
def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 3600:,.0f} h ({seconds / 86400:,.1f} days)"


def default_device(cfg: Mapping[str, Any]) -> str:
    """The preset's device; 'auto' is CUDA wherever one exists, which is where runs this size are
    planned."""
    device = str(cfg["runtime"]["device"])
    return "cpu" if device == "cpu" else "cuda"


def report(cfg: Mapping[str, Any], preset_files: Sequence[str | Path], targets: Sequence[str],
           device: str, cal: _cal.Calibration, search_dirs: Iterable[str | Path] = (),
           cores: int | None = None) -> str:
    p = plan(cfg, targets, search_dirs)
    est = estimate(cfg, p, cal, device)
    lines = [f"preset {cfg['name']} ({' + '.join(str(f) for f in preset_files)}), "
             f"target{'s' if len(targets) > 1 else ''} {', '.join(targets)}, device {device}",
             f"calibration: {_display(cal.source)}"]
    if device not in cal.devices():
        lines.append(f"no calibration for {device}: none of its figures was measured (the file "
                     f"has {', '.join(cal.devices()) or 'no device'}); job counts only")
    for entry in sorted(est.used.values(), key=lambda e: (e["arch"], e["width"])):
        lines.append(
            f"  {entry['device']} {entry['arch']} {'x'.join(map(str, entry['input_shape']))} "
            f"width {float(entry['width']):g} batch {entry['batch_size']} {entry['precision']}: "
            f"{entry['device_name']}, {entry['threads'] or '-'} thread(s), measured "
            f"{entry['measured']}"
            + (f" (scaled from widths {', '.join(f'{w:g}' for w in entry['scaled_from'])})"
               if entry.get("scaled_from") else ""))
    for what in sorted(est.missing):
        if device in cal.devices():
            lines.append(f"no calibration for {what}")
    lines += ["", f"{'rule':<20} {'jobs':>6}  compute: expected (upper bound)"]
    total: float | None = 0.0
    for rule, count in sorted(est.counts.items(), key=lambda kv: _rule_order(kv[0])):
        if rule in COMPUTE_RULES:
            secs = est.seconds.get(rule)
            if rule == "import_dense":
                text = "checksum and conversion only"
            elif secs is None:
                text = f"no calibration for {device}" if device not in cal.devices() \
                    else "incomplete: no calibration for some job"
                total = None
            else:
                text = f"{human(secs)} ({human(est.upper[rule])})"
                if total is not None:
                    total += secs
        elif rule in COUNTED_IN_EVALUATE:
            text = "counted in evaluate"
        else:
            text = "bookkeeping"
        lines.append(f"{rule:<20} {count:>6}  {text}")
    n_jobs = sum(est.counts.values())
    upper_total = sum(v for v in est.upper.values() if v is not None)
    lines.append(f"{'total':<20} {n_jobs:>6}  "
                 + (f"{human(total)} of {device} time ({human(upper_total)})" if total is not None
                    else f"unknown: no calibration for {device}" if device not in cal.devices()
                    else "unknown: some jobs have no calibration (listed above)"))
    if total is not None:
        slots = slots_of(cfg, device, cores)
        wall, wall_upper = wall_seconds(est, slots), wall_seconds(est, slots, bound=True)
        lines.append(f"{'wall time':<27} {human(wall)} expected, at most {human(wall_upper)} "
                     f"({slots} job(s) side by side"
                     + (f": {cores or 'all'} core(s) / {cfg['runtime'].get('threads') or 1} "
                        "thread(s) per job)" if device == "cpu" else ")"))
    lines += ["", "Counted: training steps from the calibration (scaled by batch size, attack "
              "steps and, between measured widths, width), a validation pass per epoch, clean/PGD/"
              "AutoAttack per image, each job's start-up (bookkeeping jobs: that alone, in the wall "
              "time). AutoAttack expected: "
              f"{EXPECTED_ROBUST_SHARE:.0%} of the images robust (all four attacks), the rest "
              "broken by APGD-CE; upper bound: every image robust. Not counted: diagnostics, the "
              "scheduler's start."]
    return "\n".join(lines) + "\n"


def _display(path: str | Path) -> str:
    """A file of the package by its place in the repository, any other as given."""
    root = REPO_ROOT
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _rule_order(rule: str) -> tuple:
    order = [*COMPUTE_RULES, *BOOKKEEPING_RULES]
    return (order.index(rule) if rule in order else len(order), rule)


def main(preset_files: Sequence[str | Path], *, device: str | None = None,
         targets: Sequence[str] = ("all",), calibration: str | Path | None = None,
         cores: int | None = None) -> str:
    """The text ``python -m benchmark estimate`` prints."""
    search_dirs = [Path.cwd(), REPO_ROOT]
    try:
        cfg = apcfg.validate(apcfg.load_presets(preset_files), search_dirs=search_dirs)
    except FileNotFoundError as exc:
        raise ConfigError(f"preset file not found: {exc.filename}") from exc
    except ValueError as exc:  # the preset's own errors name the field
        raise ConfigError(str(exc)) from exc
    cal = _cal.load(calibration)
    if device is None and str(cfg["runtime"]["device"]) == "auto":
        device, note = auto_device(cfg, list(targets), cal, search_dirs)
        return note + report(cfg, preset_files, list(targets), device, cal, search_dirs=search_dirs,
                             cores=cores)
    return report(cfg, preset_files, list(targets), device or default_device(cfg), cal,
                  search_dirs=search_dirs, cores=cores)


def auto_device(cfg: Mapping[str, Any], targets: list[str], cal: _cal.Calibration,
                search_dirs: Iterable[str | Path] = ()) -> tuple[str, str]:
    """(device, note) for a preset with runtime.device auto: CUDA, unless the calibration has
    figures for every job on the CPU and not on CUDA (a preset sized for a CPU, such as the
    offline study); the note says so."""
    search_dirs = list(search_dirs)
    p = plan(cfg, targets, search_dirs)
    cuda = estimate(cfg, p, cal, "cuda")
    if not cuda.missing:
        return "cuda", ""
    cpu = estimate(cfg, p, cal, "cpu")
    if cpu.missing:
        return "cuda", ""
    return "cpu", ("runtime.device is auto, and the calibration lacks CUDA figures for some of "
                   "these jobs but has CPU figures for all: estimated on cpu (--device cuda to "
                   "insist)\n")


__all__ = ["Estimate", "Job", "Plan", "auto_device", "estimate", "human", "job_seconds", "main", "plan", "report"]
