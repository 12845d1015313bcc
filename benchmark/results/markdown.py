"""The leaderboard as markdown: the header (revisions, dirty trees), the compact table per dataset
and architecture with its flag legend, the S2AP table, the mask-flip table and the excluded files.
Same inputs, same bytes: no timestamp."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

from benchmark.results import flags as flag_legend
from benchmark.results import md_escape
from benchmark.results.loading import DASH, fmt_sparsity
from benchmark.results.published import published_cell


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


def leaderboard_md(df: pd.DataFrame, has_ref: bool, pairs: pd.DataFrame | None = None,
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
                "Sparsity (%)": fmt_sparsity(r["sparsity"]),
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
                  md_escape.table(rows), ""]
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


def pairs_md(pairs: pd.DataFrame) -> str:
    rows = []
    for _, r in pairs.iterrows():
        na = not r["s2ap_applicable"]
        row = {"Dataset": r["dataset"], "Arch": r["arch"], "Method": r["method"],
               "Sparsity (%)": fmt_sparsity(r["sparsity"])}
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
    return md_escape.table(rows)


FLIP_EPOCH = "diag.s2ap_flip_fraction_by_epoch[{}]"


def _pct(fraction: Any) -> Any:
    """A fraction in percent; None (shown as "—" by ``_num``) stays None."""
    return None if fraction is None else 100.0 * fraction


def flips_md(df: pd.DataFrame) -> str | None:
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
               "Sparsity (%)": fmt_sparsity(r["sparsity"]), "gamma": f"{r['diag.s2ap_gamma']:g}"}
        for i in range(epochs):
            row[f"Epoch {i + 1} (%)"] = _num(_pct(r.get(FLIP_EPOCH.format(i))), 3)
        row["All steps (%)"] = _num(_pct(r["diag.s2ap_flip_fraction"]), 3)
        row["Steps without a flip (%)"] = _num(_pct(r.get("diag.s2ap_noflip_fraction")), 1)
        row["Seeds"] = int(r["n_seeds"])
        out.append(row)
    return md_escape.table(out)


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


def header_md(df: pd.DataFrame, preset: str, records: list[dict],
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


def excluded_md(excluded: list[dict[str, str]]) -> list[str]:
    rows = [{"File": e["file"], "Rule": e["rule"], "Why": e["detail"]} for e in excluded]
    return ["## Excluded result files", "",
            f"{len(excluded)} file(s) broke a rule and are not in the tables above "
            "(aggregated with --exclude-invalid).", "",
            md_escape.table(rows), ""]


