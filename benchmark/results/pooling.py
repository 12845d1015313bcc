"""Pooling the seeds of one leaderboard row (means, spreads, Wilson intervals on pooled counts)
and pairing S2AP rows with their original method (seed-level t-interval, McNemar). Part of the
aggregation (``benchmark.results.aggregate`` describes the statistics and when pooling is refused)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import pandas as pd

from benchmark.core.stats import mcnemar, seed_interval, wilson_interval
from benchmark.results.loading import METRICS, S2AP_ORDER, WILSON_METRICS, AggregationError, fmt_sparsity


# ---------------------------------------------------------------- pooling
def group_key(r: dict) -> tuple:
    return (r["dataset"], r["arch"], r["method"], r["s2ap"], r["sparsity"], r["config_hash"])


def _describe(key: tuple) -> str:
    d, a, m, s, sp, h = key
    return f"{d}/{a}/{m}/s2ap={s}/sp{fmt_sparsity(sp)} (config {h})"


def _same(runs: list[dict], field: str, what: str, key: tuple) -> Any:
    values = {json.dumps(r[field], sort_keys=True, default=str): r for r in runs}
    if len(values) > 1:
        detail = "; ".join(f"{r['file']}: {r[field]!r}" for r in values.values())
        raise AggregationError(f"refusing to pool {_describe(key)}: the seeds differ in {what} "
                               f"({detail})")
    return runs[0][field]


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


def pool_seeds(key: tuple, runs: list[dict]) -> dict[str, Any]:
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


def row_sort_key(row: dict) -> tuple:
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
                f"sp{fmt_sparsity(a['sparsity'])}: they differ in {what} ({ra[field]!r} in "
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


