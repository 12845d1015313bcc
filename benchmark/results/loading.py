"""Reading result files for a leaderboard and checking them: every file through
``benchmark.core.result_file.read_result``, the invariants one dataset's table must share, and the
verdicts on a single result (degenerate, S2AP inactive). Part of the aggregation
(``benchmark.results.aggregate`` describes the whole)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from benchmark.core.errors import CorruptFileError
from benchmark.core.result_file import ResultError, pgd_broken_aa_robust, read_result
from benchmark.results.staleness import code_scope_of

METRICS = ("clean", "pgd", "autoattack")
# a model whose accuracy is at most this far above always answering the majority class is degenerate
DEGENERATE_MARGIN = 0.02
# an S2AP search whose score step flipped nothing in more than this share of its steps is inactive
S2AP_INACTIVE_ABOVE = 0.5
WILSON_METRICS = ("clean", "autoattack")
S2AP_ORDER = {"n/a": 0, "off": 1, "on": 2}
DASH = "—"
# what every result of one dataset's table shares: (record field, what it is)
TABLE_FIELDS = (("eps", "eps"), ("clean_n", "clean image count"), ("pgd_n", "PGD image count"),
                ("autoattack_n", "AutoAttack image count"), ("clean_images", "clean images"),
                ("pgd_images", "PGD images"), ("autoattack_images", "AutoAttack images"))


class AggregationError(CorruptFileError):
    """Results that must not be pooled or compared; the message names the files and the rule."""


# ---------------------------------------------------------------- reading
def fmt_sparsity(v: float) -> str:
    return f"{v:g}"


def _flatten_numeric(obj: Any, prefix: str, out: dict[str, float]) -> None:
    """Numeric leaves of a diagnostics tree as 'diag.a.b' (lists as 'diag.a[i]')."""
    if isinstance(obj, bool):
        out[prefix] = float(obj)
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten_numeric(v, f"{prefix}.{k}", out)
    elif isinstance(obj, (list, tuple)) and len(obj) <= 64:
        for i, v in enumerate(obj):
            if isinstance(v, (int, float, dict, list, tuple)):
                _flatten_numeric(v, f"{prefix}[{i}]", out)


def result_files(runs: str | Path | list) -> list[Path]:
    """The result JSONs: every one under a folder, or exactly the files listed (the workflow
    lists its own, so results left by an earlier version of the grid are not pooled in)."""
    if isinstance(runs, (list, tuple)):
        paths = [Path(p) for p in runs]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"result files not found: {missing}")
        return sorted(paths)
    runs_dir = Path(runs)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder not found: {runs_dir}")
    return sorted(runs_dir.rglob("*.json"))


def _excluded(path: Path | str, rule: str, detail: str) -> dict[str, str]:
    return {"file": str(path), "rule": rule, "detail": detail}


def load_checked(runs: str | Path | list, *, exclude_invalid: bool = False
                 ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(one flat record per valid result file, the excluded files as {file, rule, detail}).

    Every file is checked (benchmark.core.result_file.read_result, then the table rules: one dataset's
    results share eps, image counts and images). A file that breaks a rule raises
    AggregationError naming the file and the rule, unless exclude_invalid, which lists it among
    the excluded instead (for a table rule: the files that disagree with most of their table).
    """
    records, excluded = [], []
    for path in result_files(runs):
        try:
            records.append(_record(path, read_result(path)))
        except ResultError as exc:
            if not exclude_invalid:
                raise AggregationError(f"{exc}. (To leave it out and list it as excluded, "
                                       f"rerun the aggregation with --exclude-invalid.)") from exc
            excluded.append(_excluded(path, exc.rule, exc.detail))
    while True:
        violations = _table_violations(records)
        if not violations:
            break
        if not exclude_invalid:
            raise AggregationError(
                "results that must share a table disagree:\n" + "\n".join(
                    f"  {v['file']}: rule '{v['rule']}': {v['detail']}" for v in violations)
                + "\nRegenerate them with one preset, or rerun with --exclude-invalid")
        bad = {v["file"] for v in violations}
        excluded.extend(violations)
        records = [r for r in records if r["file"] not in bad]
    return records, excluded


def load_runs(runs_dir: str | Path | list, *, exclude_invalid: bool = False) -> list[dict[str, Any]]:
    """One flat record per valid result file (see load_checked; the excluded are dropped here)."""
    return load_checked(runs_dir, exclude_invalid=exclude_invalid)[0]


def _table_violations(records: list[dict]) -> list[dict[str, str]]:
    """Files whose eps, image counts or images differ from most results of their dataset's table
    (ties go to the value of the first file in path order)."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_dataset[r["dataset"]].append(r)
    out = []
    for dataset, recs in sorted(by_dataset.items()):
        for field, what in TABLE_FIELDS:
            counts = Counter(json.dumps(r[field]) for r in recs)
            if len(counts) < 2:
                continue
            order = {v: i for i, v in reversed(list(enumerate(json.dumps(r[field]) for r in recs)))}
            common = max(counts, key=lambda v: (counts[v], -order[v]))
            for r in recs:
                if json.dumps(r[field]) != common:
                    out.append(_excluded(r["file"], "table", (
                        f"{what} {r[field]} differs from {json.loads(common)} of "
                        f"{counts[common]} other result(s) in the {dataset} table")))
            break  # one disagreement per pass: excluding those files may settle the others
    return out


def _record(path: Path, res: dict) -> dict[str, Any]:
    """The flat view of a validated result record."""
    cell, metrics, flags = res["cell"], res["metrics"], res["flags"]
    git = res["provenance"]["git"]
    sparsity = float(cell["sparsity"])
    sp = res["sparsity"]
    rec: dict[str, Any] = {
        "file": str(path),
        "dataset": str(cell["dataset"]), "arch": str(cell["arch"]), "method": str(cell["method"]),
        "s2ap": str(cell["s2ap"]), "sparsity": sparsity,
        "seed": cell["seed"],
        "config_hash": res["config_hash"],
        "eps": res["eps"],
        "sparsity_measured": 100.0 * sp["measured"],
        "sparsity_mask": None if sp["mask"] is None else 100.0 * sp["mask"]["sparsity"],
        "structure": res["structure"],
        "preset": cell.get("preset"),
        "revision": git["revision"], "dirty": git["dirty"],
        "stage_code": res["provenance"]["stage_code"],
        "code_scope": code_scope_of(res),
        "aa_robust_pgd_broken": pgd_broken_aa_robust(res),
        "submission": (res.get("submission") or {}).get("name"),
        "claims_outside": list((res.get("submission") or {}).get("outside") or []),
        # the preset follows the recipe ledger and declares deviations for this cell's recipe
        "recipe_differs": bool(cell.get("recipe_deviations")),
        # what the evaluation ran on: stand-in data (benchmark/core/synthetic.py) is never the dataset
        "synthetic": bool(((res["config"].get("evaluate") or {}).get("data") or {}).get("synthetic")),
        # the mask was made with the unit floor (docs/decisions.md): the header names the methods
        "unit_floor": "unit_floor_added" in (res.get("search") or {}),
    }
    for name in METRICS:
        m = metrics.get(name)
        rec[f"{name}_correct"] = None if m is None else int(m["correct"])
        rec[f"{name}_n"] = None if m is None else int(m["n"])
        rec[f"{name}_images"] = None if m is None else m["images_digest"]
        rec[f"{name}_flags"] = flags.get(name)
    rec["pgd_steps"] = metrics["pgd"]["steps"]
    rec["pgd_batching"] = min(int(metrics["pgd"]["batch_size"]), max(1, int(metrics["pgd"]["n"])))
    aa = metrics.get("autoattack")
    rec["aa_batching"] = None if aa is None else aa_batching(aa)
    if aa is not None:
        rec["aa_version"] = aa["version"]
        rec["aa_attacks"] = tuple(aa["attacks"])
        rec["aa_standard"] = bool(aa["standard"])
        rec["aa_warnings"] = list(aa["warnings"])
        rec["aa_lowered_by"] = list(aa["lowered_by"])
        rec["aa_lowered"] = bool(aa["lowered_after_apgd"])
    else:
        rec.update(aa_version=None, aa_attacks=None, aa_standard=None, aa_warnings=[],
                   aa_lowered_by=[], aa_lowered=False)
    diag: dict[str, float] = {}
    _flatten_numeric(res.get("diagnostics") or {}, "diag", diag)
    rec["diagnostics"] = diag
    search, balance = res.get("search") or {}, res.get("class_balance") or {}
    rec["learns_scores"] = search.get("learns_scores")
    rec["projected"] = bool(search.get("projected", False))
    rec["val_majority_share"] = balance.get("val_majority_share")
    rec["test_majority_share"] = balance.get("test_majority_share")
    rec["degenerate"] = "; ".join(degenerate_reasons(res))
    s2ap_cfg = (res["config"].get("prune") or {}).get("s2ap") if isinstance(res["config"].get("prune"), dict) else None
    rec["gamma_unselected"] = isinstance(s2ap_cfg, dict) and s2ap_cfg.get("gamma_status") == "unselected"
    noflip = (res.get("diagnostics") or {}).get("s2ap_noflip_fraction")
    rec["s2ap_inactive"] = noflip is not None and noflip > S2AP_INACTIVE_ABOVE
    return rec


def degenerate_reasons(res: dict) -> list[str]:
    """Why a result is a failed run rather than a data point (empty when it is not): its final
    clean accuracy, or its learned mask's clean accuracy on the validation slice, is at most
    DEGENERATE_MARGIN above the majority class's share of that set. A fixed-rule mask (learns no
    scores) is not judged before finetuning; a result without the shares is not judged."""
    out = []
    search, balance = res.get("search") or {}, res.get("class_balance") or {}
    val, test = balance.get("val_majority_share"), balance.get("test_majority_share")
    mask = (res.get("diagnostics") or {}).get("mask_clean_acc")
    if search.get("learns_scores") and mask is not None and val is not None \
            and mask <= val + DEGENERATE_MARGIN:
        out.append(f"searched mask {100 * mask:.1f} % clean on the validation slice, majority class "
                   f"{100 * val:.1f} %")
    clean = res["metrics"]["clean"]["acc"]
    if test is not None and clean <= test + DEGENERATE_MARGIN:
        out.append(f"final clean accuracy {100 * clean:.1f} %, majority class {100 * test:.1f} %")
    return out


def aa_batching(aa: dict) -> list[int]:
    """[images per shard, images per attack batch]: what groups pyautoattack's random draws. A
    batch larger than its shard is the whole shard, so it only matters up to the shard size."""
    shard = int(aa["shard_size"] or aa["n"] or 1)
    return [shard, min(int(aa["batch_size"]), shard)]
