"""Measures the figures of the calibration file (benchmark/planning/calibration.py) on this machine.

For each architecture (at its dataset's input shape and the given widths), with the variants
interleaved round by round (the order rotates, so a burst of load on a shared machine hits every
variant alike) and the median over rounds taken:

  pretrain_step       a dense PGD-AT step, 10-step L-inf attack (TRADES: one more pass)
  search_step         a HYDRA mask-search step (weights frozen, scores train)
  search_step_s2ap    the same with S2AP's score-space step active
  finetune_step       a masked finetune step
  finetune_step_awp   the same with AWP active
  clean_image         one forward pass, per image (model in eval mode)
  pgd_image           PGD-50 per image, measured with --pgd-steps steps and scaled to 50
  autoattack_image    AutoAttack standard per image, on images it cannot break: the labels are
                      the model's own predictions and eps is 1e-6, so every attack spends its
                      whole budget, as on an image that stays robust (an upper bound per image).
                      Each attack runs alone at two reduced budgets (APGD-CE, APGD-T and FAB-T
                      iterations, Square queries; targets and restarts as standard); their
                      difference is the cost per iteration, the rest the attack's fixed cost, and
                      the standard budget (100 / 100 / 100 / 5,000) is extrapolated from them.

Steps are timed at the batch size of ARCHS (or --batch); the estimate scales them linearly.

On a machine that other jobs load, wall times with two threads varied several-fold between runs
(the small CNN's PGD-10 step: 1.6 s in one run, 3.8 s in the next, at a load average of 7 on 2
cores), because a descheduled OpenMP thread stalls the other. ``--threads 1 --clock cpu`` times the
process's CPU time instead, which that load does not inflate (two runs agree within a few %);
the CPU entries of the shipped file are measured that way and say ``threads: 1`` (a run with
more threads is faster than they predict).

  python speed/calibrate.py --write                            # 2 threads, wall clock
  python speed/calibrate.py --threads 1 --clock cpu --write    # on a shared, loaded machine
  python speed/calibrate.py --archs resnet18 --widths 1 --rounds 5 --device cuda --write
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
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
from benchmark.evaluation.attacks import AttackConfig, pgd_linf  # noqa: E402
from benchmark.evaluation.protocol import prepare_for_eval  # noqa: E402
from benchmark.planning import calibration as cal  # noqa: E402

# architecture -> (dataset whose shape it is measured at, batch size at width 1). Small batches
# keep a CPU run short; the estimate scales a step linearly to the preset's batch size.
ARCHS = {
    "small_cnn": ("fashion-mnist", 64),
    "resnet18": ("cifar10", 8),
    "vgg16_bn": ("cifar10", 8),
    "wrn28_4": ("cifar10", 4),
    "vit": ("cifar10", 8),
    "resnet50": ("imagenet", 1),
}
SMALL_WIDTH_BATCH = 32  # below width 0.25 every architecture is cheap: the smoke runs' batch
# calibration key -> the step variant of speed/trainers.py that measures it
STEP_VARIANT = {key: variant for variant, key in trainers.STEP_KEYS.items() if key}
VARIANTS = tuple(STEP_VARIANT)
AA_FULL = {"apgd-ce": 100, "apgd-t": 100, "fab-t": 100, "square": 5000}


def _trainer(variant: str, arch: str, info, width: float, batch: int, data, device):
    """A calibration key's step (speed/trainers.py builds it as its stage does): HYDRA's search
    for the search steps, a HYDRA mask's finetune for the finetune steps."""
    cfg = trainers.train_config(info, batch=batch, attack_steps=cal.STEP_ATTACK_STEPS, lr=0.01,
                                momentum=0.9, weight_decay=1e-4)
    return trainers.make_trainer(STEP_VARIANT[variant], arch, info, cfg, data, device, width=width,
                                 sparsity=0.9, s2ap={"gamma": 0.01, "warmup": 0.0},
                                 awp={"gamma": 0.01, "warmup_epochs": 0, "proxy_lr": 0.01})


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _timed(fn, device) -> float:
    """Seconds of ``fn`` on the chosen clock: wall time, or (``--clock cpu``, one thread on a
    shared machine) the process's CPU time, which other processes' load does not inflate."""
    _sync(device)
    t0 = _clock()
    fn()
    _sync(device)
    return _clock() - t0


def _autoattack_seconds(model, x, device, budget: int, rounds: int) -> tuple[float, float]:
    """Seconds per image of AutoAttack standard on images it cannot break. Each attack runs alone
    at ``budget`` and 3 x ``budget`` iterations (Square: queries); the difference gives the cost
    of one iteration, the rest is its fixed cost (the wrapper's checks, the clean pass), and the
    full budget is the fixed cost plus the standard number of iterations. Returns (all four
    attacks, APGD-CE alone) per image: an image APGD-CE breaks costs only the latter."""
    from pyautoattack import AutoAttack

    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every image: all are attacked

    def run(attack: str, iters: int) -> float:
        times = []
        for _ in range(rounds):
            adv = AutoAttack(model, device=str(device), eps=1e-6, norm="Linf", version="standard",
                             seed=0)
            adv.attacks_to_run = [attack]
            adv.apgd.n_iter = adv.apgd_targeted.n_iter = adv.fab.n_iter = iters
            adv.square.n_queries = iters
            times.append(_timed(lambda a=adv: a.run_standard_evaluation(x, y, batch_size=len(x)), device))
        return statistics.median(times)

    parts = {}
    for attack, full in AA_FULL.items():
        k = budget * (25 if attack == "square" else 1)  # a query costs a twentieth of an iteration
        low, high = run(attack, k), run(attack, 3 * k)
        per_iter = max(high - low, 0.0) / (2 * k)
        fixed = max(low - per_iter * k, 0.0)
        parts[attack] = fixed + per_iter * full
    return sum(parts.values()) / len(x), parts["apgd-ce"] / len(x)


def _job_start_seconds(rounds: int, dataset: str) -> float:
    """A job's start-up: a fresh interpreter importing what a stage imports and reading the
    dataset's splits when they are on disk (median of rounds), on the chosen clock (cpu: the
    child's user + system time)."""
    import resource
    import subprocess

    data = {"root": "data", "download": False, "imagenet_root": None, "train_subset": None,
            "val_size": 1000, "test_subset": None, "batch_size": 128, "num_workers": 0,
            "augment": True}
    code = ("import benchmark.training.stages, benchmark.evaluation.protocol, benchmark.evaluation.autoattack\n"
            "try:\n"
            f"    benchmark.training.stages.load_splits({dataset!r}, {data!r})\n"
            "except Exception:\n"
            "    pass  # no local copy of the dataset: the imports alone\n")
    root = str(Path(__file__).resolve().parent.parent)
    times = []
    for _ in range(max(rounds, 1)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        times.append(cpu if _clock is time.process_time else wall)
    return statistics.median(times)


def measure(arch: str, width: float, args, device) -> dict:
    dataset, batch = ARCHS[arch]
    if width < 0.25:
        batch = SMALL_WIDTH_BATCH
    batch = args.batch or batch
    info = get_info(dataset)
    x, y = trainers.random_data(batch, info, 0)
    data = TensorDataset(x, y)
    built = {v: _trainer(v, arch, info, width, batch, data, device) for v in VARIANTS}
    for tr in built.values():  # allocator, kernels, first-call overheads
        tr.train_step(x, y)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for v in order:
            times[v].append(_timed(lambda t=built[v]: t.train_step(x, y), device))
    seconds = {v: statistics.median(t) for v, t in times.items()}
    model = prepare_for_eval(built["pretrain_step"].model)
    xd = x.to(device)
    with torch.no_grad():
        model(xd)
        clean = [_timed(lambda: model(xd), device) for _ in range(args.rounds)]
    seconds["clean_image"] = statistics.median(clean) / batch
    yd = y.to(device)
    attack = AttackConfig(info.eps, args.pgd_steps, info.step_size)
    pgd = [_timed(lambda: pgd_linf(model, xd, yd, attack), device) for _ in range(args.rounds)]
    seconds["pgd_image"] = statistics.median(pgd) / batch * cal.PGD_IMAGE_STEPS / args.pgd_steps
    # at the run's own AutoAttack batch: a batch of 2 pays the attacks' fixed costs per image
    # 30 times over (small CNN: 6.3 s per image at 2 images, 2.2 s at 64)
    n_aa = min(batch, args.aa_images or batch)
    seconds["autoattack_image"], seconds["autoattack_image_apgd_ce"] = _autoattack_seconds(
        model, xd[:n_aa], device, args.aa_budget, args.aa_rounds)
    seconds["job_start"] = _job_start_seconds(args.rounds, dataset)
    return {"device": device.type,
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else cal.cpu_name()),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "arch": arch, "input_shape": [info.in_channels, info.image_size, info.image_size],
            "num_classes": info.num_classes, "width": float(width), "batch_size": batch,
            "precision": "fp32",
            "seconds": {k: float(seconds[k]) for k in cal.SECONDS + cal.OPTIONAL_SECONDS},
            "measured": datetime.date.today().isoformat(),
            "command": "python speed/calibrate.py " + " ".join(shlex.quote(a) for a in args.argv)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--widths", default="1,0.0625",
                    help="width multipliers (the estimate uses an entry of the exact width only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (median)")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size of ARCHS")
    ap.add_argument("--pgd-steps", type=int, default=5, help="PGD steps timed for pgd_image")
    ap.add_argument("--aa-images", type=int, default=None,
                    help="images AutoAttack is timed on (default: the step batch)")
    ap.add_argument("--aa-budget", type=int, default=1,
                    help="iterations each AutoAttack attack runs at (and 3x; Square: 25x as queries)")
    ap.add_argument("--aa-rounds", type=int, default=1)
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="wall time (default), or cpu: the process's CPU time with one thread, for "
                         "a machine other jobs load (wall times there vary several-fold)")
    ap.add_argument("--write", action="store_true", help="merge the entries into --out")
    ap.add_argument("--out", default=str(cal.CALIBRATION_FILE))
    args = ap.parse_args(argv)
    args.argv = argv
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        ap.error("--clock cpu measures one CPU thread: use --threads 1 --device cpu")
    global _clock
    _clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    entries = []
    for arch in args.archs.split(","):
        for width in (float(w) for w in args.widths.split(",")):
            t0 = time.perf_counter()
            entry = measure(arch, width, args, device)
            entries.append(entry)
            secs = entry["seconds"]
            print(f"{arch:10s} width {width:<7g} batch {entry['batch_size']:<4d} "
                  + " ".join(f"{k}={v:.4g}" for k, v in secs.items())
                  + f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
            if args.write:  # each entry as soon as it is measured: a long run keeps its progress
                cal.merge(args.out, [entry])
    print(json.dumps(entries, indent=1))
    if args.write:
        print(f"merged {len(entries)} entries into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
