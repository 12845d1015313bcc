"""What speed/gpu_check.py runs on besides the measurements: the sizes of its parts (``Matrix``),
its log and figures files (``Report``), its clock and budget, the environment it records, the
import check and bundling of what a GPU machine lacks, and the merge of its calibration fragment.
torch is imported inside functions: --check-imports, --bundle-deps and --merge run (and report)
on a machine without it."""
from __future__ import annotations

import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# torch-free: the calibration format, its checks and its merge are the cost estimate's own
from benchmark.planning import calibration as cal  # noqa: E402

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


