"""Progress lines for job logs: how far a loop is and when it will end.

Snakemake sends a job's output to a log file, where a tqdm bar is either invisible or a wall of
carriage returns; these lines are what someone tailing the log reads. Estimates use the wall time
of the work done in this process (a resumed job does not count the epochs of its predecessor).
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time

#: 1 shows tqdm bars even when stderr is not a terminal; 0 hides them on a terminal too
PROGRESS_ENV = "APBENCH_PROGRESS"
#: seconds between the in-epoch lines of a job without a terminal (default 120; 0 turns them off)
PROGRESS_INTERVAL_ENV = "APBENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 120.0


def show_bars() -> bool:
    """tqdm bars on a terminal only, unless APBENCH_PROGRESS says otherwise."""
    forced = os.environ.get(PROGRESS_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def in_epoch_interval() -> float:
    """Seconds between in-epoch progress lines; 0 when a bar already shows the progress."""
    if show_bars():
        return 0.0
    try:
        return max(float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_INTERVAL_S)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    """H:MM:SS (hours unbounded), the form ``time`` and SLURM print."""
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def clock(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """Local time of day, with the date when it is not today."""
    now = now or dt.datetime.now()
    return when.strftime("%H:%M:%S" if when.date() == now.date() else "%Y-%m-%d %H:%M")


class Eta:
    """Counts units of work (epochs, steps) done in this process and estimates the rest.

    ``done`` and ``total`` count all units, including those done before a resume; the rate uses
    only the ones timed here.
    """

    def __init__(self, total: int, done: int = 0, unit: str = "epoch", start: float | None = None) -> None:
        self.total = total
        self.start_done = done
        self.unit = unit
        self.t0 = time.perf_counter() if start is None else start  # a perf_counter() reading

    def line(self, done: int) -> str:
        """``elapsed 0:01:02, 31.00 s/epoch, remaining 0:02:04, eta 14:05:09``"""
        elapsed = time.perf_counter() - self.t0
        here = done - self.start_done
        if here <= 0:
            return f"elapsed {duration(elapsed)}"
        per = elapsed / here
        remaining = per * max(self.total - done, 0)
        finish = dt.datetime.now() + dt.timedelta(seconds=remaining)
        return (f"elapsed {duration(elapsed)}, {per:.2f} s/{self.unit}, "
                f"remaining {duration(remaining)}, eta {clock(finish)}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0
