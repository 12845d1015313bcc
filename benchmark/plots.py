"""Plots from the leaderboard DataFrame (benchmark.aggregate): PNG files, written atomically.

matplotlib is imported inside the functions with the Agg backend, so importing this module (or
the aggregation) needs no display and no matplotlib start-up cost.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .io import atomic_output

METRIC_TITLES = {"clean": "Clean", "pgd": "PGD", "autoattack": "AutoAttack"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def _slug(*parts: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")


def _finite(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _series_label(method: str, s2ap: str) -> str:
    # s2ap read back from a CSV by plain pd.read_csv turns 'n/a' into NaN
    return f"{method} (S2AP {s2ap})" if s2ap in ("on", "off") else str(method)


def plot_leaderboard(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Accuracy (clean, PGD, AutoAttack) vs nominal sparsity, one PNG per (dataset, arch).

    One line per (method, s2ap) (S2AP 'on' dashed), error bars = std across seeds, the dense
    model as a grey horizontal dashed line. Returns the files written.
    """
    if df is None or df.empty:
        return []
    plt = _plt()
    out_dir = Path(out_dir)
    metrics = [m for m in METRIC_TITLES if m in df.columns and df[m].notna().any()]
    written = []
    for (dataset, arch), block in df.groupby(["dataset", "arch"], sort=True, dropna=False):
        if not metrics:
            break
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
        dense = block[block["method"] == "dense"]
        pruned = block[block["method"] != "dense"]
        for ax, metric in zip(axes[0], metrics):
            for _, d in dense.iterrows():
                if _finite(d[metric]):
                    ax.axhline(d[metric], color="grey", linestyle="--", linewidth=1,
                               label="dense")
            for (method, s2ap), line in pruned.groupby(["method", "s2ap"], sort=True, dropna=False):
                line = line.sort_values("sparsity")
                line = line[line[metric].notna()]
                if line.empty:
                    continue
                std = line.get(f"{metric}_std")
                yerr = None if std is None else std.fillna(0.0).to_numpy()
                ax.errorbar(line["sparsity"].to_numpy(), line[metric].to_numpy(), yerr=yerr,
                            marker="o", capsize=3, linestyle="--" if s2ap == "on" else "-",
                            label=_series_label(method, s2ap))
            ax.set_title(f"{METRIC_TITLES[metric]} accuracy")
            ax.set_xlabel("nominal sparsity (%)")
            ax.set_ylabel("accuracy (%)")
            ax.grid(True, alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        if uniq:
            fig.legend(uniq.values(), uniq.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5),
                       fontsize=8)
        fig.suptitle(f"{dataset} / {arch}", y=1.03)
        written.append(_save(fig, out_dir / f"accuracy_{_slug(dataset, arch)}.png"))
        plt.close(fig)
    return written


# The panels of the diagnostics figure: what S2AP is meant to change, in the paper's terms.
# Radius-indexed keys (stability_random_r0.05, ...) are matched by prefix and drawn one line per
# radius; the other keys are single panels. Bookkeeping keys (diag_batch, diag_loss, stds) are left
# out: they would only crowd the figure.
DIAGNOSTIC_PANELS = [
    ("mask_robust_acc", "mask robust acc. (val PGD, before finetune)"),
    ("stability_random_r", "mask flips, random z"),
    ("stability_worst_r", "mask flips, worst-case z"),
    ("sharpness_r", "score-space sharpness (loss increase)"),
    ("hessian_top_eig", "top eigenvalue of the score Hessian"),
    ("seed_flip_fraction", "mask flips between two search seeds"),
]


def _diag_columns(df: pd.DataFrame, key: str) -> list[str]:
    cols = [c for c in df.columns if str(c).startswith("diag.") and df[c].notna().any()
            and pd.api.types.is_numeric_dtype(df[c])]
    if key.endswith("_r"):
        by_radius = {float(c[len("diag.") + len(key):]): c for c in cols
                     if c[len("diag."):].startswith(key)
                     and c[len("diag.") + len(key):].replace(".", "", 1).isdigit()}
        if not by_radius:
            return []
        # one radius per panel keeps one line per method: 0.05 (the default sharpness radius,
        # above S2AP's training gamma) when measured, else the largest
        return [by_radius.get(0.05, by_radius[max(by_radius)])]
    return [c for c in cols if c == f"diag.{key}"]


def plot_diagnostics(df_or_runs: pd.DataFrame | str | Path, out_dir: str | Path) -> list[Path]:
    """One figure per (dataset, arch): a panel per diagnostic (``DIAGNOSTIC_PANELS``) against
    nominal sparsity, one line per (method, S2AP setting) -- dashed with S2AP on -- so S2AP on and
    off sit side by side; radius-indexed diagnostics are shown at one radius (``_diag_columns``).
    Error bars are the std across seeds.

    Accepts the leaderboard (seed means) or a runs folder / runs frame (seeds averaged here).
    Writes nothing when there is no diagnostics column.
    """
    if isinstance(df_or_runs, (str, Path, list, tuple)):
        from benchmark.aggregate import runs_frame

        df = runs_frame(df_or_runs)
    else:
        df = df_or_runs
    if df is None or df.empty:
        return []
    panels = [(title, _diag_columns(df, key)) for key, title in DIAGNOSTIC_PANELS]
    panels = [(title, cols) for title, cols in panels if cols]
    if not panels:
        return []
    plt = _plt()
    out_dir = Path(out_dir)
    written = []
    keys = ["dataset", "arch", "method", "s2ap", "sparsity"]
    for (dataset, arch), block in df.groupby(["dataset", "arch"], sort=True, dropna=False):
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
        for ax, (title, cols) in zip(axes.flat, panels):
            col = cols[0]
            stats = (block[block[col].notna()].groupby(keys, sort=True, dropna=False)[col]
                     .agg(["mean", "std"]).reset_index())
            for (method, s2ap), line in stats.groupby(["method", "s2ap"], sort=True, dropna=False):
                line = line.sort_values("sparsity")
                ax.errorbar(line["sparsity"].to_numpy(), line["mean"].to_numpy(),
                            yerr=line["std"].fillna(0.0).to_numpy(), marker="o", capsize=3,
                            linestyle="--" if s2ap in ("on", "score") else "-",
                            label=_series_label(method, s2ap))
            radius = col.rsplit("_r", 1)[-1] if "_r" in col else None
            ax.set_title(title + (f" (r = {radius})" if radius else ""), fontsize=9)
            ax.set_xlabel("nominal sparsity (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(f"Mask diagnostics: {dataset} / {arch}")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"diagnostics_{_slug(dataset, arch)}.png"))
        plt.close(fig)
    return written
