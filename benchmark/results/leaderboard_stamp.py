"""The stamp an aggregation leaves beside its leaderboard: how to make the leaderboard again.

``python -m benchmark aggregate`` writes ``leaderboard.csv``, ``leaderboard.md`` (and its other
tables and plots) atomically, and then, last, ``leaderboard.stamp.json``::

  {"format": "apbench-leaderboard-stamp", "version": 1,
   "argv": [...the aggregate command's arguments...], "cwd": "/abs/dir/it/ran/in",
   "inputs": {"results/quick/runs/.../seed0.json": "<sha256>", ...},
   "outputs": {"leaderboard.csv": "<sha256>", "leaderboard.md": "<sha256>"},
   "time_utc": "..."}

Two uses:

- Snakemake declares the stamp, not the leaderboard, as the aggregate rule's output. Snakemake
  deletes a job's declared outputs before it runs it; with the stamp as the only one, an
  aggregation that fails (a result file breaks a rule) leaves the previous leaderboard in place,
  and the missing stamp makes the next run try again.
- ``python -m benchmark publish`` re-runs the recorded command into a scratch folder and compares
  the tables, and checks the inputs are still the files that were aggregated (benchmark.publishing.publish).
Torch-free.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.core.errors import CorruptFileError, MissingFileError
from benchmark.core.io import atomic_write_json, sha256_file
from benchmark.core import safe_json

STAMP_NAME = "leaderboard.stamp.json"
STAMP_FORMAT = "apbench-leaderboard-stamp"
STAMP_VERSION = 1
STAMPED_OUTPUTS = ("leaderboard.csv", "leaderboard.md")


def write_stamp(out_dir: str | Path, *, argv: Iterable[str], cwd: str | Path,
                inputs: Iterable[str | Path]) -> Path:
    """Writes the stamp of a finished aggregation into ``out_dir`` (after its tables)."""
    out_dir = Path(out_dir)
    stamp = {
        "format": STAMP_FORMAT, "version": STAMP_VERSION,
        "argv": [str(a) for a in argv], "cwd": str(Path(cwd).resolve()),
        "inputs": {str(p): sha256_file(p) for p in inputs},
        "outputs": {name: sha256_file(out_dir / name) for name in STAMPED_OUTPUTS
                    if (out_dir / name).is_file()},
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic_write_json(out_dir / STAMP_NAME, stamp)


def read_stamp(out_dir: str | Path) -> dict[str, Any]:
    """The stamp in ``out_dir``; MissingFileError / CorruptFileError naming it otherwise."""
    path = Path(out_dir) / STAMP_NAME
    if not path.is_file():
        raise MissingFileError(
            f"{path} not found: the leaderboard in {out_dir} was not made by a finished "
            "aggregation (run the workflow, or `python -m benchmark aggregate`)")
    try:
        stamp = safe_json.read_json_file(path)
    except safe_json.JSONFileError as exc:
        raise CorruptFileError(str(exc)) from None
    if not isinstance(stamp, dict) or stamp.get("format") != STAMP_FORMAT \
            or not isinstance(stamp.get("argv"), list) or not isinstance(stamp.get("inputs"), dict):
        raise CorruptFileError(f"{path} is not a leaderboard stamp ({STAMP_FORMAT!r}); rerun the "
                               "aggregation")
    return stamp


__all__ = ["STAMP_NAME", "STAMP_FORMAT", "STAMPED_OUTPUTS", "write_stamp", "read_stamp"]
