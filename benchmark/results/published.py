"""Your run against the published run: the leaderboard's "published" columns.

A run writes ``results/<preset>/``; the published run of that preset lives in
``results/published/<preset>/`` (committed; ``python -m benchmark publish`` puts it there). When
the published leaderboard exists, the aggregation adds to each row of this run:

  published_clean, published_autoattack   the published run's accuracies (%)
  published_clean_diff, published_autoattack_diff
                                          this run minus the published run, in points
  published_clean_in_ci, published_autoattack_in_ci
                                          whether the published value lies inside this run's
                                          95 % Wilson interval (True/False; empty without a match)
  published_revision                      the revision the published row was computed at

Rows match on ``MATCH_KEY`` (dataset, arch, method, s2ap, structure, nominal sparsity, eps and the
AutoAttack image count): a published number measured on other images or at another eps is never
compared. Where several published rows share the key, the one with this row's configuration hash
is taken; without one, the row gets no published value rather than a guess. Torch-free.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.core.errors import CorruptFileError
from benchmark.results.leaderboard_file import read_leaderboard

MATCH_KEY = ("dataset", "arch", "method", "s2ap", "structure", "sparsity", "eps", "autoattack_n")
METRICS = ("clean", "autoattack")
COLUMNS = ("published_clean", "published_autoattack", "published_clean_diff",
           "published_autoattack_diff", "published_clean_in_ci", "published_autoattack_in_ci",
           "published_revision")


def finite_number(v: Any) -> float | None:
    """``v`` as a float, or None when it is missing, not a number, NaN or infinite (CSV cells)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def match_key(row: dict[str, Any]) -> tuple:
    n = finite_number(row.get("autoattack_n"))
    eps = finite_number(row.get("eps"))
    return (str(row["dataset"]), str(row["arch"]), str(row["method"]), str(row["s2ap"]),
            str(row.get("structure") or "unstructured"), float(row["sparsity"]),
            None if eps is None else round(eps, 9), None if n is None else int(n))


def load_published(path: str | Path) -> pd.DataFrame:
    """A published leaderboard.csv; CorruptFileError naming the file when it lacks a key column."""
    path = Path(path)
    try:
        frame = read_leaderboard(path)
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"cannot read the published leaderboard {path}: {exc}") from exc
    missing = [c for c in (*MATCH_KEY, *METRICS) if c not in frame.columns]
    if missing:
        raise CorruptFileError(
            f"the published leaderboard {path} lacks the columns {missing}: it was written by an "
            "older version of the suite. Republish the preset (make publish PRESET=...) or remove "
            "the file to aggregate without the comparison")
    return frame


def add_published(rows: Iterable[dict[str, Any]], published: pd.DataFrame) -> None:
    """Adds the COLUMNS to every leaderboard row (a dict of benchmark.results.aggregate), in place."""
    by_key: dict[tuple, list[dict[str, Any]]] = {}
    for rec in published.to_dict("records"):
        by_key.setdefault(match_key(rec), []).append(rec)
    for row in rows:
        row.update({c: math.nan for c in COLUMNS})
        row["published_revision"] = None
        candidates = by_key.get(match_key(row), [])
        if len(candidates) > 1:
            candidates = [c for c in candidates if str(c.get("config_hash")) == str(row.get("config_hash"))]
        if len(candidates) != 1:
            continue
        pub = candidates[0]
        row["published_revision"] = pub.get("revision") if isinstance(pub.get("revision"), str) else None
        for metric in METRICS:
            value, ours = finite_number(pub.get(metric)), finite_number(row.get(metric))
            row[f"published_{metric}"] = math.nan if value is None else value
            if value is None or ours is None:
                row[f"published_{metric}_in_ci"] = None
                continue
            row[f"published_{metric}_diff"] = ours - value
            lo, hi = finite_number(row.get(f"{metric}_lo")), finite_number(row.get(f"{metric}_hi"))
            row[f"published_{metric}_in_ci"] = (None if lo is None or hi is None
                                                else bool(lo <= value <= hi))


def published_cell(row: dict[str, Any], metric: str = "autoattack") -> str | None:
    """The markdown cell: "43.00 (+1.00, inside)" = published value, this run minus it, and
    whether it lies inside this run's interval; None without a published value."""
    value = finite_number(row.get(f"published_{metric}"))
    if value is None:
        return None
    diff = finite_number(row.get(f"published_{metric}_diff"))
    inside = row.get(f"published_{metric}_in_ci")
    if inside is None or (isinstance(inside, float) and math.isnan(inside)):
        where = "no interval"
    else:
        where = "inside" if bool(inside) else "outside"
    return f"{value:.2f} ({'—' if diff is None else f'{diff:+.2f}'}, {where})"


__all__ = ["MATCH_KEY", "COLUMNS", "published_dir", "published_leaderboard",
           "load_published", "add_published", "published_cell", "match_key"]
