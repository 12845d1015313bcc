"""Step-time ratios, measured side by side in one run (these machines are noisy).

For one fixed model and batch, with interleaved repeats (the order of the variants rotates every
round), prints the median and spread of the time of one optimiser step for:

  dense       PGD-AT step of the dense model (every weight trains)
  hydra       HYDRA mask-search step (weights frozen, scores train, mask refreshed after the step)
  hydra+s2ap  the same with S2AP's score-space step (second pass at s + z)
  harp        HARP mask-search step (scores and layer rates, rate hinge)

and the ratios the issues set goals for:
  hydra / dense        <= 1.10     S2AP / plain method <= 1.10 (paper: about 1.15)
  harp / hydra         <= 1.05

  python speed/bench_steps.py --arch small_cnn --rounds 7
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainers  # noqa: E402

from benchmark.core.datasets import get_info  # noqa: E402
from benchmark.core.registry import method_registry  # noqa: E402


def make_trainer(variant: str, args, info, data, device):
    """A variant's trainer as its stage builds it (speed/trainers.py)."""
    cfg = trainers.train_config(info, batch=args.batch, attack_steps=args.steps, loss=args.loss,
                                lr=0.1, momentum=0.9, weight_decay=1e-4)
    return trainers.make_trainer(variant, args.arch, info, cfg, data, device, width=args.width,
                                 sparsity=args.sparsity, s2ap={"gamma": 0.02, "warmup": 0.0})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--loss", default="pgd_at")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=2, help="steps timed per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default="dense,hydra,hydra+s2ap,harp")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = get_info(args.dataset)
    x, y = trainers.random_data(args.batch, info, 0)
    data = TensorDataset(x, y)
    registered = set(method_registry().names())
    variants = [v for v in args.variants.split(",") if v == "dense" or v.split("+")[0] in registered]
    built = {v: make_trainer(v, args, info, data, device) for v in variants}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for tr in built.values():  # warm-up: allocator, kernels, first-call overheads
        tr.train_step(x, y)
    sync()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            for _ in range(args.reps):
                sync()
                t0 = time.perf_counter()
                built[v].train_step(x, y)
                sync()
                times[v].append(time.perf_counter() - t0)
    print(f"device={device} arch={args.arch} width={args.width} batch={args.batch} PGD-{args.steps} "
          f"loss={args.loss} rounds={args.rounds} reps={args.reps} threads={args.threads}")
    med = {}
    for v in variants:
        t = times[v]
        med[v] = statistics.median(t)
        print(f"  {v:12s} median {med[v] * 1e3:8.1f} ms   min {min(t) * 1e3:8.1f}   max {max(t) * 1e3:8.1f}")

    def ratio(a, b, goal):
        if a in med and b in med:
            # per-round ratios show the spread of the ratio itself
            per = [ta / tb for ta, tb in zip(times[a], times[b])]
            print(f"  {a} / {b}: {med[a] / med[b]:.3f} (per-pair median {statistics.median(per):.3f}, "
                  f"range {min(per):.3f}-{max(per):.3f}; goal <= {goal})")

    ratio("hydra", "dense", 1.10)
    ratio("hydra+s2ap", "hydra", 1.10)
    ratio("harp", "hydra", 1.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
