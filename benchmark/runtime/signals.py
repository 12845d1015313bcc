"""Stopping a job on request: SIGTERM (Snakemake, SLURM, ``kill``) and SIGINT (Ctrl-C).

Outside the training loop a stop signal raises ``Interrupted`` where the process is: atomic writes
then remove their temporary file (Python's default for SIGTERM would end the process without
running any ``finally``). Inside the loop, ``StopRequest`` only records the signal; the loop stops
at its next safe point, between optimiser steps and never inside a checkpoint write, and keeps the
checkpoint of the last completed epoch. A second signal stops at once, as it would without us.
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from benchmark.core.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _in_main_thread() -> bool:
    # signal.signal works only there; a Trainer driven from another thread keeps the default
    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"stopped by {signal_name(signum)} before the command finished; its output was "
                      "not written (finished shards and epoch checkpoints are kept): rerun it", signum)


def raise_on_stop_signals() -> None:
    """Make SIGTERM and SIGINT raise ``Interrupted`` (the CLI calls this once at start). A signal
    the parent set to be ignored (``nohup``, background jobs) stays ignored."""
    if not _in_main_thread():
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupted)


class StopRequest:
    """Within the block, a stop signal sets ``signum`` instead of acting; the owner polls it."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if _in_main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                # None: a handler set outside Python, which signal.signal could not restore
                if previous is not signal.SIG_IGN and previous is not None:
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # no logging here: the handler may run in the middle of a log call of the same thread
        if self.signum is None:
            self.signum = signum
            return
        # asked again: act as the signal would have without us
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
