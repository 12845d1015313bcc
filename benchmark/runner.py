"""Run Snakemake so that a killed run resumes with the same command, without `snakemake --unlock`.

    python -m benchmark.runner --profile workflows/profiles/local --cores all --configfile presets/quick.yaml
    python -m benchmark.runner --profile workflows/profiles/local-gpu --gpus auto --configfile ...

Every argument goes to Snakemake unchanged, except ``--gpus auto|N`` (a multi-GPU workstation:
it becomes ``--resources gpu=N``, N counted by nvidia-smi for auto). On a run on GPUs (``--gpus``,
or the slurm profile) the runner first checks that runtime.jobs_per_gpu jobs fit in one card's
memory (benchmark/planning/run_guard.py, ``memory_check``). A Snakemake killed hard (SIGKILL, a power cut, the
OOM killer) leaves its lock in ``.snakemake/locks/`` and the next run refuses to start until
someone runs ``--unlock``; but unlocking blindly would let two runs write the same files. So this
runner records which process holds the lock (``.snakemake/apbench_run.json``: its pid and start
time, which tell a live process from a reused pid) and, before starting, clears a lock only when
no recorded process is alive and no other Snakemake process works in the same directory. Then it
replaces itself with Snakemake (same pid, so the record names the process holding the lock).
Half-written outputs of the killed jobs are redone by Snakemake itself (``rerun-incomplete`` in
the profiles), and each training job resumes from its last per-epoch checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from benchmark.core import strict_yaml
from benchmark.planning import run_guard
from benchmark.runtime.gpu_slots import count_gpus

log = logging.getLogger(__name__)

RECORD = "apbench_run.json"


class LiveRunError(RuntimeError):
    """Another Snakemake run works in this directory; its lock is not stale."""


def workdir_of(args: list[str]) -> Path:
    """Snakemake's working directory for these arguments (--directory / -d, else here)."""
    for i, arg in enumerate(args):
        if arg in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1]).resolve()
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1]).resolve()
    return Path.cwd().resolve()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), so a reused pid is not taken for the old one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing ")"
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recorded_holder(snakemake_dir: Path) -> int | None:
    """The pid of the recorded run when that very process still runs."""
    try:
        record = json.loads((snakemake_dir / RECORD).read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid() or not _alive(pid):
        return None
    started = record.get("start_time")
    if started is not None and _start_time(pid) not in (None, started):
        return None  # the pid now belongs to another process
    return pid


def _other_snakemakes_in(workdir: Path) -> list[int]:
    """Live Snakemake processes (other than this one) working in ``workdir`` (Linux /proc)."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd")).resolve()
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if not any(Path(a).name == "snakemake" or a == "snakemake" for a in args):
            continue
        if workdir_of_process(args, cwd) == workdir:
            found.append(int(entry.name))
    return found


def workdir_of_process(args: list[str], cwd: Path) -> Path:
    for i, arg in enumerate(args):
        value = None
        if arg in ("--directory", "-d") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--directory="):
            value = arg.split("=", 1)[1]
        if value is not None:
            path = Path(value)
            return (path if path.is_absolute() else cwd / path).resolve()
    return cwd


def clear_stale_lock(workdir: Path) -> bool:
    """Remove Snakemake's lock in ``workdir`` if the run that took it is gone; True if removed.
    Raises LiveRunError when a run is alive (its lock stays)."""
    snakemake_dir = workdir / ".snakemake"
    locks = snakemake_dir / "locks"
    lock_files = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not lock_files:
        return False
    holder = _recorded_holder(snakemake_dir)
    others = _other_snakemakes_in(workdir)
    if holder is not None or others:
        pid = holder if holder is not None else others[0]
        raise LiveRunError(f"another Snakemake run (pid {pid}) is working in {workdir}; wait for it "
                           "to finish or stop it, then run this command again")
    if not Path("/proc").is_dir() and not (snakemake_dir / RECORD).is_file():
        # without /proc and without a record nothing tells a stale lock from a live one
        raise LiveRunError(f"{locks} holds a lock and no record says which run took it; if no "
                           "Snakemake runs in this directory, run `snakemake --unlock` once")
    for lock in lock_files:
        lock.unlink(missing_ok=True)
    log.warning("removed the stale lock of a Snakemake run that is no longer alive (%s)", locks)
    return True


def record_run(workdir: Path) -> None:
    """Name this process (about to become Snakemake) as the holder of the directory's lock."""
    snakemake_dir = workdir / ".snakemake"
    snakemake_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "start_time": _start_time(os.getpid()), "argv": sys.argv}
    tmp = snakemake_dir / f".{RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, snakemake_dir / RECORD)


def jobs_per_gpu_of(args: list[str]) -> int:
    """runtime.jobs_per_gpu of the run's preset files (the last one that sets it), else 1."""

    k = 1
    for path in run_guard.preset_files(args):
        try:
            raw = strict_yaml.load_file(path) or {}
        except (OSError, ValueError):
            raw = {}  # Snakemake reports the file itself
        value = (raw.get("runtime") or {}).get("jobs_per_gpu") if isinstance(raw, dict) else None
        k = int(value) if isinstance(value, int) and value >= 1 else k
    return k


def gpu_arguments(args: list[str], environ: dict | None = None, jobs_per_gpu: int = 1) -> list[str]:
    """``--gpus auto|N`` (ours, not Snakemake's) becomes ``--resources gpu=N x k``: with the
    local-gpu profile every job that trains or attacks then takes one of the k slots of a card
    (runtime.jobs_per_gpu k; 1: a card of its own)."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg == "--gpus" and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--gpus="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        n = count_gpus(environ) if value == "auto" else int(value)
        if n < 1:
            raise ValueError("--gpus auto found no GPU (nvidia-smi -L lists none, or "
                             "CUDA_VISIBLE_DEVICES is empty); run with --profile "
                             "workflows/profiles/local instead")
        out += ["--resources", f"gpu={n * jobs_per_gpu}"]
        log.info("%d GPU(s): at most %d jobs at a time train or attack, %d per card", n,
                 n * jobs_per_gpu, jobs_per_gpu)
    return out


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def targets_first(args: list[str]) -> list[str]:
    """Snakemake's --configfile takes every word after it, so ``--configfile p.yaml table_main``
    would read the target as a second config file. Words after --configfile that are not config
    files (by suffix) are targets: they move to the front, where Snakemake reads targets."""
    out, targets, i = [], [], 0
    while i < len(args):
        a = args[i]
        out.append(a)
        i += 1
        if a in ("--configfile", "--configfiles"):
            while i < len(args) and not args[i].startswith("-"):
                (out if args[i].endswith(CONFIG_SUFFIXES) else targets).append(args[i])
                i += 1
    return targets + out


def main(argv: list[str] | None = None) -> int:
    args = targets_first(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if any(a in ("-h", "--help", "--version") for a in args):  # Snakemake's own answer, no run
        os.execv(sys.executable, [sys.executable, "-m", "snakemake", *args])
    workstation_gpus = any(a == "--gpus" or a.startswith("--gpus=") for a in args)
    try:
        args = gpu_arguments(args, jobs_per_gpu=jobs_per_gpu_of(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    yes = "--yes" in args  # ours: confirms a run whose cost estimate is far above the machine's
    args = [a for a in args if a != "--yes"]
    workdir = workdir_of(args)
    dry = any(a in ("-n", "--dry-run", "--unlock") for a in args)
    try:
        cfg = run_guard.read_preset(args, workdir)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    targets = [a for a in args[:next((i for i, a in enumerate(args) if a.startswith("-")),
                                     len(args))]]
    if "--unlock" not in args:
        # k jobs of the preset on one card (runtime.jobs_per_gpu): refused here when they cannot fit
        try:
            refusal, lines = run_guard.memory_check(cfg, targets, workdir,
                                                    workstation_gpus=workstation_gpus,
                                                    slurm=run_guard.uses_slurm(args))
        except (ValueError, KeyError, OSError, RuntimeError) as exc:
            refusal, lines = None, [f"GPU memory check skipped: no prediction ({exc})"]
        for line in lines:
            log.info(line)
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 2
    if not dry:
        try:
            # held through exec by Snakemake itself: released when the run's process ends
            run_guard.acquire(workdir / "results" / cfg["name"], [sys.executable, "-m",
                                                                  "benchmark.runner", *args])
            try:
                hours = run_guard.estimated_hours(cfg, targets, workdir)
            except (ValueError, KeyError, OSError):
                hours = None  # no estimate: nothing to confirm
            run_guard.confirm_cost(hours, yes=yes)
        except (run_guard.RunLocked, run_guard.NotConfirmed, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    try:
        clear_stale_lock(workdir)
    except LiveRunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if "-n" not in args and "--dry-run" not in args and "--unlock" not in args:
        record_run(workdir)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "snakemake", *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
