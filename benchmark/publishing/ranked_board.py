"""The ranked board of the site: one table per dataset x threat model (eps, AutoAttack images) x
sparsity, ranked by AutoAttack accuracy, as RobustBench shows its leaderboards.

Columns: rank, method and paper (title, venue, link: read from the method's registration in
methods/*.py, benchmark.core.papers; a submission's from its submission.yaml; an S2AP row names the
plug-in's paper too), clean and AutoAttack accuracy, architecture, sparsity, extra data, flags,
and for each entry a copy-paste snippet that loads its model file with the suite's API
(``benchmark.core.model_files.load_from_manifest``, which checks the sha256 before it reads a byte).

Ranking is within one sparsity: a 99 % sparse model is not worse than a dense one for ranking
below it. Rows with no AutoAttack number are listed last, unranked. Ties share a rank (1, 2, 2,
4). Torch-free; it reads the site's entries (benchmark.publishing.site.generator) and writes nothing.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core.papers import PaperMetadataError, method_paper, s2ap_paper, training_paper

# RobustBench's "extra data" column: whether training used images beyond the dataset's training
# split. Every stage of the suite trains on the training split only (benchmark/core/datasets.py).
SUITE_EXTRA_DATA = "no"
LOADER = "benchmark.core.model_files.load_from_manifest"


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def papers_of(entry: Mapping[str, Any], method_files: Iterable[str | Path] = ()
              ) -> list[dict[str, str]]:
    """The papers behind an entry: a submission's own, else its method's registration (the dense
    model: its training loss's), plus S2AP's for an S2AP row. Missing ones are left out."""

    out: list[dict[str, str]] = []
    if entry.get("submission_paper"):
        return [dict(entry["submission_paper"])]
    try:
        if entry["method"] == "dense":
            loss = (((entry.get("config") or {}).get("pretrain") or {}).get("train") or {}).get("loss")
            paper = training_paper(loss)
        else:
            paper = method_paper(entry["method"], method_files)
    except (KeyError, PaperMetadataError):
        paper = None  # a method no file declares (a submission's label): no paper to name
    if paper:
        out.append(paper)
    if str(entry.get("s2ap")) in ("on", "score", "awp"):
        try:
            s2ap = s2ap_paper()
        except PaperMetadataError:
            s2ap = None
        if s2ap:
            out.append(s2ap)
    return out


def snippet(manifest: str, model_key: str) -> str:
    """Python that loads one model of a manifest, verified, as an nn.Module in eval mode."""
    return ("from benchmark.core.model_files import load_from_manifest\n\n"
            f"model = load_from_manifest({manifest!r}, {model_key!r})  # sha256 checked first\n")


def _manifest_shown(manifest: str | None, preset: str | None, template: str | None) -> str | None:
    """The manifest's path as a reader of the site has it: ``template`` ('{preset}' filled in,
    e.g. results/published/{preset}/export/models/manifest.json), else relative to the current
    folder when inside it."""
    if manifest is None:
        return None
    if template:
        return template.replace("{preset}", str(preset or ""))
    rel = os.path.relpath(manifest)
    return manifest if rel.startswith("..") else rel


def _loader(entry: Mapping[str, Any], template: str | None) -> dict[str, Any] | None:
    for run in entry.get("runs") or []:
        shown = _manifest_shown(run.get("manifest"), entry.get("preset"), template)
        if shown and run.get("model_files"):
            return {"model": run["model"], "manifest": shown, "seed": run.get("seed"),
                    "code": snippet(shown, run["model"])}
    return None


def _ranks(values: list[float | None]) -> list[int | None]:
    """Competition ranks of descending values (ties share one); None for a missing value."""
    out: list[int | None] = []
    prev, rank = None, 0
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if v != prev:
            rank, prev = i + 1, v
        out.append(rank)
    return out


def ranked_boards(tables: Iterable[Mapping[str, Any]], *, method_files: Iterable[str | Path] = (),
                  snippet_manifest: str | None = None) -> list[dict[str, Any]]:
    """One board per site table (dataset, threat model, eps, AutoAttack images) and sparsity,
    its entries ranked by AutoAttack accuracy (then clean accuracy)."""
    method_files = list(method_files)
    boards = []
    for t in tables:
        by_sparsity: dict[float, list[Mapping[str, Any]]] = {}
        for e in t["entries"]:
            by_sparsity.setdefault(float(e["sparsity"]), []).append(e)
        for sparsity in sorted(by_sparsity):
            entries = sorted(by_sparsity[sparsity], key=lambda e: (
                _num(e["row"].get("autoattack")) is None, -(_num(e["row"].get("autoattack")) or 0),
                -(_num(e["row"].get("clean")) or 0), str(e["id"])))
            ranks = _ranks([_num(e["row"].get("autoattack")) for e in entries])
            rows = []
            for rank, e in zip(ranks, entries):
                rows.append({
                    "rank": rank, "id": e["id"], "page": e["page"], "method": e["method"],
                    "name": e.get("name") or e["method"], "s2ap": e["s2ap"],
                    "papers": papers_of(e, method_files), "clean": e["row"].get("clean"),
                    "autoattack": e["row"].get("autoattack"), "arch": e["arch"],
                    "sparsity_text": e["sparsity_text"], "dataset": e["dataset"],
                    "structure": e.get("structure"),
                    # a submission's training data is the submitter's to state (its YAML has no field)
                    "extra_data": "not stated" if e.get("submission") else SUITE_EXTRA_DATA,
                    "flags": e["flags"],
                    "loader": _loader(e, snippet_manifest)})
            boards.append({"title": f"{t['title']} · sparsity {entries[0]['sparsity_text']} %",
                           "dataset": entries[0]["dataset"], "threat": entries[0]["threat"],
                           "sparsity_text": entries[0]["sparsity_text"], "rows": rows})
    return boards


__all__ = ["ranked_boards", "papers_of", "snippet", "SUITE_EXTRA_DATA", "LOADER"]
