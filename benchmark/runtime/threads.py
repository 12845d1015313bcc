"""How many CPU threads a job's torch uses: the preset's, or the cores a lone job was granted.

Snakemake passes each job the threads it granted (``APBENCH_THREADS``). A job granted more than
the preset's ``runtime.threads`` (the lone pretraining of a local run, which would otherwise leave
every other core idle) takes them only when those cores are idle: torch's threads meet at a
barrier after every operation, so on a machine where other processes hold the cores each
operation waits for a descheduled thread (a small CNN's training step went from 0.5 s on one
thread to 12 s on two, on two cores shared with six other busy processes). A busy machine gets
the preset's count, which degrades gracefully. The count used is recorded with every result
(``provenance.threads``): it changes the last bits of a CPU run, never its hash.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

THREADS_ENV = "APBENCH_THREADS"
# how long the CPU is watched before extra threads are taken
SAMPLE_S = 0.5
# cores other processes may keep busy before the extra threads are refused
SPARE_CORE_SHARE = 0.5


def busy_cores(sample_s: float = SAMPLE_S) -> float | None:
    """Cores kept busy by other processes over ``sample_s`` seconds (this one sleeps meanwhile),
    from /proc/stat; None where it cannot be read."""
    def snapshot():
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        values = [int(v) for v in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle

    try:
        total0, idle0 = snapshot()
        time.sleep(sample_s)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    ticks = total1 - total0
    if ticks <= 0:
        return None
    cpus = os.cpu_count() or 1
    return cpus * (1.0 - (idle1 - idle0) / ticks)


def job_threads(runtime: dict | None, environ: dict | None = None,
                busy: float | None | type(...) = ...) -> int | None:
    """The thread count for this job (None: leave torch's default)."""
    env = os.environ if environ is None else environ
    preset = (runtime or {}).get("threads")
    granted = env.get(THREADS_ENV) or preset
    if not granted:
        return None
    granted = int(granted)
    if preset is None or granted <= int(preset):
        return granted
    busy = busy_cores() if busy is ... else busy
    cpus = os.cpu_count() or 1
    if busy is not None and busy > max(0.0, cpus - granted) + SPARE_CORE_SHARE:
        log.info("granted %d threads, but other processes keep %.1f of %d cores busy: using the "
                 "preset's %d (threads waiting for a busy core would be slower)", granted, busy,
                 cpus, int(preset))
        return int(preset)
    log.info("using the %d threads granted (other processes keep %.1f of %d cores busy)",
             granted, busy if busy is not None else float("nan"), cpus)
    return granted
