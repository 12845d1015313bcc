"""The PNG plots: Wilson whiskers (also for one seed), dodged series, % everywhere, axis labels,
one legend per figure, and panel titles that name the radius only for radius-indexed panels."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from benchmark.results.plots import (
    accuracy_figure,
    diagnostics_figure,
    diagnostics_panels,
    plot_diagnostics,
    plot_leaderboard,
)


def leaderboard_rows(**extra) -> pd.DataFrame:
    """One seed per row, as benchmark.results.aggregate writes it: std NaN, Wilson bounds set."""
    rows = []
    for method, s2ap in (("hydra", "off"), ("hydra", "on")):
        for sp in (90.0, 95.0):
            rows.append({"dataset": "cifar10", "arch": "resnet18", "method": method, "s2ap": s2ap,
                         "sparsity": sp, "n_seeds": 1,
                         "clean": 80.0, "clean_std": math.nan, "clean_n": 10_000, "clean_lo": 79.2, "clean_hi": 80.8,
                         "pgd": 45.0, "pgd_std": math.nan, "pgd_n": 1000,
                         "autoattack": 41.0, "autoattack_std": math.nan, "autoattack_n": 100,
                         "autoattack_lo": 31.9, "autoattack_hi": 50.8, **extra})
    rows.append({**rows[0], "method": "dense", "s2ap": "n/a", "sparsity": 0.0, "autoattack": 49.0})
    return pd.DataFrame(rows)


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def whisker_spans(container: ErrorbarContainer) -> list[tuple[float, float]]:
    (bars,) = container.lines[2]
    return [(float(seg[0][1]), float(seg[1][1])) for seg in bars.get_segments()]


def test_whiskers_are_wilson_intervals_with_one_seed():
    df = leaderboard_rows()
    fig = accuracy_figure(df, ["clean", "pgd", "autoattack"])
    aa_ax = fig.axes[2]
    containers = errorbars(aa_ax)
    assert len(containers) == 4  # one per row (its own artists): hydra off and on, at 90 and 95
    for c in containers:
        for lo, hi in whisker_spans(c):
            assert (lo, hi) == pytest.approx((31.9, 50.8))  # not a zero-length std bar
    # PGD has no interval columns in the leaderboard: computed from the count (45 % of 1,000)
    for c in errorbars(fig.axes[1]):
        for lo, hi in whisker_spans(c):
            assert 41.0 < lo < 42.5 and 47.5 < hi < 49.0


def test_equal_points_are_dodged_apart():
    fig = accuracy_figure(leaderboard_rows(), ["autoattack"])
    xs = [float(c.lines[0].get_xdata()[0]) for c in errorbars(fig.axes[0])]
    assert len(xs) == 4
    for slot in (0, 1):  # same values at the same sparsity: two points, apart
        here = [x for x in xs if round(x) == slot]
        assert len(here) == 2 and here[0] != here[1]
    # ... and still inside the slot of their sparsity (ticks at 0, 1 label 90, 95)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["90", "95"]
    assert all(abs(x - round(x)) < 0.3 for x in xs)


def test_one_legend_per_figure_and_labelled_axes():
    fig = accuracy_figure(leaderboard_rows(), ["clean", "pgd", "autoattack"])
    assert len(fig.legends) == 1
    assert all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels.count("dense") == 1 and len(labels) == len(set(labels)) == 3
    for ax in fig.axes:
        assert ax.get_xlabel() == "nominal sparsity (%)"
        assert ax.get_ylabel().endswith("(%)")


def diag_frame() -> pd.DataFrame:
    rows = []
    for s2ap in ("off", "on"):
        for sp in (90.0, 95.0):
            rows.append({"dataset": "cifar10", "arch": "resnet18", "method": "hydra", "s2ap": s2ap,
                         "sparsity": sp, "diag.mask_robust_acc": 0.4, "diag.sharpness_r0.05": 1.5,
                         "diag.stability_random_r0.01": 0.01, "diag.stability_random_r0.05": 0.03,
                         "diag.hessian_top_eig": 12.0})
    return pd.DataFrame(rows)


def test_panel_titles_name_the_radius_only_where_there_is_one():
    df = diag_frame()
    panels = diagnostics_panels(df)
    titles = [p[0] for p in panels]
    assert titles == ["mask robust accuracy (val PGD, before finetune)", "mask flips, random z (r = 0.05)",
                      "score-space sharpness (r = 0.05)", "top eigenvalue of the score Hessian"]
    fig = diagnostics_figure(df, panels)
    shown = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert shown == titles
    assert not any("obust_acc" in t or "r = " in t for t in (shown[0], shown[3]))


def test_diagnostics_in_percent_with_one_legend():
    df = diag_frame()
    fig = diagnostics_figure(df, diagnostics_panels(df))
    mask_ax = fig.axes[0]
    ys = [y for c in errorbars(mask_ax) for y in c.lines[0].get_ydata()]
    assert ys and all(y == pytest.approx(40.0) for y in ys)  # 0.4 drawn as 40 %
    assert mask_ax.get_ylabel() == "accuracy (%)"
    flips_ax = fig.axes[1]
    assert flips_ax.get_ylabel() == "weights flipped (%)"
    assert [y for c in errorbars(flips_ax) for y in c.lines[0].get_ydata()][0] == pytest.approx(3.0)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)


@pytest.mark.slow
def test_png_files_written(tmp_path):
    assert [p.name for p in plot_leaderboard(leaderboard_rows(), tmp_path)] == ["accuracy_cifar10_resnet18.png"]
    assert [p.name for p in plot_diagnostics(diag_frame(), tmp_path)] == ["diagnostics_cifar10_resnet18.png"]
    assert all(p.stat().st_size > 1000 for p in tmp_path.iterdir())
