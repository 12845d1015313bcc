"""Plots from the leaderboard DataFrame (benchmark.results.aggregate): PNG files, written atomically,
and the drawing they share with the site's SVG plots (benchmark.results.site_plots): one
matplotlib path for both.

matplotlib is imported inside the functions with the Agg backend, so importing this module (or
the aggregation) needs no display and no matplotlib start-up cost.

Conventions: accuracies and fractions in % everywhere; accuracy whiskers are the Wilson 95 %
interval on the images (so one seed still shows its uncertainty: 100 images give about +-10
points), not the spread across seeds; one colour per method (S2AP's score step dashed, hollow
diamonds); sparsities sit at evenly spaced positions and the series are dodged sideways, so equal
points stay visible; one legend per figure. Every point is drawn as its own errorbar artist, so
each leaderboard row has artists of its own (the site gives them ids).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.core.io import atomic_output
from benchmark.core.stats import wilson_interval
from benchmark.results.aggregate import runs_frame

METRIC_TITLES = {"clean": "Clean", "pgd": "PGD", "autoattack": "AutoAttack"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")
DENSE_COLOR = "#555555"


def method_colors(methods: Any) -> dict[str, str]:
    """One colour per method, stable across the plots of a figure or page (dense is grey)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted({str(m) for m in methods} - {"dense"}))}


def dodge_offsets(n: int, width: float = 0.5) -> list[float]:
    """Sideways offsets (in category units) for n series, centred on 0 and at most ``width`` wide."""
    if n <= 1:
        return [0.0] * n
    step = min(width / (n - 1), 0.12)
    return [(i - (n - 1) / 2) * step for i in range(n)]


def _plt():
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # deferred: matplotlib

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
    return f"{method} (S2AP {s2ap})" if s2ap in ("on", "off", "score", "awp") else str(method)


def _dashed(s2ap: Any) -> bool:
    return s2ap in ("on", "score")


def point_artists(container: Any) -> list[Any]:
    """The artists of one errorbar point: marker, caps, whisker lines."""
    line, caps, bars = container.lines
    return [a for a in (line, *caps, *bars) if a is not None]


def draw_point(ax: Any, x: float, y: float, *, color: str, dashed: bool = False, yerr: Any = None,
               xerr: Any = None, marker: str | None = None, label: str = "_nolegend_",
               dashed_whisker: bool = False) -> Any:
    """One point with its whiskers (``yerr``/``xerr``: (below, above) distances); the linestyle only
    shows in the legend. Returns the ErrorbarContainer."""

    def err(e):
        return None if e is None else [[float(e[0])], [float(e[1])]]

    c = ax.errorbar([x], [y], yerr=err(yerr), xerr=err(xerr), marker=marker or ("D" if dashed else "o"),
                    markersize=5, capsize=3, color=color, linestyle="--" if dashed else "-",
                    mfc="white" if dashed else color, label=label)
    if dashed_whisker:
        for bars in c.lines[2]:
            bars.set_linestyle((0, (3, 2)))
    return c


def draw_series(ax: Any, xs: list[float], ys: list[float], *, color: str, dashed: bool, label: str,
                yerr: tuple[list[float], list[float]] | None = None, lines: list | None = None) -> list[Any]:
    """A line through the points plus one errorbar per point (the first carries the legend label).
    Returns the points' ErrorbarContainers, in order; the line goes to ``lines`` when given."""
    if len(xs) > 1:
        (line,) = ax.plot(xs, ys, color=color, linestyle="--" if dashed else "-", linewidth=1.5,
                          label="_nolegend_")
        if lines is not None:
            lines.append(line)
    return [draw_point(ax, x, y, color=color, dashed=dashed, label=label if i == 0 else "_nolegend_",
                       yerr=None if yerr is None else (yerr[0][i], yerr[1][i]))
            for i, (x, y) in enumerate(zip(xs, ys))]


def wilson_whiskers(rows: pd.DataFrame, metric: str) -> tuple[Any, Any] | None:
    """(lower, upper) distances in points from each row's value to its Wilson 95 % bounds: the
    leaderboard's ``<metric>_lo/_hi`` when present, else from the pooled count (mean accuracy x
    images per seed x seeds). None when no row has an interval."""

    lo, hi = [], []
    for _, r in rows.iterrows():
        v = r[metric]
        a, b = r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
        if not (_finite(a) and _finite(b)):
            n, seeds = r.get(f"{metric}_n"), r.get("n_seeds", 1)
            if _finite(n) and _finite(v) and float(n) > 0:
                total = int(round(float(n) * (float(seeds) if _finite(seeds) else 1.0)))
                a, b = (100.0 * x for x in wilson_interval(int(round(float(v) / 100.0 * total)), total))
            else:
                a = b = v
        lo.append(max(float(v) - float(a), 0.0) if _finite(v) else 0.0)
        hi.append(max(float(b) - float(v), 0.0) if _finite(v) else 0.0)
    return (lo, hi) if any(x > 0 for x in lo + hi) else None


def _positions(values: Any) -> dict[float, int]:
    return {s: i for i, s in enumerate(sorted({float(v) for v in values}))}


def _set_sparsity_axis(ax: Any, positions: dict[float, int]) -> None:
    ax.set_xticks(list(positions.values()))
    ax.set_xticklabels([f"{s:g}" for s in positions])
    ax.set_xlim(-0.5, len(positions) - 0.5)
    ax.set_xlabel("nominal sparsity (%)")


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend for the figure: the series repeat in every panel."""
    uniq: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            uniq.setdefault(label, handle)
    if uniq:
        fig.legend(list(uniq.values()), list(uniq.keys()), loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=8)


def accuracy_panel(ax: Any, block: pd.DataFrame, metric: str, colors: dict[str, str] | None = None,
                   series_lines: list | None = None) -> list[tuple[dict, list[Any]]]:
    """One panel: ``metric`` (%) vs nominal sparsity, a line per (method, S2AP) with Wilson
    whiskers, the dense model as a grey dotted line. Returns (row, its artists) per drawn row;
    ``series_lines`` gets (the rows a line joins, the line) for each line."""
    colors = colors if colors is not None else method_colors(block["method"])
    dense = block[block["method"] == "dense"]
    pruned = block[block["method"] != "dense"]
    positions = _positions(pruned["sparsity"]) if not pruned.empty else {0.0: 0}
    series = sorted({(str(m), str(s)) for m, s in zip(pruned["method"], pruned["s2ap"])})
    offsets = dict(zip(series, dodge_offsets(len(series))))
    drawn = []
    for _, d in dense.iterrows():
        if _finite(d[metric]):
            line = ax.axhline(d[metric], color=DENSE_COLOR, linestyle=":", linewidth=1.2, label="dense")
            drawn.append((d.to_dict(), [line]))
    for (method, s2ap), line in pruned.groupby(["method", "s2ap"], sort=True, dropna=False):
        line = line.sort_values("sparsity")
        line = line[line[metric].notna()]
        if line.empty:
            continue
        x = [positions[float(v)] + offsets[(str(method), str(s2ap))] for v in line["sparsity"]]
        drawn_line: list = []
        points = draw_series(ax, x, [float(v) for v in line[metric]], color=colors.get(str(method), PALETTE[0]),
                             dashed=_dashed(s2ap), label=_series_label(method, s2ap),
                             yerr=wilson_whiskers(line, metric), lines=drawn_line)
        drawn += [(r, point_artists(c)) for r, c in zip(line.to_dict("records"), points)]
        if series_lines is not None and drawn_line:
            series_lines.append((line.to_dict("records"), drawn_line[0]))
    _set_sparsity_axis(ax, positions)
    ax.set_ylabel(f"{METRIC_TITLES.get(metric, metric)} accuracy (%)")
    ax.grid(True, alpha=0.3)
    return drawn


def accuracy_figure(block: pd.DataFrame, metrics: list[str], title: str = "") -> Any:
    """The figure of one (dataset, arch): a panel per metric, accuracy (%) vs nominal sparsity."""

    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    colors = method_colors(block["method"])
    for ax, metric in zip(axes[0], metrics):
        accuracy_panel(ax, block, metric, colors)
        ax.set_title(f"{METRIC_TITLES[metric]} accuracy")
    _figure_legend(fig, axes[0])
    fig.suptitle(title + ("\n" if title else "") + "whiskers: Wilson 95 % interval on the images",
                 y=1.06, fontsize=10)
    return fig


def plot_leaderboard(df: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Accuracy (clean, PGD, AutoAttack) vs nominal sparsity, one PNG per (dataset, arch).

    One line per (method, s2ap) (S2AP's score step dashed, hollow diamonds), Wilson 95 % whiskers,
    series dodged sideways, the dense model as a grey dotted line. Returns the files written.
    """
    if df is None or df.empty:
        return []
    plt = _plt()
    out_dir = Path(out_dir)
    metrics = [m for m in METRIC_TITLES if m in df.columns and df[m].notna().any()]
    written = []
    if not metrics:
        return written
    for (dataset, arch), block in df.groupby(["dataset", "arch"], sort=True, dropna=False):
        fig = accuracy_figure(block, metrics, title=f"{dataset} / {arch}")
        written.append(_save(fig, out_dir / f"accuracy_{_slug(dataset, arch)}.png"))
        plt.close(fig)
    return written


# The panels of the diagnostics figure: what S2AP is meant to change, in the paper's terms:
# (key, title, y label, scale). Fractions are shown in % (scale 100) like every accuracy.
# Radius-indexed keys (stability_random_r0.05, ...) are matched by prefix and drawn at one radius;
# the other keys are single panels. Bookkeeping keys (diag_batch, diag_loss, stds) are left out:
# they would only crowd the figure.
DIAGNOSTIC_PANELS = [
    ("mask_robust_acc", "mask robust accuracy (val PGD, before finetune)", "accuracy (%)", 100.0),
    ("stability_random_r", "mask flips, random z", "weights flipped (%)", 100.0),
    ("stability_worst_r", "mask flips, worst-case z", "weights flipped (%)", 100.0),
    ("sharpness_r", "score-space sharpness", "loss increase", 1.0),
    ("hessian_top_eig", "top eigenvalue of the score Hessian", "eigenvalue", 1.0),
    ("seed_flip_fraction", "mask flips between two search seeds", "weights flipped (%)", 100.0),
]


def _diag_column(df: pd.DataFrame, key: str) -> tuple[str, float | None] | None:
    """(column, radius or None) of a panel, or None when the diagnostic was not measured. A
    radius-indexed key is shown at one radius, so each panel keeps one line per method: 0.05 (the
    default sharpness radius, above S2AP's training gamma) when measured, else the largest."""
    cols = [c for c in df.columns if str(c).startswith("diag.") and df[c].notna().any()
            and pd.api.types.is_numeric_dtype(df[c])]
    if key.endswith("_r"):
        prefix = f"diag.{key}"
        by_radius = {}
        for c in cols:
            rest = c[len(prefix):] if c.startswith(prefix) else ""
            try:
                by_radius[float(rest)] = c
            except ValueError:
                continue
        if not by_radius:
            return None
        radius = 0.05 if 0.05 in by_radius else max(by_radius)
        return by_radius[radius], radius
    return (f"diag.{key}", None) if f"diag.{key}" in cols else None


def diagnostics_panels(df: pd.DataFrame) -> list[tuple[str, str, float, str, float | None]]:
    """(title, y label, scale, column, radius) of every panel with data."""
    out = []
    for key, title, ylabel, scale in DIAGNOSTIC_PANELS:
        hit = _diag_column(df, key)
        if hit is not None:
            col, radius = hit
            out.append((title + (f" (r = {radius:g})" if radius is not None else ""), ylabel, scale,
                        col, radius))
    return out


def diagnostics_figure(block: pd.DataFrame, panels: list, title: str = "") -> Any:

    plt = _plt()
    keys = ["dataset", "arch", "method", "s2ap", "sparsity"]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows), squeeze=False)
    pruned = block[block["method"] != "dense"]
    positions = _positions(pruned["sparsity"]) if not pruned.empty else {0.0: 0}
    series = sorted({(str(m), str(s)) for m, s in zip(pruned["method"], pruned["s2ap"])})
    offsets = dict(zip(series, dodge_offsets(len(series))))
    colors = method_colors(pruned["method"])
    for ax, (panel_title, ylabel, scale, col, _) in zip(axes.flat, panels):
        stats = (pruned[pruned[col].notna()].groupby(keys, sort=True, dropna=False)[col]
                 .agg(["mean", "std"]).reset_index())
        for (method, s2ap), line in stats.groupby(["method", "s2ap"], sort=True, dropna=False):
            line = line.sort_values("sparsity")
            x = [positions[float(v)] + offsets.get((str(method), str(s2ap)), 0.0) for v in line["sparsity"]]
            std = line["std"].to_numpy() * scale
            err = None if pd.isna(std).all() else list(pd.Series(std).fillna(0.0))
            draw_series(ax, x, [float(v) * scale for v in line["mean"]], color=colors.get(str(method), PALETTE[0]),
                        dashed=_dashed(s2ap), label=_series_label(method, s2ap),
                        yerr=None if err is None else (err, err))
        ax.set_title(panel_title, fontsize=9)
        _set_sparsity_axis(ax, positions)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _figure_legend(fig, list(axes.flat)[:len(panels)])
    fig.suptitle((title + "\n" if title else "") + "whiskers: std across seeds (none with one seed)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_diagnostics(df_or_runs: pd.DataFrame | str | Path, out_dir: str | Path) -> list[Path]:
    """One figure per (dataset, arch): a panel per diagnostic (``DIAGNOSTIC_PANELS``) against
    nominal sparsity, one line per (method, S2AP setting) -- dashed with S2AP's score step -- so
    S2AP on and off sit side by side; radius-indexed diagnostics at one radius (``_diag_column``).
    Error bars are the std across seeds.

    Accepts the leaderboard (seed means) or a runs folder / runs frame (seeds averaged here).
    Writes nothing when there is no diagnostics column.
    """
    if isinstance(df_or_runs, (str, Path, list, tuple)):

        df = runs_frame(df_or_runs)
    else:
        df = df_or_runs
    if df is None or df.empty:
        return []
    panels = diagnostics_panels(df)
    if not panels:
        return []
    plt = _plt()
    out_dir = Path(out_dir)
    written = []
    for (dataset, arch), block in df.groupby(["dataset", "arch"], sort=True, dropna=False):
        fig = diagnostics_figure(block, panels, title=f"Mask diagnostics: {dataset} / {arch}")
        written.append(_save(fig, out_dir / f"diagnostics_{_slug(dataset, arch)}.png"))
        plt.close(fig)
    return written
