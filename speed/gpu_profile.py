"""Where a mask-search step's time goes beyond the dense step: a torch.profiler view of the
step variants speed/gpu_check.py times (a diagnosis for issue 12's "remove the overhead the run
shows", not a goal check).

For each variant (dense PGD-AT, HYDRA search, HYDRA + S2AP by default), built exactly as
gpu_check builds it (``make_trainer``: the stages' own trainer, hooks started mid-search), the
script warms up, then profiles ``--steps`` optimiser steps and prints, per step:

  wall       the step's time (CUDA events around the profiled steps, divided by their number);
  gpu busy   the sum of kernel durations: wall minus busy is time the GPU waited for the host
             (launch-bound or synchronising code);
  launches   kernel launches (cudaLaunchKernel and friends);
  syncs      host-device synchronisations (cudaStreamSynchronize, cudaDeviceSynchronize,
             cudaEventSynchronize) and device-to-host copies (aten::item / _local_scalar_dense);

then the operators whose per-step count or self device time grew most against the dense step
(the overhead, by name), and the top operators of each variant by self device time.

    python speed/gpu_profile.py                          # cuda, resnet18, bf16 + channels_last
    python speed/gpu_profile.py --device cpu --quick     # the CPU test of the structure
Output: printed, and written to --out (default $OUT, else build/gpu_profile/) as profile.txt and
profile.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_check as gc  # noqa: E402  (puts the repository root on the path too)

LAUNCH = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNC = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
DTOH = ("aten::item", "aten::_local_scalar_dense")


def _device_us(evt) -> float:
    # torch renamed the self CUDA time to self device time; read whichever this version has
    for name in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(evt, name, None)
        if value is not None:
            return float(value)
    return 0.0


def profile_variant(tr, x, y, steps: int, warmup: int, device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        tr.train_step(x, y)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    timer = gc.Timer(device)
    with profile(activities=activities) as prof:
        wall, _ = timer(lambda: [tr.train_step(x, y) for _ in range(steps)])
    ops: dict[str, dict] = {}
    counts = defaultdict(int)
    for evt in prof.key_averages():
        ops[evt.key] = {"count": evt.count / steps, "self_device_ms": _device_us(evt) / 1e3 / steps,
                        "self_cpu_ms": evt.self_cpu_time_total / 1e3 / steps}
        for group, names in (("launches", LAUNCH), ("syncs", SYNC), ("dtoh", DTOH)):
            if evt.key in names:
                counts[group] += evt.count
    busy_ms = 0.0
    if device.type == "cuda":
        # kernels only: the device-side events whose name is not a runtime API call or an operator
        try:
            for evt in prof.events():
                if str(getattr(evt, "device_type", "")).endswith("CUDA"):
                    busy_ms += float(getattr(evt, "device_time_total", None)
                                     or getattr(evt, "cuda_time_total", 0.0)) / 1e3
            busy_ms /= steps
        except Exception as exc:  # noqa: BLE001 - a profiler API difference must not lose the rest
            print(f"  (gpu busy time not read: {type(exc).__name__}: {exc})")
            busy_ms = float("nan")
    return {"wall_ms": wall * 1e3 / steps, "gpu_busy_ms": busy_ms,
            "launches": counts["launches"] / steps, "syncs": counts["syncs"] / steps,
            "dtoh": counts["dtoh"] / steps, "ops": ops}


def report(results: dict, base: str, top: int) -> list[str]:
    lines = ["per step:  variant        wall ms   gpu busy ms   launches    syncs   item()"]
    for v, r in results.items():
        lines.append(f"           {v:13s} {r['wall_ms']:8.1f}   {r['gpu_busy_ms']:11.1f}   "
                     f"{r['launches']:8.0f}   {r['syncs']:6.1f}   {r['dtoh']:6.1f}")
    ref = results.get(base)
    for v, r in results.items():
        if v == base or ref is None:
            continue
        grown = []
        for name, o in r["ops"].items():
            b = ref["ops"].get(name, {"count": 0.0, "self_device_ms": 0.0, "self_cpu_ms": 0.0})
            grown.append((o["self_device_ms"] - b["self_device_ms"], o["count"] - b["count"],
                          o["self_cpu_ms"] - b["self_cpu_ms"], name))
        lines.append(f"\n{v} against {base}: operators by added self device time per step "
                     f"(ms, added calls, added self CPU ms)")
        for dt, dc, dcpu, name in sorted(grown, reverse=True)[:top]:
            lines.append(f"  {dt:+8.2f} ms  {dc:+7.0f} calls  {dcpu:+7.2f} cpu ms  {name}")
        lines.append(f"{v} against {base}: operators by added calls per step")
        for dt, dc, dcpu, name in sorted(grown, key=lambda g: g[1], reverse=True)[:top]:
            lines.append(f"  {dc:+7.0f} calls  {dt:+8.2f} ms  {dcpu:+7.2f} cpu ms  {name}")
    for v, r in results.items():
        lines.append(f"\n{v}: top operators by self device time per step (ms, calls)")
        ranked = sorted(r["ops"].items(), key=lambda kv: kv[1]["self_device_ms"] or kv[1]["self_cpu_ms"],
                        reverse=True)
        for name, o in ranked[:top]:
            lines.append(f"  {o['self_device_ms']:8.2f} ms  {o['count']:7.0f}  {name}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--precision", default=None, help="bf16 (cuda default) or fp32")
    ap.add_argument("--variants", default="dense,hydra,hydra+s2ap")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the CPU test of the structure")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch
    from torch.utils.data import TensorDataset

    from benchmark.core.datasets import get_info

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    ns = argparse.Namespace(quick=args.quick, rounds=None, reps=None, epoch_steps=None,
                            epoch_rounds=None, aa_images=None, aa_train_steps=None)
    m = gc.Matrix.for_args(ns)
    info = get_info("cifar10")
    x, y = gc.random_data(m.batch, info, 0)
    data = TensorDataset(x, y)
    results = {}
    head = (f"gpu_profile: {args.arch} width {m.widths[args.arch]}, batch {m.batch}, "
            f"PGD-{m.attack_steps}, {precision}, sparsity {m.sparsity}, {args.steps} profiled steps "
            f"after {args.warmup}; device {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'}, "
            f"torch {torch.__version__}")
    print(head, flush=True)
    for v in args.variants.split(","):
        tr = gc.make_trainer(v, args.arch, m.widths[args.arch], precision, info, m, data, device)
        results[v] = profile_variant(tr, x, y, args.steps, args.warmup, device)
        print(f"  {v}: {results[v]['wall_ms']:.1f} ms per step", flush=True)
        del tr
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lines = [head, ""] + report(results, args.variants.split(",")[0], args.top)
    print("\n".join(lines[1:]))
    out = (args.out or Path(os.environ.get("OUT") or gc.ROOT / "build" / "gpu_profile")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.txt").write_text("\n".join(lines) + "\n")
    (out / "profile.json").write_text(json.dumps({"head": head, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
