"""What the runner settles before it becomes Snakemake: the preset reads strictly, one run per
preset at a time, and a run far larger than planned is confirmed.

- ``read_preset(args)``: the preset files of the command line (``--configfile``; presets/quick.yaml
  without one) through the strict loader and the validation, so a bad preset is one line here
  rather than Snakemake's report of an exception in the Snakefile.
- ``acquire(results_dir, argv)``: an OS lock (``fcntl.flock``) on ``<results_dir>/.run.lock``.
  The lock belongs to the open file, which the runner hands on to Snakemake through ``exec``
  (same pid), so it is held exactly as long as the run lives: a run killed by SIGKILL or a power
  cut releases it with its process, and the next run takes it without any clean-up. A second run
  of the same preset stops at once with ``RunLocked``, whose message names the running one (pid,
  start time, command) from the lock file.
- ``memory_check(...)``: on a run whose jobs use GPUs (a workstation's ``--gpus``, a SLURM run of a
  CUDA preset), runtime.jobs_per_gpu jobs must fit on one card together, as predicted by
  ``benchmark.planning.gpu_memory``: a k (or a batch) the card cannot hold is one line here.
- ``confirm_cost(...)``: the cost estimate (``benchmark.planning.estimate``) of the run's targets on the
  device it will use; above ``CONFIRM_HOURS`` (72 h, or ``APBENCH_CONFIRM_HOURS``) the runner
  asks before starting on a terminal, and refuses without one unless ``--yes`` was given.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core.paths import REPO_ROOT
from benchmark.planning import calibration, gpu_memory, slurm_resources
from benchmark.planning import estimate as est
from benchmark.runtime.gpu_slots import count_gpus

REPO = REPO_ROOT  # the Snakefile's folder: presets/quick.yaml is its default preset
LOCK_NAME = ".run.lock"
CONFIRM_HOURS = 72.0


class RunLocked(RuntimeError):
    """Another run of this preset holds its results folder."""


class NotConfirmed(RuntimeError):
    """A run whose estimate exceeds the confirmation threshold, not confirmed."""


def preset_files(args: list[str]) -> list[Path]:
    files, i = [], 0
    while i < len(args):
        if args[i] in ("--configfile", "--configfiles"):
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                files.append(Path(args[i]))
                i += 1
            continue
        if args[i].startswith("--configfile="):
            files.append(Path(args[i].split("=", 1)[1]))
        i += 1
    return files or [REPO / "presets" / "quick.yaml"]


def read_preset(args: list[str], workdir: Path) -> dict[str, Any]:
    """The validated preset the command line names; ValueError with the preset's own message."""

    # Snakemake reads --configfile relative to where it is started, not to --directory
    files = [f if f.is_absolute() else Path.cwd() / f for f in preset_files(args)]
    return apcfg.validate(apcfg.load_presets(files), search_dirs=[workdir, REPO])


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']}, started {info['started_utc']}, command: "
                f"{' '.join(info['argv'])}")
    except (OSError, ValueError, KeyError, TypeError):
        return "its record is unreadable"


def acquire(results_dir: Path, argv: list[str]) -> int:
    """Takes the run lock of ``results_dir`` for this process and whatever it execs; returns the
    file descriptor (inheritable, to be kept open). RunLocked when a live run holds it."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(f"another run of this preset is working in {results_dir} ({_holder(path)}); "
                        "wait for it to finish, or stop it, then run this command again") from None
    record = {"pid": os.getpid(), "argv": list(argv),
              "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def _device(cfg: dict[str, Any]) -> str:
    if str(cfg["runtime"]["device"]) == "auto":
        return "cuda" if count_gpus() > 0 else "cpu"
    return est.default_device(cfg)


def uses_slurm(args: list[str]) -> bool:
    """The run submits to SLURM: the slurm profile (workflows/profiles/slurm) or its executor."""
    for i, arg in enumerate(args):
        value = None
        if arg in ("--profile", "--executor", "-e") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(("--profile=", "--executor=")):
            value = arg.split("=", 1)[1]
        if value is not None and Path(value.rstrip("/")).name == "slurm":
            return True
    return False


def memory_check(cfg: dict[str, Any], targets: list[str], workdir: Path, *, workstation_gpus: bool,
                 slurm: bool) -> tuple[str | None, list[str]]:
    """(a refusal or None, lines to print) of the GPU memory check. It applies to a run on the
    cards of this workstation (``--gpus``) and to a SLURM run of a preset that asks for GPUs; a
    preset on the CPU, or another run, gets (None, [])."""
    if str(cfg["runtime"]["device"]) == "cpu":
        return None, []
    if slurm:
        if slurm_resources.plan_device(cfg) != "cuda":
            return None, []
    elif not workstation_gpus:
        return None, []
    return gpu_memory.check(cfg, workstation=not slurm, targets=targets or ["all"],
                            search_dirs=[workdir, REPO])


def estimated_hours(cfg: dict[str, Any], targets: list[str], workdir: Path) -> float | None:
    """The estimate of the targets on the device this machine gives them; None when the
    calibration does not cover every job (nothing to warn about then)."""

    device = _device(cfg)
    plan = est.plan(cfg, targets or ["all"], [workdir, REPO])
    e = est.estimate(cfg, plan, calibration.load(None), device)
    if e.missing or any(v is None for v in e.seconds.values()):
        return None
    return sum(v for v in e.seconds.values() if v is not None) / 3600


def confirm_cost(hours: float | None, *, yes: bool, limit: float | None = None,
                 interactive: bool | None = None) -> str | None:
    """None to go on; NotConfirmed when the estimate exceeds ``limit`` hours and nobody said yes."""
    limit = float(os.environ.get("APBENCH_CONFIRM_HOURS", CONFIRM_HOURS)) if limit is None else limit
    if hours is None or hours <= limit or yes:
        return None
    text = (f"the cost estimate of this run is {hours:,.0f} h of compute on this machine, above "
            f"{limit:g} h (python -m benchmark estimate shows the details)")
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if interactive:
        answer = input(f"warning: {text}. Start it? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return None
    raise NotConfirmed(f"{text}; not started. Run with --yes to start it anyway, or shrink the "
                       "preset")
