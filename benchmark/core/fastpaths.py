"""The switch between the suite's fast code paths and the reference ones they replace.

Every speed-up that reroutes arithmetic through another kernel (channels-last max pooling on the
CPU, ...) must give bit-for-bit the numbers of the plain PyTorch path it replaces. The reference
path stays in the code behind this switch, so that a test can run one model both ways in one
process and compare every weight, flag and accuracy, and the speed scripts can time old against
new side by side. ``APBENCH_REFERENCE_PATHS=1`` selects the reference paths for a whole run.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

REFERENCE_ENV = "APBENCH_REFERENCE_PATHS"

_reference = os.environ.get(REFERENCE_ENV, "") not in ("", "0")


def fast() -> bool:
    """True unless the reference paths are selected."""
    return not _reference


@contextlib.contextmanager
def reference_paths(enabled: bool = True) -> Iterator[None]:
    """Runs the block on the reference paths (``enabled=False``: on the fast ones)."""
    global _reference
    old = _reference
    _reference = enabled
    try:
        yield
    finally:
        _reference = old
