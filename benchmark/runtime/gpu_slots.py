"""One GPU per job on a multi-GPU workstation: each job claims a free card and sees only that one.

Snakemake's local executor counts GPUs (``--resources gpu=N`` with ``gpu=1`` per training or
attacking job) but does not say which card a job gets. A job started with ``APBENCH_GPU_SLOTS=N``
in its environment (the workflow adds it when the run has ``--resources gpu=N``) claims one of the
N cards before anything touches CUDA: it takes an exclusive ``flock`` on the card's lock file,
keeps the file open for the life of the process, and sets ``CUDA_VISIBLE_DEVICES`` to that card,
so the job's ``cuda`` is the claimed card and no other. The kernel drops the lock when the process
ends, however it ends (a crash or a kill frees the card; no stale lock survives), so two jobs never
share a card and a card is never lost. With CUDA_VISIBLE_DEVICES already set (say "2,5,7"), the
slots are those cards, in that order.

With ``APBENCH_JOBS_PER_GPU=k`` (runtime.jobs_per_gpu; the workflow adds it) each card has k slots,
so k jobs share it: a launch-bound training step leaves most of a card idle (docs/gpu_speed.md).
Jobs fill the first slot of every card before the second of any, so k jobs spread over k cards
when they can.

Lock files live in ``APBENCH_GPU_LOCK_DIR`` or ``<tmp>/apbench-gpu-slots-<uid>``: one directory per
user and machine, so two runs on one box also never put two jobs on one card (a job waits for a
free card instead). Torch-free: the claim happens before torch is imported.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from benchmark.core.errors import ConfigError

log = logging.getLogger(__name__)

SLOTS_ENV = "APBENCH_GPU_SLOTS"
PER_GPU_ENV = "APBENCH_JOBS_PER_GPU"
LOCK_DIR_ENV = "APBENCH_GPU_LOCK_DIR"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
POLL_S = 0.5

_held: tuple[str, IO] | None = None


def lock_dir() -> Path:
    explicit = os.environ.get(LOCK_DIR_ENV)
    if explicit:
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"apbench-gpu-slots-{os.getuid()}"


def devices(n_slots: int, visible: str | None = None) -> list[str]:
    """The cards behind the slots: the first n of CUDA_VISIBLE_DEVICES when it is set, else 0..n-1."""
    if n_slots < 1:
        raise ConfigError(f"{SLOTS_ENV} must be a positive number of GPUs, got {n_slots}")
    if visible is None:
        return [str(i) for i in range(n_slots)]
    listed = [d.strip() for d in visible.split(",") if d.strip()]
    if len(listed) < n_slots:
        raise ConfigError(f"{n_slots} GPU slots asked ({SLOTS_ENV} / --resources gpu={n_slots}) but "
                          f"{VISIBLE_ENV} lists only {len(listed)} card(s) ({visible!r}): ask for "
                          f"--resources gpu={len(listed)}")
    return listed[:n_slots]


def slot_files(cards: list[str], jobs_per_gpu: int = 1) -> list[tuple[str, str]]:
    """(card, lock file name) of every slot, first slots of all cards first. A card's first slot
    is gpu<card>.lock whatever k is, so a one-per-card run and a k-per-card run on one machine
    never put more than k jobs on a card."""
    if jobs_per_gpu < 1:
        raise ConfigError(f"{PER_GPU_ENV} (runtime.jobs_per_gpu) must be at least 1, got {jobs_per_gpu}")
    return [(card, f"gpu{card}.lock" if j == 0 else f"gpu{card}.{j}.lock")
            for j in range(jobs_per_gpu) for card in cards]


def claim(n_slots: int, *, directory: Path | None = None, visible: str | None = None,
          timeout: float | None = None, jobs_per_gpu: int = 1) -> tuple[str, IO]:
    """Blocks until one of the cards has a free slot (``jobs_per_gpu`` per card); returns (card,
    open lock file). The slot stays claimed while the file is open (close it, or end the process,
    to free it)."""
    cards = devices(n_slots, visible)
    slots = slot_files(cards, jobs_per_gpu)
    directory = lock_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start, waited = time.monotonic(), False
    while True:
        for card, name in slots:
            fh = open(directory / name, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            return card, fh
        if not waited:
            log.info("all %d GPU slot(s) are busy (%s); waiting for a free card", len(slots), directory)
            waited = True
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"no free GPU among {cards} after {timeout:.0f} s ({directory})")
        time.sleep(POLL_S)


def claim_from_env(environ: dict | None = None) -> str | None:
    """In a job started with APBENCH_GPU_SLOTS=N: claims a card for this process (once) and points
    CUDA_VISIBLE_DEVICES at it. Returns the card, or None when the variable is not set."""
    global _held
    env = os.environ if environ is None else environ
    raw = env.get(SLOTS_ENV, "").strip()
    if not raw:
        return None
    if _held is not None:
        return _held[0]
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{SLOTS_ENV} must be a number of GPUs, got {raw!r}") from None
    raw_k = env.get(PER_GPU_ENV, "").strip() or "1"
    try:
        k = int(raw_k)
    except ValueError:
        raise ConfigError(f"{PER_GPU_ENV} must be a number of jobs, got {raw_k!r}") from None
    card, fh = claim(n, visible=env.get(VISIBLE_ENV), jobs_per_gpu=k)
    _held = (card, fh)
    env[VISIBLE_ENV] = card
    log.info("GPU slot: card %s of %d (%s=%s)", card, n, VISIBLE_ENV, card)
    return card


def count_gpus(environ: dict | None = None) -> int:
    """Cards this machine offers: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L` (no torch
    import: the runner starts Snakemake, not CUDA)."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])

    if shutil.which("nvidia-smi") is None:
        return 0
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("GPU ")) if proc.returncode == 0 else 0
