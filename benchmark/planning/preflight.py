"""Checks that depend on the machine a run executes on, made before its first job.

``benchmark.core.config.validate`` refuses what is wrong with a preset anywhere; what is wrong only here
(the data is not on this disk, CUDA is asked for but absent, a method file does not import, a
method option its class does not know) is found by ``machine_problems``. The workflow runs it

* while the Snakefile is parsed, cheaply (no torch, no user code): its findings are warnings, so a
  dry run, or a submission from a login node without a GPU or the data, stays plannable;
* in Snakemake's ``onstart`` hook, i.e. before the first job, in full (``python -m
  benchmark.planning.preflight``, a process of its own, so the Snakemake process never imports torch or a
  method file): an error when jobs run on this machine, warnings when a cluster executor runs them
  elsewhere.

Every finding reads "field: problem; remedy".
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core import config as _config
from benchmark.core import external_dense as _external
from benchmark.core import imagenet_list
from benchmark.core import registry as _registry
from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR
from benchmark.core.errors import UserError

log = logging.getLogger(__name__)

# Where each dataset's loader (benchmark/core/datasets.py) reads its files, relative to data.root.
_DATASET_FILES = {
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3",
                                        "data_batch_4", "data_batch_5", "test_batch", "batches.meta")),
    "svhn": ("svhn", ("train_32x32.mat", "test_32x32.mat")),
    "fashion-mnist": ("FashionMNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
}


class PreflightError(RuntimeError):
    """This machine cannot run the preset's jobs; the message lists why."""


def _under(workdir: Path, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else workdir / path


def dataset_problems(cfg: Mapping[str, Any], workdir: str | Path = ".") -> list[str]:
    """Datasets of the grid whose files are neither on disk nor allowed to be downloaded."""

    workdir = Path(workdir)
    data = cfg["data"]
    root = _under(workdir, data["root"])
    problems = []
    if root.exists() and not root.is_dir():
        # a loader would try to create or read folders under it and fail mid-job
        return [f"data.root: {root} exists but is not a directory; point it at the folder that "
                "holds (or will hold) the datasets"]
    if data.get("synthetic"):
        return problems  # stand-in images, generated in each job: nothing to find on disk
    for name in cfg["grid"]["datasets"]:
        if name == "imagenet":
            base = data.get("imagenet_root")
            if not base:
                continue  # config.validate refuses this already
            missing = [s for s in ("train", "val") if not _under(workdir, base).joinpath(s).is_dir()]
            if missing:
                problems.append(
                    f"data.imagenet_root: {base} has no {' and no '.join(m + '/' for m in missing)} "
                    "folder; point it at ImageFolder-style train/ and val/ trees (ImageNet is never "
                    "downloaded)")
            elif data.get("imagenet_test", "robustbench") == "robustbench":
                problems += _robustbench_list_problems(_under(workdir, base) / "val")
            continue
        folder, files = _DATASET_FILES[name]
        if all((root / folder / f).is_file() for f in files) or data["download"]:
            continue
        looked = [root / folder]
        if name == "fashion-mnist":
            system = Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR)
            if all((system / f"{f}.gz").is_file() for f in files):
                continue
            looked.append(system)
            remedy = ("install the Debian package dataset-fashion-mnist (apt-get install "
                      "dataset-fashion-mnist), or set data.download: true on a machine with internet")
        else:
            remedy = (f"place {', '.join(files)} under {root / folder}, or set data.download: true "
                      "on a machine with internet")
        problems.append(f"data.root: {name} is not on this machine (looked in "
                        f"{', '.join(map(str, looked))}); {remedy}")
    return problems


def _robustbench_list_problems(val: Path) -> list[str]:
    """RobustBench's 5,000 test images must all be in val/ (benchmark/core/imagenet_list.py)."""

    try:
        missing = imagenet_list.first_missing(val)
    except UserError as exc:
        return [f"data.imagenet_test: {exc}"]
    if missing is None:
        return []
    return [f"data.imagenet_root: {missing} is missing (the first of RobustBench's 5,000 test "
            "images val/ lacks); val/ must hold every image of the list, in class folders"]


def _visible_nvidia_gpus() -> int:
    """GPUs the NVIDIA driver shows, without torch or a CUDA context (a cheap first look)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")]
        count = min(count, len(ids))
    return count


def device_problem(cfg: Mapping[str, Any], *, use_torch: bool) -> str | None:
    """runtime.device asks for an accelerator this machine does not have."""
    device = cfg["runtime"]["device"]
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if use_torch:
            import torch  # deferred: torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        else:
            count = _visible_nvidia_gpus()
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            return (f"runtime.device: {device!r}, but this machine has {have}; use auto (CUDA when "
                    "present, else the CPU) or cpu")
    elif device == "mps":
        if use_torch:
            import torch  # deferred: torch

            ok = torch.backends.mps.is_available()
        else:
            ok = sys.platform == "darwin"
        if not ok:
            return "runtime.device: 'mps', but MPS is not available here; use auto or cpu"
    return None


def method_problems(cfg: Mapping[str, Any], registry: _registry.MethodRegistry,
                    method_files: list[str]) -> list[str]:
    """Each grid method's class imports, meets its declaration, and knows the options it gets.
    This imports torch and the method files: only for the full check, in a process of its own."""
    problems = []
    for method in cfg["grid"]["methods"]:
        decl = registry.decls[method]
        field = (f"method_files[{method_files.index(decl.file)}]" if decl.file in method_files
                 else "grid.methods")
        try:
            cls = registry.get(method)
        except _registry.MethodContractError as exc:
            problems.append(f"{field}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported, not raised
            problems.append(f"{field}: method {method!r} ({decl.where}) does not import: "
                            f"{type(exc).__name__}: {exc}")
            continue
        options = ((cfg.get("methods") or {}).get(method) or {}).get("options") or {}
        problems += [f"methods.{method}.options: {p}" for p in cls.option_problems(options)]
    return problems


def machine_problems(cfg: Mapping[str, Any], search_dirs: Iterable[str | Path] = (), *,
                     deep: bool, workdir: str | Path = ".") -> list[str]:
    """Every finding for a validated preset on this machine. ``deep`` imports torch and the method
    files (CUDA as torch sees it, the method classes and their options); without it the check is
    torch-free and runs no user code."""
    search_dirs = list(search_dirs)
    problems = dataset_problems(cfg, workdir)
    problems += _external.missing_problems(cfg, [workdir, *search_dirs])
    problem = device_problem(cfg, use_torch=deep)
    if problem:
        problems.append(problem)
    if deep:
        files = _config.resolve_method_files(cfg.get("method_files") or [], search_dirs)
        problems += method_problems(cfg, _registry.method_registry(files), files)
    return problems


# ---------------------------------------------------------------------------------- the workflow's use
def before_first_job(cfg: Mapping[str, Any], search_dirs: Iterable[str | Path], *, enforce: bool,
                     python: str = sys.executable, pythonpath: str | Path | None = None) -> list[str]:
    """The full check in a process of its own (torch and method files stay out of the caller).
    Raises PreflightError when ``enforce`` (jobs run on this machine), else returns the findings
    for the caller to show as warnings."""
    cmd = [python, "-m", "benchmark.planning.preflight", "--deep"]
    for d in search_dirs:
        cmd += ["--search-dir", str(d)]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, input=json.dumps(cfg), capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):
        raise PreflightError(f"the machine check itself failed ({' '.join(cmd)}):\n{proc.stderr}")
    problems = [line for line in proc.stdout.splitlines() if line.strip()]
    if problems and enforce:
        raise PreflightError("this machine cannot run the preset; no job was started:\n"
                             + "\n".join(f"  {p}" for p in problems))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.planning.preflight",
        description="Check a validated preset (JSON on stdin) against this machine: one finding "
                    "per line on stdout, exit status 1 when there is any.")
    parser.add_argument("--search-dir", action="append", default=[],
                        help="where relative method files are looked up (in order)")
    parser.add_argument("--deep", action="store_true",
                        help="also import torch and the grid's method classes")
    args = parser.parse_args(argv)
    cfg = json.load(sys.stdin)
    problems = machine_problems(cfg, args.search_dir, deep=args.deep)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
