"""Published reference numbers, and how one of our cells finds its counterpart among them.

The reference the paper tables show is the AP benchmark's leaderboard (Piras et al. 2024, arXiv
2409.01249, pralab/AdversarialPruningBenchmark), shipped with the package as
``reference_data/ap_benchmark_leaderboard.csv`` (``AP_BENCHMARK_CSV``; its citation is in its
header). A preset can name another file of the same format in ``reference_csv``.

A reference CSV holds one row per published cell: ``dataset, structure, method, arch, sparsity,
clean, autoattack`` and the protocol it was measured under, ``eps, n_images,
autoattack_version``. Leading ``#`` lines are its source note. A file without the protocol
columns is read as measured under the AP benchmark's protocol (``AP_BENCHMARK_PROTOCOL``), and its
note says so.

A cell of ours is compared with a reference row only when every key agrees: dataset,
architecture, method (ours mapped to the reference's spelling by ``METHOD_NAMES``, the one table
of that mapping), structure (a structured result is never matched to an unstructured cell), nominal
sparsity, eps and the number of AutoAttack images. The published numbers are the original
methods', so only our S2AP-off cells (or ``n/a`` for a method that learns no scores) have
counterparts. Every other case is a ``Match`` with status ``no-counterpart`` and the reason.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.core.errors import CorruptFileError
from benchmark.core.paths import PACKAGE_DIR

if TYPE_CHECKING:  # pandas is imported when a reference is read: the Snakefile only names the file
    import pandas as pd

REFERENCE_LABEL = "reference (AP benchmark)"
AP_BENCHMARK_CSV = PACKAGE_DIR / "reference_data" / "ap_benchmark_leaderboard.csv"
#: what every cell of the AP benchmark was measured with
AP_BENCHMARK_PROTOCOL: dict[str, Any] = {"eps": 0.031, "n_images": 10000,
                                         "autoattack_version": "standard"}

#: our method name -> the reference's spelling. A method of ours that is missing here has no
#: counterpart; a name here that the reference file lacks (LAMP, LWM, Random in the AP benchmark)
#: has none either, and the table says so cell by cell.
METHOD_NAMES: dict[str, str] = {
    "hydra": "HYDRA",
    "harp": "HARP",
    "rst": "RST",
    "lamp": "LAMP",
    "lwm": "LWM",
    "random": "Random",
}
#: the grid values whose numbers the published ones describe: the method as published
ORIGINAL_S2AP = ("off", "n/a")

_REQUIRED = ("dataset", "structure", "method", "arch", "sparsity", "clean", "autoattack")
_PROTOCOL_COLUMNS = ("eps", "n_images", "autoattack_version")
MATCHED = "matched"
NO_COUNTERPART = "no-counterpart"


class ReferenceFileError(CorruptFileError):
    """A reference CSV this module cannot read; the message names the file and the column."""


@dataclass(frozen=True)
class Match:
    """The reference cell of one of ours: ``status`` is MATCHED (``clean`` and ``autoattack`` in
    %) or NO_COUNTERPART (``detail`` says why)."""

    status: str
    clean: float | None = None
    autoattack: float | None = None
    detail: str = ""

    @property
    def matched(self) -> bool:
        return self.status == MATCHED


def _note(path: Path) -> str:
    """The source note: the leading '#' lines up to the first empty one (the citation; what
    follows describes the columns)."""
    lines = []
    with open(path) as fh:
        for line in fh:
            text = line.lstrip("#").strip()
            if not line.startswith("#") or not text:
                break
            lines.append(text)
    return " ".join(lines)


def load_reference(reference_csv: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """(the reference rows with normalised keys, its source note). None reads the AP benchmark
    shipped with the package."""
    import pandas as pd  # deferred: pandas

    path = Path(reference_csv) if reference_csv is not None else AP_BENCHMARK_CSV
    try:
        note = _note(path)
        ref = pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ReferenceFileError(f"reference CSV {path} cannot be read: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in ref.columns]
    if missing:
        raise ReferenceFileError(f"reference CSV {path} lacks the column(s) {missing}; it needs "
                                 f"{', '.join(_REQUIRED)} (and {', '.join(_PROTOCOL_COLUMNS)})")
    absent = [c for c in _PROTOCOL_COLUMNS if c not in ref.columns]
    for col in absent:
        ref[col] = AP_BENCHMARK_PROTOCOL[col]
    if absent:
        note += (f" (no {', '.join(absent)} column: read as the AP benchmark's protocol, eps "
                 f"{AP_BENCHMARK_PROTOCOL['eps']}, {AP_BENCHMARK_PROTOCOL['n_images']:,} images, "
                 f"AutoAttack {AP_BENCHMARK_PROTOCOL['autoattack_version']})")
    try:
        for col in ("sparsity", "clean", "autoattack", "eps"):
            ref[col] = ref[col].astype(float)
        ref["n_images"] = ref["n_images"].astype(int)
    except (TypeError, ValueError) as exc:
        raise ReferenceFileError(f"reference CSV {path}: a number column holds a non-number "
                                 f"({exc})") from exc
    for col in ("dataset", "structure", "method", "arch", "autoattack_version"):
        ref[f"_{col}"] = ref[col].astype(str).str.strip().str.lower()
    return ref, note or f"source: {path.name}"


def reference_method(method: str) -> str | None:
    """The reference's spelling of one of our methods, None when the mapping has none."""
    return METHOD_NAMES.get(method)


def _fmt(value: float) -> str:
    return f"{value:g}"


def match(ref: pd.DataFrame, *, dataset: str, arch: str, method: str, s2ap: str, structure: str,
          sparsity: float, eps: float | None, n_images: int | None) -> Match:
    """The reference cell of one cell of ours, matched on every key (module docstring)."""
    if method == "dense":
        return Match(NO_COUNTERPART, detail="the dense model has no pruning counterpart")
    if s2ap not in ORIGINAL_S2AP:
        return Match(NO_COUNTERPART, detail=f"the reference has the original method only (this "
                                            f"cell: S2AP {s2ap})")
    name = reference_method(method)
    if name is None:
        return Match(NO_COUNTERPART, detail=f"method {method!r} has no name in the reference "
                                            f"(benchmark.results.reference.METHOD_NAMES)")
    keys = ref[(ref["_dataset"] == dataset.lower()) & (ref["_arch"] == arch.lower())
               & (ref["_method"] == name.lower())
               & ref["sparsity"].map(lambda v: math.isclose(v, float(sparsity), abs_tol=1e-9))]
    same = keys[keys["_structure"] == structure.lower()]
    if same.empty:
        other = sorted(set(keys["_structure"]))
        extra = f" (it has {', '.join(other)} only)" if other else ""
        return Match(NO_COUNTERPART, detail=(f"no {structure} {name} cell for {dataset}/{arch} at "
                                             f"{_fmt(float(sparsity))} % in the reference{extra}"))
    if n_images is None:
        return Match(NO_COUNTERPART, detail="this cell has no AutoAttack result to compare")
    fits = same[same["eps"].map(lambda e: eps is not None and math.isclose(e, float(eps),
                                                                            rel_tol=1e-6))
                & (same["n_images"] == int(n_images))]
    if fits.empty:
        first = same.iloc[0]
        return Match(NO_COUNTERPART, detail=(
            f"protocol differs: the reference measured eps {_fmt(first['eps'])} on "
            f"{int(first['n_images']):,} images, this cell eps "
            f"{'—' if eps is None else _fmt(float(eps))} on {int(n_images):,}"))
    if len(fits) > 1:
        raise ReferenceFileError(f"the reference holds {len(fits)} rows for {dataset}/{structure}/"
                                 f"{name}/{arch}/{_fmt(float(sparsity))} at one protocol")
    row = fits.iloc[0]
    return Match(MATCHED, clean=float(row["clean"]), autoattack=float(row["autoattack"]),
                 detail=f"{name} {structure}")


def inside(value: float | None, lo: float | None, hi: float | None) -> bool | None:
    """Whether a reference value lies in our interval; None when either is missing."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (value, lo, hi)):
        return None
    return bool(lo <= value <= hi)


def add_reference(rows: Iterable[dict], ref: pd.DataFrame) -> None:
    """Leaderboard rows get ``ref_clean`` / ``ref_autoattack`` (NaN without a counterpart)."""
    for row in rows:
        found = match_row(ref, row)
        row["ref_clean"] = found.clean if found.matched else math.nan
        row["ref_autoattack"] = found.autoattack if found.matched else math.nan


def match_row(ref: pd.DataFrame, row: Mapping[str, Any]) -> Match:
    """``match`` for a pooled row of the leaderboard (aggregate's field names)."""
    n = row.get("autoattack_n")
    n = None if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)
    return match(ref, dataset=row["dataset"], arch=row["arch"], method=row["method"],
                 s2ap=row["s2ap"], structure=row.get("structure") or "unstructured",
                 sparsity=float(row["sparsity"]), eps=row.get("eps"), n_images=n)


__all__ = ["AP_BENCHMARK_CSV", "AP_BENCHMARK_PROTOCOL", "METHOD_NAMES", "REFERENCE_LABEL", "Match",
           "MATCHED", "NO_COUNTERPART", "ReferenceFileError", "add_reference", "inside",
           "load_reference", "match", "match_row", "reference_method"]
