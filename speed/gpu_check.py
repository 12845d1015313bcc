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
                          the public-style HYDRA step (speed/public_style_hydra.py), same data,
                          same loader, 24 steps of 128 synthetic CIFAR-shaped images standing for an epoch
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

The public-style HYDRA step (``PublicStyle*``, speed/public_style_hydra.py) is a re-implementation
written for this check from the behaviour docs/methods.md describes, no code copied: every masked layer computes
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

The modules, by job: this one runs the parts that fit the budget and writes the summary;
speed/gpu_check_parts.py measures (one method per part); speed/gpu_check_support.py holds the
sizes, the log and figures files, the clock, the environment, the import check and the merge;
speed/public_style_hydra.py the reference step; speed/trainers.py builds every trainer (the one
builder of the speed tools).

CPU test of the whole structure (tests/test_gpu_check.py; under a minute):
  python speed/gpu_check.py --device cpu --quick --out build/gpu_check_cpu
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# the modules beside this one, when it is loaded from elsewhere (tests/test_gpu_check.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))

# every module below imports torch inside its functions only: --check-imports first
from gpu_check_parts import Parts, make_trainer, search_model, train_cfg  # noqa: E402,F401
from gpu_check_support import (  # noqa: E402,F401
    Budget,
    Matrix,
    Report,
    Timer,
    bundle_deps,
    check_calibration,
    check_imports,
    environment,
    fragment,
    merge,
    print_environment,
    spread,
)
from public_style_hydra import PublicStyleHydra, public_style_mask, to_public_style  # noqa: E402,F401
from trainers import STEP_KEYS as VARIANTS  # noqa: E402
from trainers import margin_data, random_data, stage_training  # noqa: E402,F401

# torch-free: the calibration format, its checks and its merge are the cost estimate's own
from benchmark.planning import calibration as cal  # noqa: E402

CALIBRATION_FILE = cal.CALIBRATION_FILE
SECONDS_KEYS = cal.SECONDS
# step cost relative to the dense step: only for the budget's estimates
VARIANT_COST = {"dense": 1.0, "hydra": 1.25, "hydra+s2ap": 1.65, "harp": 1.35, "finetune": 1.1,
                "finetune+awp": 1.5}
ARCH_COST = {"resnet18": 1.0, "wrn28_4": 1.8, "vgg16_bn": 1.0}
PRECISION_COST = {"bf16": 1.0, "fp32": 2.0}
GOALS = (("hydra_step/dense_step", 1.10), ("s2ap_step/hydra_step", 1.15),
         ("our_hydra_epoch/public_style_hydra_epoch", 0.5), ("our_autoattack/bare_autoattack", 1.02))


# ---------------------------------------------------------------- the check
class Check(Parts):
    """The run: which parts fit the budget, in priority order, and what they found."""

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
