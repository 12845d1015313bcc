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
the current one (``stale``).

The S2AP table (paper layout: Orig. AA, S2AP AA, delta) appears when some cell has both s2ap
'off' and 'on' results. Its p-value is an exact McNemar test on the per-image AutoAttack flags of
the seeds both sides share (flags of seed s of 'off' paired with seed s of 'on', concatenated).
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmark.errors import CorruptFileError
from benchmark.io import atomic_write_text
from benchmark.provenance import stage_code_digest
from benchmark.results import ResultError, pgd_broken_aa_robust, read_result
from benchmark.stats import mcnemar, wilson_interval

METRICS = ("clean", "pgd", "autoattack")
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
    return rec


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


# ---------------------------------------------------------------- reference numbers
def load_reference(reference_csv: str | Path) -> tuple[pd.DataFrame, str]:
    """The published leaderboard (reference/ap_benchmark_leaderboard.csv format) and its source
    note (the CSV's leading '#' lines)."""
    path = Path(reference_csv)
    notes = []
    with open(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            notes.append(line.lstrip("#").strip())
    ref = pd.read_csv(path, comment="#")
    need = {"dataset", "method", "arch", "sparsity", "clean", "autoattack"}
    missing = need - set(ref.columns)
    if missing:
        raise AggregationError(f"reference CSV {path} lacks columns {sorted(missing)}")
    if "structure" not in ref.columns:
        ref["structure"] = "unstructured"
    ref["_key"] = [(str(d).lower(), str(s).lower(), str(m).lower(), str(a).lower(), float(sp))
                   for d, s, m, a, sp in zip(ref["dataset"], ref["structure"], ref["method"],
                                             ref["arch"], ref["sparsity"])]
    return ref, " ".join(notes) or f"source: {path}"


def _add_reference(rows: list[dict], ref: pd.DataFrame) -> None:
    lookup = {k: (c, a) for k, c, a in zip(ref["_key"], ref["clean"], ref["autoattack"])}
    for row in rows:
        row["ref_clean"] = row["ref_autoattack"] = math.nan
        if row["method"] == "dense" or row["s2ap"] == "on":
            continue  # the published numbers are the original methods'
        key = (row["dataset"].lower(), row["structure"], row["method"].lower(), row["arch"].lower(),
               float(row["sparsity"]))
        if key in lookup:
            row["ref_clean"], row["ref_autoattack"] = (float(v) for v in lookup[key])


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


def _paired_p(off: dict, on: dict) -> tuple[float, int, int | None, int | None]:
    by_seed_off = {str(r["seed"]): r["autoattack_flags"] for r in off["_runs"]}
    by_seed_on = {str(r["seed"]): r["autoattack_flags"] for r in on["_runs"]}
    common = sorted(s for s in set(by_seed_off) & set(by_seed_on)
                    if by_seed_off[s] and by_seed_on[s] and len(by_seed_off[s]) == len(by_seed_on[s]))
    if not common:
        return math.nan, 0, None, None
    res = mcnemar("".join(by_seed_off[s] for s in common), "".join(by_seed_on[s] for s in common))
    return res["p_value"], len(common), res["b"], res["c"]


def s2ap_pairs(rows: list[dict]) -> pd.DataFrame | None:
    """Paper layout: per (dataset, arch, method, sparsity) Orig. AA, S2AP AA, delta, McNemar p.
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
            out.append({**base, "s2ap_applicable": False, "orig_aa": row["autoattack"],
                        "s2ap_aa": math.nan, "delta": math.nan, "p_value": math.nan,
                        "paired_seeds": 0, "b": None, "c": None,
                        "orig_config": row["config_hash"], "s2ap_config": None})
        offs, ons = sides.get("off", []), sides.get("on", [])
        if offs and ons:
            for off in offs:
                for on in ons:
                    _comparable(off, on)
                    p, k, b, c = _paired_p(off, on)
                    out.append({**base, "s2ap_applicable": True,
                                "orig_aa": off["autoattack"], "s2ap_aa": on["autoattack"],
                                "delta": on["autoattack"] - off["autoattack"], "p_value": p,
                                "paired_seeds": k, "b": b, "c": c,
                                "orig_config": off["config_hash"], "s2ap_config": on["config_hash"]})
        else:
            for off in offs:
                out.append({**base, "s2ap_applicable": True,
                            "orig_aa": off["autoattack"], "s2ap_aa": math.nan,
                            "delta": math.nan, "p_value": math.nan, "paired_seeds": 0, "b": None,
                            "c": None, "orig_config": off["config_hash"], "s2ap_config": None})
            for on in ons:
                out.append({**base, "s2ap_applicable": True,
                            "orig_aa": math.nan, "s2ap_aa": on["autoattack"],
                            "delta": math.nan, "p_value": math.nan, "paired_seeds": 0, "b": None,
                            "c": None, "orig_config": None, "s2ap_config": on["config_hash"]})
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


def _leaderboard_md(df: pd.DataFrame, has_ref: bool) -> str:
    cols = []
    for _, r in df.iterrows():
        c = {
            "Dataset": r["dataset"], "Arch": r["arch"], "Method": r["method"], "S2AP": r["s2ap"],
            "Sparsity (%)": _fmt_sparsity(r["sparsity"]),
            "Measured (%)": _num(r["sparsity_measured"]),
            "Clean (%)": _num(r["clean"]),
            "Clean 95% CI": (f"[{r['clean_lo']:.1f}, {r['clean_hi']:.1f}]"
                             if not math.isnan(r["clean_lo"]) else DASH),
            "PGD (%)": _num(r["pgd"]),
            "AA (%)": _num(r["autoattack"]),
            "AA 95% CI": (f"[{r['autoattack_lo']:.1f}, {r['autoattack_hi']:.1f}]"
                          if not math.isnan(r["autoattack_lo"]) else DASH),
            "AA std": _num(r["autoattack_std"]),
            "Clean std": _num(r["clean_std"]),
            "n (AA)": _num(r["autoattack_n"], 0),
            "Seeds": int(r["n_seeds"]),
            "eps": _num(r["eps"], 4),
            "AA version": _aa_label(r),
            "Flag": r["flag"] or "",
        }
        if has_ref:
            c["Ref. clean"] = _num(r["ref_clean"])
            c["Ref. AA"] = _num(r["ref_autoattack"])
        cols.append(c)
    return pd.DataFrame(cols).to_markdown(index=False, disable_numparse=True)


def _aa_label(r: Any) -> str:
    if r["aa_version"] is None or (isinstance(r["aa_version"], float) and math.isnan(r["aa_version"])):
        return DASH
    return r["aa_version"] if r["aa_standard"] else f"{r['aa_version']}[{r['aa_attacks']}]"


def _pairs_md(pairs: pd.DataFrame) -> str:
    rows = []
    for _, r in pairs.iterrows():
        na = not r["s2ap_applicable"]
        rows.append({
            "Dataset": r["dataset"], "Arch": r["arch"], "Method": r["method"],
            "Sparsity (%)": _fmt_sparsity(r["sparsity"]),
            "Orig. AA (%)": _num(r["orig_aa"]),
            "S2AP AA (%)": "n/a" if na else _num(r["s2ap_aa"]),
            "Δ (pp)": "n/a" if na else (DASH if math.isnan(r["delta"]) else f"{r['delta']:+.2f}"),
            "McNemar p": "n/a" if na else (DASH if math.isnan(r["p_value"]) else f"{r['p_value']:.3g}"),
            "Paired seeds": "n/a" if na else int(r["paired_seeds"]),
        })
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _values(df: pd.DataFrame, col: str) -> list:
    return sorted({v for v in df[col].tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))},
                  key=str)


def _header(df: pd.DataFrame, preset: str, records: list[dict]) -> str:
    eps = _values(df, "eps")
    aa = sorted({_aa_label(r) for _, r in df.iterrows()})
    n_aa = _values(df, "autoattack_n")
    steps = _values(df, "pgd_steps")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Leaderboard: {preset}",
        "",
        f"Generated {date} from {len(records)} result files.",
        "",
        f"- Threat model: L-inf, eps = {', '.join(_num(e, 4) for e in eps) or DASH}"
        + (" (differs between rows: see the eps column)" if len(eps) > 1 else ""),
        f"- AutoAttack: {', '.join(aa) or DASH}; images per seed: "
        f"{', '.join(str(int(v)) for v in n_aa) or DASH}; first images of the test set, in order",
        f"- PGD: {', '.join(str(int(s)) for s in steps) or DASH} steps, one random start",
        "- Accuracies in %, mean over seeds (± std across seeds when there are several; "
        f"{DASH} for a single seed); 95% CI: Wilson interval on counts pooled over seeds",
        "- Flag: warnings = AutoAttack or Python warnings during the run; lowered-after-apgd = "
        "FAB-T or Square broke images APGD had left (the APGD attacks alone were not enough); "
        "non-standard-AA = an attack subset, not AutoAttack standard; pgd-broke-aa-robust:K = "
        "K images robust to AutoAttack were broken by PGD (legitimate: the attacks run "
        "independently); dirty-tree = made from a checkout with uncommitted changes to tracked "
        "files; no-revision = made outside a git checkout; stale-code = made by stage code other "
        "than the current one (rerun it)",
        "- Measured (%): zero Conv2d/Linear weights of the evaluated model",
        "",
    ]
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
                 exclude_invalid: bool = False, purpose: str = "benchmark"
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(leaderboard, S2AP paired table or None, markdown text) without writing anything.

    The files excluded under ``exclude_invalid`` are in ``leaderboard.attrs["excluded"]``
    ({file, rule, detail} each) and in the markdown's last section."""
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
        _add_reference(rows, ref)
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
    md = [_header(df, preset, records) if not df.empty else f"# Leaderboard: {preset}\n\nNo results.\n"]
    if purpose in PURPOSE_NOTES:  # right under the title, before any number
        title, _, rest = md[0].partition("\n")
        md[0] = f"{title}\n\n{PURPOSE_NOTES[purpose].format(preset=preset)}\n{rest}"
    if not df.empty:
        md += ["## Leaderboard", "", _leaderboard_md(df, reference_csv is not None), ""]
    if ref_note is not None:
        md += [f"Ref. columns: published numbers ({ref_note}). They were measured under the "
               "published protocol (AutoAttack standard, eps 0.031, first 10,000 test images) and "
               "are comparable only where eps, images and AutoAttack version match ours.", ""]
    if pairs is not None:
        md += ["## S2AP: original vs S2AP (AutoAttack accuracy)", "",
               "Δ = S2AP − original in percentage points; McNemar p: exact test on per-image "
               "AutoAttack flags over the seeds both sides share; n/a: the method learns no "
               "scores, so S2AP does not apply.", "", _pairs_md(pairs), ""]
    if excluded:
        md += _excluded_md(excluded)
    return df, pairs, "\n".join(md)


def aggregate(runs_dir: str | Path | list, out_dir: str | Path,
              reference_csv: str | Path | None = None, *,
              exclude_invalid: bool = False, purpose: str = "benchmark") -> pd.DataFrame:
    """Reads the result JSONs under runs_dir, writes leaderboard.csv and leaderboard.md (and
    s2ap_paired.csv when S2AP pairs exist, excluded.csv when files were excluded) atomically into
    out_dir; returns the leaderboard. Raises AggregationError (a ValueError) rather than pool
    incomparable results or believe a file that breaks a rule; nothing is written then."""
    df, pairs, md = build_tables(runs_dir, reference_csv, exclude_invalid=exclude_invalid,
                                 purpose=purpose)
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


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Reads leaderboard.csv / s2ap_paired.csv back. pandas' default would turn the s2ap value
    'n/a' into NaN; only empty cells are missing values here."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


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
