"""Leaderboard tables from result JSONs (docs/design.md, "Result JSON").

``aggregate(runs_dir, out_dir, reference_csv=None)`` reads every ``*.json`` under runs_dir and
writes ``leaderboard.csv`` and ``leaderboard.md`` (and ``s2ap_paired.csv`` when the S2AP table
exists, ``excluded.csv`` when files were excluded) atomically into out_dir. Torch-free, so the
aggregation job starts in a second.

Nothing on disk is believed unchecked. Every file goes through ``benchmark.results.read_result``
(the schema, then counts against flags, per-image implications, the eps of every attack, the
protocol against the preset, the sparsity counts), and the results of one dataset's table must
share eps, image counts and images. A file that breaks a rule stops the aggregation with its path
and the rule, before anything is written (the previous leaderboard stays in place); with
``exclude_invalid=True`` (CLI ``--exclude-invalid``) it is left out and listed as excluded in the
leaderboard instead. No file is skipped silently.

Rows: per (dataset, arch) the dense model first, then one row per (method, s2ap, nominal sparsity)
and configuration hash (config without seed). Seeds of one row are pooled:

- accuracies in %, mean over seeds, with the std across seeds (NaN in the CSV, "—" in the
  markdown for a single seed);
- a Wilson 95 % interval on the counts pooled over seeds (clean and AutoAttack);
- pooling is refused (ValueError) when the seeds differ in eps, AutoAttack version or attack set,
  the number of images, or the batching of their attacks (batch sizes chosen from free memory
  differ between machines, and AutoAttack's random draws follow its batches): their numbers
  measure different things.

Sparsity: ``sparsity`` is the nominal value of the cell (percent, sp90), ``sparsity_measured`` the
zero weights of the evaluated model, ``sparsity_mask`` the mask count, both in percent.

Flags of a row: AutoAttack warnings, attacks after APGD that still broke images, a non-standard
attack set, images robust to AutoAttack but broken by PGD (legitimate, counted in
``aa_robust_pgd_broken``), a result made from a dirty tree (``dirty``) or by stage code other than
the current one (``stale``), an external submission (``submission``) and its claims our
measurement does not confirm. ``benchmark.flags`` holds their letters and legend.

``published_csv`` (CLI ``--published``): the published run's leaderboard
(``results/published/<preset>/leaderboard.csv``); each row gets the ``published_*`` columns of
``benchmark.published`` (the published value, this run minus it, and whether it lies inside this
run's interval).

The markdown: a header naming the revision(s) that produced the results and whether the tree was
dirty, then per (dataset, arch) the compact table (method, S2AP, sparsity, clean, AutoAttack with
its interval, Δ vs Orig., Published AA when there is a published run, flags as letters) with the
legend of the letters it uses; every other column is in the CSV. No timestamp: the same inputs
give the same bytes, which ``python -m benchmark publish`` checks.

Failed runs are shown but are not data points. A result is ``degenerate`` when its final clean
accuracy, or (for a learned mask only) its mask's clean accuracy on the validation slice right
after the search, is at most ``DEGENERATE_MARGIN`` (2 points) above the share of the most frequent
class in that set (the result records both shares): such a model learned nothing. Fixed-rule masks
(magnitude, LAMP, random) are judged after finetuning only. Rows count them (``degenerate:K/N``);
a HARP search that ended over budget and was projected onto it is flagged ``projected:K/N``; an S2AP
search whose score step flipped no mask entry in more than half of its post-warm-up steps is
flagged ``s2ap-inactive:K/N`` (it did nothing there: under the straight-through estimator a step
that flips nothing is the plain method's step).

Below it, per S2AP row, the share of kept weights the score step's perturbation flipped in each
search epoch (the evidence that the step acted; from the results' diagnostics).

The S2AP table (paper layout: Orig., S2AP, delta) appears when some cell has both s2ap 'off' and
'on' results, for AutoAttack and for PGD. Degenerate seeds are left out of it (and listed). Orig.
and S2AP are the means over the remaining seeds, delta their difference. Two statistics stand
beside it, for two different questions:

- the seed-level t-interval (95 %) of the mean of the per-seed differences (seed s of 'on' minus
  seed s of 'off'), "—" below 3 paired seeds: whether S2AP changes the METHOD's accuracy, the
  variation between searches and dense models included. This is the one to read for the effect;
- an exact McNemar test on the per-image flags of the seeds both sides share (concatenated):
  whether these particular models differ on these test images. With 10,000 images it calls
  differences of a point "significant" that the next seed reverses; it measures test-image noise
  only.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import flags as flag_legend
from benchmark.errors import CorruptFileError
from benchmark.io import atomic_write_text
from benchmark.provenance import stage_code_digest
from benchmark.published import add_published, load_published, published_cell
from benchmark.reference import add_reference, load_reference
from benchmark.results import ResultError, pgd_broken_aa_robust, read_result
from benchmark.stats import mcnemar, seed_interval, wilson_interval

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
def _fmt_sparsity(v: float) -> str:
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

    Every file is checked (benchmark.results.read_result, then the table rules: one dataset's
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
        "aa_robust_pgd_broken": pgd_broken_aa_robust(res),
        "submission": (res.get("submission") or {}).get("name"),
        "claims_outside": list((res.get("submission") or {}).get("outside") or []),
        # what the evaluation ran on: stand-in data (benchmark/synthetic.py) is never the dataset
        "synthetic": bool(((res["config"].get("evaluate") or {}).get("data") or {}).get("synthetic")),
        # the mask was made with the unit floor (docs/decisions.md): the header names the methods
        "unit_floor": "unit_floor_added" in (res.get("search") or {}),
        # the preset follows the recipe ledger and declares deviations for this cell's recipe
        "recipe_differs": bool(cell.get("recipe_deviations")),
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


# ---------------------------------------------------------------- pooling
def _group_key(r: dict) -> tuple:
    return (r["dataset"], r["arch"], r["method"], r["s2ap"], r["sparsity"], r["config_hash"])


def _describe(key: tuple) -> str:
    d, a, m, s, sp, h = key
    return f"{d}/{a}/{m}/s2ap={s}/sp{_fmt_sparsity(sp)} (config {h})"


def _same(runs: list[dict], field: str, what: str, key: tuple) -> Any:
    values = {json.dumps(r[field], sort_keys=True, default=str): r for r in runs}
    if len(values) > 1:
        detail = "; ".join(f"{r['file']}: {r[field]!r}" for r in values.values())
        raise AggregationError(f"refusing to pool {_describe(key)}: the seeds differ in {what} "
                               f"({detail})")
    return runs[0][field]


def aa_batching(aa: dict) -> list[int]:
    """[images per shard, images per attack batch]: what groups pyautoattack's random draws. A
    batch larger than its shard is the whole shard, so it only matters up to the shard size."""
    shard = int(aa["shard_size"] or aa["n"] or 1)
    return [shard, min(int(aa["batch_size"]), shard)]


def _check_poolable(runs: list[dict], key: tuple) -> None:
    _same(runs, "eps", "eps", key)
    _same(runs, "aa_version", "AutoAttack version", key)
    _same(runs, "aa_attacks", "AutoAttack attack set", key)
    # batch sizes chosen from free memory differ between machines without changing the config
    # hash; AutoAttack's random draws and a convolution's rounding follow the batches
    _same(runs, "aa_batching", "AutoAttack batching ([images per shard, per attack batch])", key)
    _same(runs, "pgd_batching", "PGD batch size", key)
    for name in METRICS:
        _same(runs, f"{name}_n", f"number of images ({name})", key)
    seeds = [r["seed"] for r in runs]
    if len(set(map(str, seeds))) != len(seeds):
        raise AggregationError(f"{_describe(key)} holds the same seed twice: "
                               + ", ".join(r["file"] for r in runs))


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _pool(key: tuple, runs: list[dict]) -> dict[str, Any]:
    _check_poolable(runs, key)
    runs = sorted(runs, key=lambda r: str(r["seed"]))
    dataset, arch, method, s2ap, sparsity, chash = key
    row: dict[str, Any] = {"dataset": dataset, "arch": arch, "method": method, "s2ap": s2ap,
                           "sparsity": sparsity}
    for col in ("sparsity_measured", "sparsity_mask"):
        vals = [r[col] for r in runs if r[col] is not None]
        row[col] = sum(vals) / len(vals) if vals else math.nan
    row["n_seeds"] = len(runs)
    row["seeds"] = " ".join(str(r["seed"]) for r in runs)
    for name in METRICS:
        if runs[0][f"{name}_n"] is None:
            row.update({name: math.nan, f"{name}_std": math.nan, f"{name}_n": math.nan})
            if name in WILSON_METRICS:
                row.update({f"{name}_lo": math.nan, f"{name}_hi": math.nan})
            continue
        accs = [100.0 * r[f"{name}_correct"] / r[f"{name}_n"] if r[f"{name}_n"] else math.nan
                for r in runs]
        row[name], row[f"{name}_std"] = _mean_std(accs)
        row[f"{name}_n"] = runs[0][f"{name}_n"]
        if name in WILSON_METRICS:
            lo, hi = wilson_interval(sum(r[f"{name}_correct"] for r in runs),
                                     sum(r[f"{name}_n"] for r in runs))
            row[f"{name}_lo"], row[f"{name}_hi"] = 100.0 * lo, 100.0 * hi
    row["eps"] = runs[0]["eps"]
    row["pgd_steps"] = runs[0]["pgd_steps"]
    row["aa_version"] = runs[0]["aa_version"]
    row["aa_attacks"] = ",".join(runs[0]["aa_attacks"]) if runs[0]["aa_attacks"] else None
    row["aa_standard"] = runs[0]["aa_standard"]
    flags = []
    if any(r["aa_warnings"] for r in runs):
        flags.append("warnings")
    lowered = sorted({a for r in runs for a in r["aa_lowered_by"]})
    if lowered or any(r["aa_lowered"] for r in runs):
        flags.append("lowered-after-apgd:" + "+".join(lowered))
    if runs[0]["aa_standard"] is False:
        flags.append("non-standard-AA")
    row["synthetic"] = any(r["synthetic"] for r in runs)
    if row["synthetic"]:
        flags.append("synthetic-data")
    row["aa_robust_pgd_broken"] = sum(r["aa_robust_pgd_broken"] for r in runs)
    if row["aa_robust_pgd_broken"]:
        flags.append(f"pgd-broke-aa-robust:{row['aa_robust_pgd_broken']}")
    row["dirty"] = any(r["dirty"] is True for r in runs)
    row["stale"] = any(r["stale"] for r in runs)
    row["revision"] = " ".join(sorted({r["revision"][:10] for r in runs}))
    if any(r["dirty"] is None for r in runs):
        flags.append("no-revision")
    elif row["dirty"]:
        flags.append("dirty-tree")
    if row["stale"]:
        flags.append("stale-code")
    row["submission"] = any(r["submission"] for r in runs)
    if row["submission"]:
        flags.append("submission")
        outside = sorted({c for r in runs for c in r["claims_outside"]})
        if outside:
            flags.append("claim-outside:" + "+".join(outside))
    if any(r["gamma_unselected"] for r in runs):
        flags.append("gamma-unselected")
    row["unit_floor"] = any(r["unit_floor"] for r in runs)
    if row["unit_floor"]:
        flags.append("unit-floor")
    if any(r.get("recipe_differs") for r in runs):
        flags.append("recipe-differs")
    for col, flag in (("degenerate", "degenerate"), ("projected", "projected"),
                      ("s2ap_inactive", "s2ap-inactive")):
        k = sum(1 for r in runs if r[col])
        row[f"{col}_seeds"] = k
        if k:
            flags.append(f"{flag}:{k}/{len(runs)}")
    row["flag"] = "; ".join(flags)
    row["config_hash"] = chash
    row["structure"] = runs[0]["structure"]
    diag_keys = sorted({k for r in runs for k in r["diagnostics"]})
    for k in diag_keys:
        vals = [r["diagnostics"][k] for r in runs if k in r["diagnostics"]]
        row[k] = sum(vals) / len(vals)
    row["_runs"] = runs
    return row


def _sort_key(row: dict) -> tuple:
    dense = row["method"] == "dense"
    return (row["dataset"], row["arch"], not dense, row["method"],
            S2AP_ORDER.get(row["s2ap"], 9), row["sparsity"], row["config_hash"])


# ---------------------------------------------------------------- S2AP pairs
def _comparable(a: dict, b: dict) -> None:
    ra, rb = a["_runs"][0], b["_runs"][0]
    for field, what in (("eps", "eps"), ("aa_version", "AutoAttack version"),
                        ("aa_attacks", "AutoAttack attack set"), ("autoattack_n", "number of images")):
        if ra[field] != rb[field]:
            raise AggregationError(
                f"refusing to compare S2AP off and on for {a['dataset']}/{a['arch']}/{a['method']}/"
                f"sp{_fmt_sparsity(a['sparsity'])}: they differ in {what} ({ra[field]!r} in "
                f"{ra['file']} vs {rb[field]!r} in {rb['file']})")


def _acc(r: dict, metric: str) -> float:
    n = r[f"{metric}_n"]
    return 100.0 * r[f"{metric}_correct"] / n if n else math.nan


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _compare(off: dict, on: dict, metric: str) -> dict[str, Any]:
    """Orig., S2AP and delta of one metric over the non-degenerate seeds; the per-seed deltas of
    the seeds both sides share, their t-interval, and McNemar on their per-image flags."""
    offs = [r for r in off["_runs"] if not r["degenerate"]]
    ons = [r for r in on["_runs"] if not r["degenerate"]]
    orig, new = _mean([_acc(r, metric) for r in offs]), _mean([_acc(r, metric) for r in ons])
    by_off, by_on = {str(r["seed"]): r for r in offs}, {str(r["seed"]): r for r in ons}
    common = sorted(s for s in set(by_off) & set(by_on)
                    if by_off[s][f"{metric}_flags"] and by_on[s][f"{metric}_flags"]
                    and len(by_off[s][f"{metric}_flags"]) == len(by_on[s][f"{metric}_flags"]))
    deltas = [_acc(by_on[s], metric) - _acc(by_off[s], metric) for s in common]
    mean, lo, hi = seed_interval(deltas)
    p, b, c = math.nan, None, None
    if common:
        res = mcnemar("".join(by_off[s][f"{metric}_flags"] for s in common),
                      "".join(by_on[s][f"{metric}_flags"] for s in common))
        p, b, c = res["p_value"], res["b"], res["c"]
    return {"orig": orig, "s2ap": new, "delta": new - orig, "seed_mean": mean, "lo": lo, "hi": hi,
            "seed_deltas": " ".join(f"{d:+.2f}" for d in deltas), "p": p, "b": b, "c": c,
            "paired": len(common)}


_PAIR_COLUMNS = {  # output column -> (metric, key of _compare)
    "orig_aa": ("autoattack", "orig"), "s2ap_aa": ("autoattack", "s2ap"),
    "delta": ("autoattack", "delta"), "p_value": ("autoattack", "p"),
    "paired_seeds": ("autoattack", "paired"), "b": ("autoattack", "b"), "c": ("autoattack", "c"),
    "delta_seed_mean": ("autoattack", "seed_mean"), "delta_lo": ("autoattack", "lo"),
    "delta_hi": ("autoattack", "hi"), "seed_deltas": ("autoattack", "seed_deltas"),
    "orig_pgd": ("pgd", "orig"), "s2ap_pgd": ("pgd", "s2ap"), "delta_pgd": ("pgd", "delta"),
    "p_value_pgd": ("pgd", "p"), "paired_seeds_pgd": ("pgd", "paired"), "b_pgd": ("pgd", "b"),
    "c_pgd": ("pgd", "c"), "delta_pgd_seed_mean": ("pgd", "seed_mean"),
    "delta_pgd_lo": ("pgd", "lo"), "delta_pgd_hi": ("pgd", "hi"),
    "seed_deltas_pgd": ("pgd", "seed_deltas"),
}


def _empty_pair() -> dict[str, Any]:
    out: dict[str, Any] = {k: math.nan for k in _PAIR_COLUMNS}
    out.update(paired_seeds=0, paired_seeds_pgd=0, b=None, c=None, b_pgd=None, c_pgd=None,
               seed_deltas="", seed_deltas_pgd="")
    return out


def _left_out(side: str, row: dict | None) -> str:
    if row is None:
        return ""
    seeds = [str(r["seed"]) for r in row["_runs"] if r["degenerate"]]
    return f"{side}: seed {', '.join(seeds)}" if seeds else ""


def s2ap_pairs(rows: list[dict]) -> pd.DataFrame | None:
    """Paper layout: per (dataset, arch, method, sparsity) Orig., S2AP, delta for AutoAttack and
    PGD, with the seed-level interval and McNemar p; degenerate seeds left out (module docstring).
    None when no cell has both s2ap 'off' and 'on'."""
    cells: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["method"] == "dense":
            continue
        cells[(row["dataset"], row["arch"], row["method"], row["sparsity"])][row["s2ap"]].append(row)
    if not any(v.get("off") and v.get("on") for v in cells.values()):
        return None
    out = []
    for key in sorted(cells):
        dataset, arch, method, sparsity = key
        sides = cells[key]
        base = {"dataset": dataset, "arch": arch, "method": method, "sparsity": sparsity}
        for row in sides.get("n/a", []):
            out.append({**base, "s2ap_applicable": False, **_empty_pair(),
                        "orig_aa": row["autoattack"], "orig_pgd": row["pgd"],
                        "left_out": _left_out("n/a", row), "s2ap_inactive_seeds": 0,
                        "orig_config": row["config_hash"], "s2ap_config": None})
        offs, ons = sides.get("off", []), sides.get("on", [])
        pairs = ([(off, on) for off in offs for on in ons] if offs and ons
                 else [(off, None) for off in offs] + [(None, on) for on in ons])
        for off, on in pairs:
            entry = {**base, "s2ap_applicable": True, **_empty_pair()}
            if off is not None and on is not None:
                _comparable(off, on)
                compared = {m: _compare(off, on, m) for m in ("autoattack", "pgd")}
                entry.update({col: compared[m][k] for col, (m, k) in _PAIR_COLUMNS.items()})
            else:
                kept = [r for r in (off or on)["_runs"] if not r["degenerate"]]
                side = "orig" if off is not None else "s2ap"
                entry[f"{side}_aa"] = _mean([_acc(r, "autoattack") for r in kept])
                entry[f"{side}_pgd"] = _mean([_acc(r, "pgd") for r in kept])
            entry["left_out"] = "; ".join(x for x in (_left_out("off", off), _left_out("on", on)) if x)
            entry["s2ap_inactive_seeds"] = 0 if on is None else on["s2ap_inactive_seeds"]
            entry["orig_config"] = None if off is None else off["config_hash"]
            entry["s2ap_config"] = None if on is None else on["config_hash"]
            out.append(entry)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- markdown
def _num(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}"


def _pct_with_std(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _delta_vs_orig(pairs: pd.DataFrame | None) -> dict[tuple, float]:
    """S2AP minus the original method's AutoAttack accuracy, keyed by the S2AP row."""
    if pairs is None:
        return {}
    out = {}
    for r in pairs.to_dict("records"):
        if r.get("s2ap_applicable") and r.get("s2ap_config") and not math.isnan(r["delta"]):
            out[(r["dataset"], r["arch"], r["method"], float(r["sparsity"]), r["s2ap_config"])] = r["delta"]
    return out


def _ci(r: Any, metric: str) -> str:
    lo, hi = r[f"{metric}_lo"], r[f"{metric}_hi"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return ""
    return f" [{lo:.1f}, {hi:.1f}]"


def _leaderboard_md(df: pd.DataFrame, has_ref: bool, pairs: pd.DataFrame | None = None,
                    has_published: bool = False) -> tuple[str, set[str]]:
    """The compact main table, one per (dataset, arch), and the flag letters it uses; every
    other column is in leaderboard.csv."""
    deltas = _delta_vs_orig(pairs)
    parts, used = [], set()
    for (dataset, arch), group in df.groupby(["dataset", "arch"], sort=False):
        rows = []
        for _, r in group.iterrows():
            aa = _pct_with_std(r["autoattack"], r["autoattack_std"])
            delta = deltas.get((r["dataset"], r["arch"], r["method"], float(r["sparsity"]),
                                r["config_hash"])) if r["s2ap"] == "on" else None
            codes = flag_legend.codes(r["flag"])
            used.update(codes.split())
            c = {
                "Method": r["method"], "S2AP": r["s2ap"],
                "Sparsity (%)": _fmt_sparsity(r["sparsity"]),
                "Clean (%)": _pct_with_std(r["clean"], r["clean_std"]),
                "AutoAttack (%) [95% CI]": aa + (_ci(r, "autoattack") if aa != DASH else ""),
                "Δ vs Orig. (pp)": DASH if delta is None else f"{delta:+.2f}",
            }
            if has_published:
                c["Published AA (Δ, in CI?)"] = published_cell(r) or DASH
            if has_ref:
                c["Ref. AA"] = _num(r["ref_autoattack"])
            c["Flags"] = codes
            rows.append(c)
        parts += [f"### {dataset} · {arch}", "",
                  pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(parts), used


def _aa_label(r: Any) -> str:
    if r["aa_version"] is None or (isinstance(r["aa_version"], float) and math.isnan(r["aa_version"])):
        return DASH
    return r["aa_version"] if r["aa_standard"] else f"{r['aa_version']}[{r['aa_attacks']}]"


def _signed(v: Any) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def _interval(lo: Any, hi: Any) -> str:
    if lo is None or hi is None or any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return DASH
    return f"[{lo:+.2f}, {hi:+.2f}]"


def _p(v: Any) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _pairs_md(pairs: pd.DataFrame) -> str:
    rows = []
    for _, r in pairs.iterrows():
        na = not r["s2ap_applicable"]
        row = {"Dataset": r["dataset"], "Arch": r["arch"], "Method": r["method"],
               "Sparsity (%)": _fmt_sparsity(r["sparsity"])}
        for label, suffix in (("AA", ""), ("PGD", "_pgd")):
            orig = r["orig_aa"] if label == "AA" else r["orig_pgd"]
            new = r["s2ap_aa"] if label == "AA" else r["s2ap_pgd"]
            row[f"Orig. {label} (%)"] = _num(orig)
            row[f"S2AP {label} (%)"] = "n/a" if na else _num(new)
            row[f"Δ {label} (pp)"] = "n/a" if na else _signed(r[f"delta{suffix}"])
            row[f"Δ {label} 95% CI, seeds"] = "n/a" if na else _interval(r[f"delta{suffix}_lo"],
                                                                          r[f"delta{suffix}_hi"])
            row[f"McNemar p, {label}"] = "n/a" if na else _p(r[f"p_value{suffix}"])
        row["Paired seeds"] = "n/a" if na else int(r["paired_seeds_pgd"])
        row["Left out (degenerate)"] = r["left_out"] or ""
        row["S2AP inactive"] = "" if na or not r["s2ap_inactive_seeds"] else int(r["s2ap_inactive_seeds"])
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


FLIP_EPOCH = "diag.s2ap_flip_fraction_by_epoch[{}]"


def _pct(fraction: Any) -> Any:
    """A fraction in percent; None (shown as "—" by ``_num``) stays None."""
    return None if fraction is None else 100.0 * fraction


def _flips_md(df: pd.DataFrame) -> str | None:
    """Per S2AP row: the share of kept weights the score step's perturbation flipped, per search
    epoch (mean over the epoch's steps, then over seeds), "—" in the warm-up; None when no row ran
    the score step. The evidence that S2AP acted at all: a step that flips nothing is the plain
    method's step."""
    if "diag.s2ap_steps" not in df.columns:
        return None
    rows = df[(df["s2ap"] == "on") & df["diag.s2ap_steps"].notna() & (df["diag.s2ap_steps"] > 0)]
    if rows.empty:
        return None
    prefix = FLIP_EPOCH.split("[")[0] + "["
    epochs = 1 + max((int(c[len(prefix):-1]) for c in df.columns if c.startswith(prefix)), default=-1)
    out = []
    for _, r in rows.iterrows():
        row = {"Dataset": r["dataset"], "Arch": r["arch"], "Method": r["method"],
               "Sparsity (%)": _fmt_sparsity(r["sparsity"]), "gamma": f"{r['diag.s2ap_gamma']:g}"}
        for i in range(epochs):
            row[f"Epoch {i + 1} (%)"] = _num(_pct(r.get(FLIP_EPOCH.format(i))), 3)
        row["All steps (%)"] = _num(_pct(r["diag.s2ap_flip_fraction"]), 3)
        row["Steps without a flip (%)"] = _num(_pct(r.get("diag.s2ap_noflip_fraction")), 1)
        row["Seeds"] = int(r["n_seeds"])
        out.append(row)
    return pd.DataFrame(out).to_markdown(index=False, disable_numparse=True)


def _values(df: pd.DataFrame, col: str) -> list:
    return sorted({v for v in df[col].tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))},
                  key=str)


def _revision_line(records: list[dict]) -> str:
    """Which code produced the results: the revision(s), uncommitted changes, stale stage code."""
    n = len(records)
    revisions = Counter(r["revision"] for r in records)
    if len(revisions) == 1:
        (rev,) = revisions
        where = f"revision `{rev}`"
    else:
        where = "revisions " + ", ".join(f"`{rev}` ({k} files)" for rev, k in revisions.most_common())
    dirty = sum(r["dirty"] is True for r in records)
    unknown = sum(r["dirty"] is None for r in records)
    if unknown:
        line = (f"Produced at {where}; {unknown} of {n} result files were made outside a git "
                "checkout (revision unknown).")
    elif dirty:
        line = (f"Produced at {where} with uncommitted changes in {dirty} of {n} result files "
                "(dirty tree: their exact code cannot be checked out).")
    else:
        line = f"Produced at {where} from a clean tree ({n} result files)."
    stale = sum(bool(r.get("stale")) for r in records)
    if stale:
        line += (f" {stale} of them were made by stage code other than the current one "
                 "(flag X: rerun them).")
    return line


def _header(df: pd.DataFrame, preset: str, records: list[dict],
            published_note: str | None = None) -> str:
    eps = _values(df, "eps")
    aa = sorted({_aa_label(r) for _, r in df.iterrows()})
    n_aa = _values(df, "autoattack_n")
    steps = _values(df, "pgd_steps")
    seeds = _values(df, "n_seeds")
    lines = [
        f"# Leaderboard: {preset}",
        "",
        _revision_line(records),
        "",
        f"- Threat model: L-inf, eps = {', '.join(_num(e, 4) for e in eps) or DASH}"
        + (" (differs between rows: see the eps column of leaderboard.csv)" if len(eps) > 1 else ""),
        f"- AutoAttack: {', '.join(aa) or DASH}; images per seed: "
        f"{', '.join(str(int(v)) for v in n_aa) or DASH}; first images of the test set, in order",
        f"- PGD: {', '.join(str(int(s)) for s in steps) or DASH} steps, one random start",
        f"- Seeds per row: {', '.join(str(int(s)) for s in seeds) or DASH}. Accuracies in %, mean "
        f"over seeds (± std across seeds when there are several); 95% CI: Wilson interval on the "
        "counts pooled over seeds",
        "- Δ vs Orig.: S2AP's AutoAttack accuracy minus the original method's at the same "
        "sparsity, in points (the S2AP table below has its paired test)",
    ]
    if published_note:
        lines.append(f"- Published AA: the published run's AutoAttack accuracy ({published_note}), "
                     "this run minus it in points, and whether it lies inside this run's 95% CI; "
                     f"{DASH} where the published run has no row with the same dataset, "
                     "architecture, method, S2AP, structure, sparsity, eps and image count")
    floored = sorted({str(r["method"]) for r in records if r.get("unit_floor")})
    if floored:
        lines.append(f"- Unit floor (every output unit keeps at least one weight; not in the papers, "
                     f"docs/decisions.md) on for: {', '.join(floored)}")
    lines += ["- Measured sparsity, PGD accuracy, stds, every interval and diagnostic: "
              "leaderboard.csv", ""]
    return "\n".join(lines)


def _excluded_md(excluded: list[dict[str, str]]) -> list[str]:
    rows = [{"File": e["file"], "Rule": e["rule"], "Why": e["detail"]} for e in excluded]
    return ["## Excluded result files", "",
            f"{len(excluded)} file(s) broke a rule and are not in the tables above "
            "(aggregated with --exclude-invalid).", "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True), ""]


# ---------------------------------------------------------------- entry point
# The leaderboard's first words for a preset whose numbers are not results (the preset's
# ``purpose``), so that nobody quotes them.
PURPOSE_NOTES = {
    "plumbing": ("> **Plumbing only.** Preset `{preset}` checks that every stage runs end to end "
                 "(a few hundred images, one epoch per stage, an AutoAttack subset on a handful "
                 "of images): its numbers mean nothing and must not be compared or quoted. For a "
                 "meaningful result in minutes run `make run PRESET=standard`; for robustness "
                 "against sparsity, `make quick`."),
}


def build_tables(runs_dir: str | Path | list, reference_csv: str | Path | None = None, *,
                 exclude_invalid: bool = False, published_csv: str | Path | None = None,
                 purpose: str = "benchmark"
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(leaderboard, S2AP paired table or None, markdown text) without writing anything.

    The files excluded under ``exclude_invalid`` are in ``leaderboard.attrs["excluded"]``
    ({file, rule, detail} each) and in the markdown's last section. ``published_csv``: the
    published run's leaderboard, compared cell by cell (benchmark.published)."""
    records, excluded = load_checked(runs_dir, exclude_invalid=exclude_invalid)
    current = stage_code_digest()
    for r in records:
        r["stale"] = r["stage_code"] != current
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[_group_key(r)].append(r)
    rows = sorted((_pool(k, v) for k, v in groups.items()), key=_sort_key)
    ref_note = None
    if reference_csv is not None:
        ref, ref_note = load_reference(reference_csv)
        add_reference(rows, ref)
    published_note = None
    if published_csv is not None:
        published = load_published(published_csv)
        add_published(rows, published)
        revs = sorted({str(v)[:12] for v in published.get("revision", []) if isinstance(v, str) and v})
        published_note = f"{published_csv}" + (f", revision {', '.join(revs)}" if revs else "")
    pairs = s2ap_pairs(rows)
    df = pd.DataFrame([{k: v for k, v in row.items() if k != "_runs"} for row in rows])
    if df.empty:
        df = pd.DataFrame(columns=["dataset", "arch", "method", "s2ap", "sparsity", "n_seeds"])
    else:
        diag_cols = sorted(c for c in df.columns if c.startswith("diag."))
        df = df[[c for c in df.columns if not c.startswith("diag.")] + diag_cols]
    df.attrs["excluded"] = excluded

    folder = Path(runs_dir) if not isinstance(runs_dir, (list, tuple)) else None
    preset = next((r["preset"] for r in records if r.get("preset")), None) or (
        "" if folder is None else folder.parent.name if folder.name == "runs" else folder.name)
    md = [_header(df, preset, records, published_note) if not df.empty
          else f"# Leaderboard: {preset}\n\nNo results.\n"]
    if purpose in PURPOSE_NOTES:  # right under the title, before any number
        title, _, rest = md[0].partition("\n")
        md[0] = f"{title}\n\n{PURPOSE_NOTES[purpose].format(preset=preset)}\n{rest}"
    if not df.empty:
        table, used = _leaderboard_md(df, reference_csv is not None, pairs, published_note is not None)
        md += ["## Leaderboard", "", table]
        if used:
            md += ["Flags (the `flag` column of leaderboard.csv has each one's detail):", "",
                   flag_legend.legend_markdown(used), ""]
    if ref_note is not None:
        md += [f"Ref. columns: published numbers ({ref_note}), shown for the original method "
               "only where dataset, architecture, method, structure, sparsity, eps and the number "
               "of AutoAttack images all match (benchmark/reference.py); — where nothing does.", ""]
    if pairs is not None:
        md += ["## S2AP: original vs S2AP (AutoAttack and PGD accuracy)", "",
               "Δ = S2AP − original in percentage points, over the seeds that are not degenerate "
               "(left-out seeds are listed). Which number to trust: the 95% CI over seeds (a "
               "Student-t interval of the mean of the per-seed Δs, — below 3 paired seeds) is the "
               "evidence for or against a METHOD effect, because it includes how much a result "
               "moves from one seed (dense model, search) to the next. The McNemar p (exact test "
               "on the per-image flags of the paired seeds) only says whether these particular "
               "models differ on these test images; with thousands of images it is tiny for "
               "differences the next seed reverses, so do not read it as the effect of S2AP. "
               "n/a: the method learns no scores, so S2AP does not apply.", "",
               _pairs_md(pairs), ""]
    flips = None if df.empty else _flips_md(df)
    if flips is not None:
        md += ["## S2AP's score step: mask flips per search epoch", "",
               "Share of the kept weights whose mask entry the score perturbation z flips, "
               "|M(s+z) xor M(s)| / (2 · kept), mean over the epoch's steps, then over seeds "
               "(— in the warm-up, where the step does not run). Under the straight-through "
               "estimator a step that flips nothing is the plain method's step: a run with more "
               "than half of its steps without a flip is flagged S2AP inactive. Per seed: the "
               "`diag.s2ap_*` columns of the result files.", "", flips, ""]
    if excluded:
        md += _excluded_md(excluded)
    return df, pairs, "\n".join(md)


def aggregate(runs_dir: str | Path | list, out_dir: str | Path,
              reference_csv: str | Path | None = None, *,
              exclude_invalid: bool = False, published_csv: str | Path | None = None,
              purpose: str = "benchmark") -> pd.DataFrame:
    """Reads the result JSONs under runs_dir, writes leaderboard.csv and leaderboard.md (and
    s2ap_paired.csv when S2AP pairs exist, excluded.csv when files were excluded) atomically into
    out_dir; returns the leaderboard. Raises AggregationError (a ValueError) rather than pool
    incomparable results or believe a file that breaks a rule; nothing is written then."""
    df, pairs, md = build_tables(runs_dir, reference_csv, exclude_invalid=exclude_invalid,
                                 published_csv=published_csv, purpose=purpose)
    excluded = df.attrs.get("excluded") or []
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "leaderboard.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / "leaderboard.md", md)
    # a table from an earlier aggregation would contradict this leaderboard
    if pairs is not None:
        atomic_write_text(out_dir / "s2ap_paired.csv", pairs.to_csv(index=False))
    else:
        (out_dir / "s2ap_paired.csv").unlink(missing_ok=True)
    if excluded:
        atomic_write_text(out_dir / "excluded.csv", pd.DataFrame(excluded).to_csv(index=False))
    else:
        (out_dir / "excluded.csv").unlink(missing_ok=True)
    return df


# columns of text that can look like numbers (a revision or hash of digits only: "0123456789")
TEXT_COLUMNS = ("revision", "config_hash", "seeds", "orig_config", "s2ap_config",
                "published_revision", "flag", "aa_attacks")


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Reads leaderboard.csv / s2ap_paired.csv back. pandas' default would turn the s2ap value
    'n/a' into NaN, and a revision of digits into a number; only empty cells are missing values
    here."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={c: str for c in TEXT_COLUMNS})


def runs_frame(runs_dir: str | Path | list, *, exclude_invalid: bool = False) -> pd.DataFrame:
    """One row per result file (per seed), diagnostics flattened: the input of plot_diagnostics
    when per-seed detail is wanted."""
    rows = []
    for r in load_runs(runs_dir, exclude_invalid=exclude_invalid):
        row = {k: v for k, v in r.items() if k not in ("diagnostics",) and not k.endswith("_flags")}
        for name in METRICS:
            if r[f"{name}_n"]:
                row[name] = 100.0 * r[f"{name}_correct"] / r[f"{name}_n"]
        row.update(r["diagnostics"])
        rows.append(row)
    return pd.DataFrame(rows)


__all__: Iterable[str] = ("aggregate", "build_tables", "read_leaderboard", "load_runs", "load_checked",
                          "load_reference", "s2ap_pairs", "runs_frame", "AggregationError")
