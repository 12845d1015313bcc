"""How many CPU threads a job's torch uses: the preset's ``runtime.threads``.

A thread count is part of a CPU run's arithmetic: two threads round a training run's sums
differently from one, and the last bits grow, through a mask search's ranking and AutoAttack's
per-image decisions, into different leaderboard numbers (measured on quick: the dense model's
AutoAttack accuracy 51 % on two pretraining threads, 49 % on one; HYDRA+S2AP at 99 % 53 % against
35 %). So the count comes from the preset alone, never from how many cores the machine has or how
busy they are: the same preset gives the same numbers on an idle laptop, a loaded CI machine and
a 64-core node. Snakemake's grant (``APBENCH_THREADS``) counts only when the preset sets none.
The count used is recorded with every result (``provenance.threads``).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

THREADS_ENV = "APBENCH_THREADS"


def job_threads(runtime: dict | None, environ: dict | None = None) -> int | None:
    """The thread count for this job (None: leave torch's default)."""
    env = os.environ if environ is None else environ
    preset = (runtime or {}).get("threads")
    if preset:
        granted = env.get(THREADS_ENV)
        if granted and int(granted) != int(preset):
            log.info("using the preset's %d thread(s), not the %s granted: a thread count changes "
                     "a CPU run's numbers", int(preset), granted)
        return int(preset)
    granted = env.get(THREADS_ENV)
    return int(granted) if granted else None
