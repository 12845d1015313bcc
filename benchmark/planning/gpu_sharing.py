"""Several jobs per GPU (runtime.jobs_per_gpu = k): what a preset costs in card time with k jobs
on each card, and which k the measured profile recommends. A PREDICTION, not a measurement.

Measured (docs/gpu_speed.md, run 2, `speed/gpu_profile.py`, one H200, ResNet18 batch 128 PGD-10):
the training step is launch-bound, the GPU busy for only part of each step's wall time:

    precision  variant        wall ms  GPU busy ms
    bf16       dense           82.2     27.5
    bf16       hydra          121.8     31.3
    bf16       hydra+s2ap     132.6     39.2
    fp32       dense           72.8     46.3
    fp32       hydra           96.2     48.9
    fp32       hydra+s2ap     120.4     59.3
    fp32       finetune        88.4     47.2
    fp32       finetune+awp   117.9     55.1

Model: a job alone keeps the card busy a fraction b of its time; k jobs side by side interleave
their kernels until the card is saturated, so k jobs take max(1, k b) times one job's wall time
and a card does k / max(1, k b) jobs' work in one job's time. The card time of a rule's jobs is
divided by that. Each rule takes the largest b among its measured variants (the smallest gain);
a rule with no measured profile (evaluation and AutoAttack; bf16 finetuning) is counted with
b = 1, no gain. Not modelled: contention for CPU cores (k jobs need k x runtime.threads of them)
and memory bandwidth.

The card's memory: k jobs must fit on it together. benchmark/planning/gpu_memory.py predicts the
memory of each rule's largest job (from the model built on the CPU; a prediction too), and the
report prints it per rule with the largest k that fits on the estimated device's card
(runtime.gpu_memory_gib, else the calibration's card when gpu_memory.KNOWN_CARDS_GIB knows it);
the recommended k never exceeds that. The runner refuses a k that does not fit before any job
(benchmark/planning/run_guard.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core.errors import ConfigError
from benchmark.planning import calibration as _cal
from benchmark.planning import estimate as _est
from benchmark.planning import gpu_memory as _mem

# (wall ms, GPU busy ms) per (precision, variant), docs/gpu_speed.md run 2
PROFILE = {
    ("bf16", "dense"): (82.2, 27.5),
    ("bf16", "hydra"): (121.8, 31.3),
    ("bf16", "hydra+s2ap"): (132.6, 39.2),
    ("fp32", "dense"): (72.8, 46.3),
    ("fp32", "hydra"): (96.2, 48.9),
    ("fp32", "hydra+s2ap"): (120.4, 59.3),
    ("fp32", "finetune"): (88.4, 47.2),
    ("fp32", "finetune+awp"): (117.9, 55.1),
}
RULE_VARIANTS = {
    "pretrain": ("dense",),
    "prune": ("hydra", "hydra+s2ap"),
    "prune_second_seed": ("hydra", "hydra+s2ap"),
    "finetune": ("finetune", "finetune+awp"),
}
MAX_K = 8


def busy_fraction(rule: str, precision: str) -> float:
    """The measured busy fraction of a rule's steps (the largest of its variants), 1.0 if none."""
    figures = [PROFILE[(precision, v)] for v in RULE_VARIANTS.get(rule, ()) if (precision, v) in PROFILE]
    return max((busy / wall for wall, busy in figures), default=1.0)


def speedup(b: float, k: int) -> float:
    """One card's throughput with k jobs over its throughput with one."""
    if k < 1:
        raise ConfigError(f"runtime.jobs_per_gpu must be at least 1, got {k}")
    return k / max(1.0, k * b)


def card_seconds(seconds: Mapping[str, float | None], precision: str, k: int) -> float | None:
    total = 0.0
    for rule, secs in seconds.items():
        if secs is None:
            return None
        total += secs / speedup(busy_fraction(rule, precision), k)
    return total


def recommended_k(seconds: Mapping[str, float | None], precision: str, limit: int = MAX_K) -> int:
    """The smallest k up to ``limit`` (the most the card's memory holds) with the least card time
    (more jobs per card than that only add memory)."""
    costs = {k: card_seconds(seconds, precision, k) for k in range(1, max(1, min(limit, MAX_K)) + 1)}
    if any(c is None for c in costs.values()):
        return 1
    best = min(costs.values())
    return min(k for k, c in costs.items() if c <= best * (1 + 1e-9))


def report(cfg: Mapping[str, Any], targets: Sequence[str], cal: _cal.Calibration, device: str,
           k: int | None = None, search_dirs: Iterable[str | Path] = ()) -> str:
    k = int(cfg["runtime"].get("jobs_per_gpu") or 1) if k is None else int(k)
    problem = k_problem(k)
    if problem:
        raise ConfigError(problem)
    if device != "cuda":
        return ""
    est = _est.estimate(cfg, _est.plan(cfg, targets, search_dirs), cal, device)
    precision = "bf16" if cfg["runtime"].get("bf16") else "fp32"
    one = card_seconds(est.seconds, precision, 1)
    memory, fits = memory_lines(cfg, targets, est, search_dirs)
    if one is None:  # the memory needs no calibration
        return "\n".join(["", "jobs per GPU: unknown (some jobs have no calibration)", *memory]) + "\n"
    best = recommended_k(est.seconds, precision, MAX_K if fits is None else max(1, fits))
    lines = ["", f"Jobs per GPU (runtime.jobs_per_gpu), PREDICTED from the measured busy fraction "
                 f"of each stage's step ({precision}; docs/gpu_speed.md), not measured:"]
    for rule in sorted(est.seconds, key=_est._rule_order):
        b = busy_fraction(rule, precision)
        lines.append(f"  {rule:<18} " + (f"GPU busy {b:5.1%} of a step" if rule in RULE_VARIANTS
                                         else "not profiled: counted as no gain"))
    lines += memory
    for kk in sorted({1, k, best}):
        label = ", recommended" if kk == best else ""
        label += ", chosen" if kk == k and k != 1 else ""
        label += ", does not fit the card's memory" if fits is not None and kk > fits else ""
        lines.append(f"  k={kk}: {_est.human(card_seconds(est.seconds, precision, kk))} of cuda card "
                     f"time{label}")
    lines.append(f"recommended: runtime.jobs_per_gpu: {best} (needs {best} x runtime.threads CPU cores "
                 "per card" + (f"; the card's memory holds at most {fits}" if fits is not None else
                               "; the card's memory unknown, not checked") + ")")
    return "\n".join(lines) + "\n"


def memory_lines(cfg: Mapping[str, Any], targets: Sequence[str], est: _est.Estimate,
                 search_dirs: Iterable[str | Path] = ()) -> tuple[list[str], int | None]:
    """The report's lines on memory (each rule's largest job, the card, the largest k that fits)
    and that k (0: not even one job fits; None: the card's memory is unknown)."""
    jobs = _mem.predict(cfg, targets, search_dirs)
    if not jobs:
        return [], None
    lines = [f"GPU memory per job, {_mem.PREDICTED} (the model built on the CPU: parameters and "
             "their state, one image's activations x the batch, a CUDA context; "
             "benchmark/planning/gpu_memory.py):"]
    for rule in sorted(jobs, key=_est._rule_order):
        lines.append(f"  {rule:<18} {_mem.gib(jobs[rule].gib):>9} per job ({jobs[rule].describe()})")
    lines += [f"  note: {n}" for n in _mem.notes(jobs)]
    set_gib = cfg["runtime"].get("gpu_memory_gib")
    card = ((float(set_gib), "runtime.gpu_memory_gib") if set_gib is not None else
            _mem.known_card_gib(e["device_name"] for e in est.used.values() if e["device"] == "cuda"))
    if card is not None and set_gib is None:
        card = (card[0], f"{card[1]}, the card the calibration was measured on")
    if card is None:
        lines.append("  the card's memory is unknown (set runtime.gpu_memory_gib): k is not checked "
                     "against it")
        return lines, None
    largest = max(jobs.values(), key=lambda j: j.bytes)
    fits = _mem.largest_k(largest, card[0])
    lines.append(f"  card: {_mem.gib(card[0])} ({card[1]}): "
                 + (f"at most {fits} {largest.rule} job(s) fit on it together" if fits >= 1 else
                    f"not even one {largest.rule} job fits: lower {largest.field}"))
    return lines, fits


def main(preset_files: Sequence[str | Path], *, device: str | None = None,
         targets: Sequence[str] = ("all",), calibration: str | Path | None = None,
         jobs_per_gpu: int | None = None) -> str:
    """The jobs-per-GPU section ``python -m benchmark estimate`` prints after the estimate."""
    search_dirs = [Path.cwd(), Path(__file__).resolve().parent.parent]
    try:
        cfg = apcfg.validate(apcfg.load_presets(preset_files), search_dirs=search_dirs)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    cal = _cal.load(calibration)
    if device is None:
        device = (_est.auto_device(cfg, list(targets), cal, search_dirs)[0]
                  if str(cfg["runtime"]["device"]) == "auto" else _est.default_device(cfg))
    return report(cfg, list(targets), cal, device, jobs_per_gpu, search_dirs)


def k_problem(k: int) -> str | None:
    """A k the suite refuses before any job (the schema bounds it too)."""
    if k < 1:
        return f"runtime.jobs_per_gpu must be at least 1, got {k}"
    if k > MAX_K:
        return f"runtime.jobs_per_gpu {k} is more than {MAX_K} jobs on one card"
    return None


__all__ = ["busy_fraction", "card_seconds", "k_problem", "main", "memory_lines", "recommended_k", "report",
           "speedup"]
