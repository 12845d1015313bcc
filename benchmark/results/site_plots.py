"""The site's plots: matplotlib figures drawn with the PNG plots' code (benchmark.results.plots),
written as SVG to inline in the page.

Each function takes leaderboard rows (dicts with the columns of benchmark.results.aggregate's
leaderboard) and returns an ``<svg>`` string, or "" when there is nothing to draw. The SVG is
deterministic (fixed hash salt, no date), keeps its text as text (small, searchable, read by screen
readers), holds no URL (no namespaces, no clip paths: the axis limits hold every whisker), and
each leaderboard row's artists carry ``data-row`` (the row's entry id, the ``data-id`` of its
table row), an id ``<plot>--<row slug>--<part>`` and a class (``point``, ``whisker``, ``dense``),
so a script can show or hide them; the point holds a ``<title>`` tooltip.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from benchmark.core.entries import entry_id, slug
from benchmark.results.published import finite_number
from benchmark.results.plots import (
    DENSE_COLOR,
    PALETTE,
    _dashed,
    _plt,
    _series_label,
    accuracy_panel,
    draw_point,
    method_colors,
    point_artists,
    wilson_whiskers,
)

FIGSIZE = (4.6, 3.0)  # inches; two plots side by side on a 1280-pixel-wide page
GEOMETRY = frozenset({"d", "x", "y", "transform", "viewBox", "width", "height"})
_DECIMALS = re.compile(r"-?\d+\.\d{3,}")
NAMES = {"autoattack": "AutoAttack", "clean": "Clean", "pgd": "PGD"}


def finite(v: Any) -> bool:
    return finite_number(v) is not None


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) > 1e-9 else str(int(round(v)))


def _pct(v: Any) -> str:
    return f"{float(v):.2f}" if finite(v) else "—"


def _limits(values: Iterable[Any], pad: float = 3.0, lo_cap: float = 0.0, hi_cap: float = 100.0) -> tuple[float, float]:
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return lo_cap, hi_cap
    lo = max(lo_cap, math.floor((min(vals) - pad) / 5) * 5)
    hi = min(hi_cap, math.ceil((max(vals) + pad) / 5) * 5)
    return (lo, hi) if hi > lo else (lo, lo + 5)


def row_id(row: Mapping[str, Any]) -> str:
    """The entry id of a row: its ``entry`` (the site's id, preset-qualified) when set, else
    ``entry_id``; an S2AP pair row stands for its S2AP-on row."""
    if row.get("entry"):
        return str(row["entry"])
    if "s2ap" not in row and row.get("s2ap_config"):
        row = {**row, "s2ap": "on", "config_hash": row["s2ap_config"]}
    return entry_id({"dataset": "", "arch": "", **row})


class Marks:
    """The row-addressable artists of one plot: gid, row id, class and tooltip."""

    def __init__(self, label: str):
        self.label = label
        self.items: dict[str, tuple[str, str, str]] = {}
        self.lines: dict[str, str] = {}

    def add(self, row: Mapping[str, Any], artists: Sequence[Any], tip: str = "",
            whisker_class: str = "whisker", point_class: str = "point") -> None:
        rid = row_id(row)
        marker, *rest = artists
        parts = [(f"bar{i}" if type(a).__name__ == "LineCollection" else f"cap{i}", a) for i, a in enumerate(rest)]
        for part, artist in [("point", marker), *parts]:
            gid = f"{self.label}--{slug(rid)}--{part}"
            artist.set_gid(gid)
            cls = point_class if part == "point" else whisker_class
            self.items[gid] = (rid, cls, tip if part == "point" else "")

    def add_line(self, rows: Sequence[Mapping[str, Any]], line: Any) -> None:
        """A line joining several rows: ``data-rows`` lists them, so the page hides the line when
        any of them is filtered out (the points it joins are no longer all shown)."""
        gid = f"{self.label}--line{len(self.lines)}"
        line.set_gid(gid)
        self.lines[gid] = " ".join(row_id(r) for r in rows)


def figure_svg(fig: Any, marks: Marks, title: str) -> str:
    """``fig`` as an inline ``<svg>`` (see the module's docstring); closes the figure."""
    import matplotlib  # deferred: matplotlib

    plt = _plt()
    for artist in fig.findobj(lambda a: hasattr(a, "set_clip_on")):
        artist.set_clip_on(False)
    # the salt names the plot, so marker definitions get ids of their own on a page of many plots
    salt = marks.label + ":" + hashlib.sha256("|".join(sorted(marks.items)).encode()).hexdigest()[:12]
    buf = io.StringIO()
    # text stays text; one font name (then the browser's sans-serif) instead of matplotlib's list
    rc = {"svg.hashsalt": salt, "svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}
    with matplotlib.rc_context(rc):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    root = ET.fromstring(buf.getvalue())
    for el in list(root.iter()):
        el.tag = el.tag.rpartition("}")[2]
        for key in [k for k in el.attrib if k.startswith("{")]:
            value = el.attrib.pop(key)
            el.set(key.rpartition("}")[2], value)  # xlink:href -> SVG 2 href
        for key in GEOMETRY & el.attrib.keys():
            el.set(key, _short(el.get(key)))
        if el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
    for parent in list(root.iter()):
        for child in [c for c in parent if c.tag == "metadata"]:
            parent.remove(child)
    referenced = {el.get("href", "")[1:] for el in root.iter() if el.get("href", "").startswith("#")}
    for el in root.iter():
        gid = el.get("id")
        if gid in marks.items:
            rid, cls, tip = marks.items[gid]
            el.set("class", cls)
            el.set("data-row", rid)
            if tip:
                t = ET.Element("title")
                t.text = tip
                el.insert(0, t)
        elif gid in marks.lines:
            el.set("class", "series")
            el.set("data-rows", marks.lines[gid])
        elif gid is not None and gid not in referenced:
            del el.attrib["id"]  # matplotlib's figure_1, axes_1, ... repeat in every plot of a page
    _unwrap(root)
    root.set("class", "plot")
    root.set("data-plot", marks.label)
    root.set("role", "img")
    root.set("aria-label", title)
    t = ET.Element("title")
    t.text = title
    root.insert(0, t)
    return ET.tostring(root, encoding="unicode")


def _short(value: str) -> str:
    """Coordinates to 2 decimals (a hundredth of a point) and single spaces: matplotlib writes 6."""
    value = _DECIMALS.sub(lambda m: f"{float(m.group()):.2f}".rstrip("0").rstrip("."), value)
    return " ".join(value.split())


def _unwrap(el: ET.Element) -> None:
    """Replace each ``<g>`` without attributes by its children (what is left of matplotlib's
    per-artist groups once their ids are gone): the same picture, a smaller page."""
    kids: list[ET.Element] = []
    for child in el:
        _unwrap(child)
        kids += list(child) if child.tag == "g" and not child.attrib and child.text is None else [child]
    if len(kids) != len(el) or any(a is not b for a, b in zip(kids, el)):
        el[:] = kids


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)


def accuracy_vs_sparsity(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *,
                         metric: str = "autoattack", title: str = "") -> str:
    """Accuracy vs nominal sparsity: the PNG figure's panel (benchmark.results.plots.accuracy_panel),
    one line per (method, S2AP), Wilson whiskers, the dense model as a grey dotted line."""
    name = NAMES.get(metric, metric)
    usable = [r for r in rows if finite(r.get(metric))]
    if not any(r["method"] != "dense" for r in usable):
        return ""
    title = title or f"{name} accuracy vs sparsity"
    marks = Marks(f"{metric}-vs-sparsity-{slug(str(usable[0].get('arch', '')))}")
    fig, ax = _plt().subplots(figsize=FIGSIZE)
    lines: list = []
    for row, artists in accuracy_panel(ax, pd.DataFrame(usable), metric, dict(colors), series_lines=lines):
        lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
        n = row.get(f"{metric}_n")
        label = "dense" if row["method"] == "dense" else _series_label(row["method"], str(row["s2ap"]))
        tip = (f"{label}, sparsity {_fmt(float(row['sparsity']))} %: {name} {_pct(row[metric])} %"
               + (f" [{_pct(lo)}, {_pct(hi)}]" if finite(lo) and finite(hi) else "")
               + (f", n = {int(float(n))}" if finite(n) else ""))
        marks.add(row, artists, tip, point_class="dense" if row["method"] == "dense" else "point")
    for joined, line in lines:
        marks.add_line(joined, line)
    ylim = _limits([v for r in usable for v in (r.get(metric), r.get(f"{metric}_lo"), r.get(f"{metric}_hi"))])
    ax.set_ylim(min(ylim[0], ax.get_ylim()[0]), max(ylim[1], ax.get_ylim()[1]))
    ax.set_title(title, fontsize=10, loc="left")
    _legend(ax)
    return figure_svg(fig, marks, title)


def _whiskers(row: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    """One row's (below, above) Wilson whisker, as the PNG plots draw it."""
    w = wilson_whiskers(pd.DataFrame([row]), metric)
    return None if w is None else (w[0][0], w[1][0])


def clean_vs_robust(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *, title: str = "") -> str:
    """Clean vs AutoAttack accuracy, both with Wilson whiskers; hollow diamonds: S2AP score step."""
    pts = [r for r in rows if finite(r.get("clean")) and finite(r.get("autoattack"))]
    if not pts:
        return ""
    title = title or "Clean vs AutoAttack accuracy"
    marks = Marks("clean-vs-autoattack")
    fig, ax = _plt().subplots(figsize=FIGSIZE)
    seen = set()
    for r in sorted(pts, key=lambda r: (str(r["method"]), str(r["s2ap"]), float(r["sparsity"]))):
        method, s2ap = str(r["method"]), str(r["s2ap"])
        dense = method == "dense"
        label = "dense" if dense else _series_label(method, s2ap)
        c = draw_point(ax, float(r["clean"]), float(r["autoattack"]),
                       color=DENSE_COLOR if dense else colors.get(method, PALETTE[0]),
                       dashed=_dashed(s2ap), marker="s" if dense else None,
                       yerr=_whiskers(r, "autoattack"), xerr=_whiskers(r, "clean"),
                       label="_nolegend_" if label in seen else label)
        seen.add(label)
        c.lines[0].set_linestyle("none")
        marks.add(r, point_artists(c), f"{label}, sparsity {_fmt(float(r['sparsity']))} %: clean "
                  f"{_pct(r['clean'])} %, AutoAttack {_pct(r['autoattack'])} %")
    ax.set_xlim(*_limits([v for r in pts for v in (r["clean"], r.get("clean_lo"), r.get("clean_hi"))]))
    ax.set_ylim(*_limits([v for r in pts for v in (r["autoattack"], r.get("autoattack_lo"), r.get("autoattack_hi"))]))
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("AutoAttack accuracy (%)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return figure_svg(fig, marks, title)


def paired_interval(b: Any, c: Any, n: Any) -> tuple[float, float] | None:
    """95 % interval (pp) of the paired difference on - off = (c - b) / n, b = images only 'off'
    gets right, c = only 'on' (Wald interval for paired proportions)."""
    if not (finite(b) and finite(c) and finite(n)) or float(n) <= 0:
        return None
    b, c, n = float(b), float(c), float(n)
    d = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    return 100.0 * (d - 1.96 * se), 100.0 * (d + 1.96 * se)


def s2ap_difference(pairs: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *, title: str = "") -> str:
    """S2AP − original AutoAttack accuracy (pp) per method and sparsity. Whiskers: the 95 %
    interval over seeds (``delta_lo``/``delta_hi``, a t-interval of the per-seed differences), the
    one that speaks to an effect of S2AP; below 3 seeds there is none, and the per-image interval
    from McNemar's b and c is drawn dashed instead (it measures test-image noise only, not the
    variation between seeds). Both, and the p-value, are in the tooltip."""
    pts = [p for p in pairs if finite(p.get("delta"))]
    if not pts:
        return ""
    pts = sorted(pts, key=lambda p: (str(p["method"]), float(p["sparsity"])))
    seed_cis = [(float(p["delta_lo"]), float(p["delta_hi"]))
                if finite(p.get("delta_lo")) and finite(p.get("delta_hi")) else None for p in pts]
    image_cis = [paired_interval(p.get("b"), p.get("c"), p.get("n_paired")) for p in pts]
    drawn = [s or i for s, i in zip(seed_cis, image_cis)]
    vals = [float(p["delta"]) for p in pts] + [v for i in drawn if i for v in i] + [0.0]
    top = math.ceil(max(abs(min(vals)), abs(max(vals)), 1.0) * 1.1)
    has_seed = any(seed_cis)
    has_image = any(s is None and i for s, i in zip(seed_cis, image_cis))
    kinds = ("95 % CI over seeds; dashed: per-image interval (below 3 seeds)" if has_seed and has_image
             else "95 % CI over seeds" if has_seed
             else "per-image interval, dashed (below 3 seeds: no CI over seeds)" if has_image else "")
    title = title or "S2AP − original (AutoAttack)"
    marks = Marks("s2ap-difference")
    fig, ax = _plt().subplots(figsize=(max(FIGSIZE[0], 2.0 + 0.4 * len(pts)), FIGSIZE[1] + 0.4))
    ax.axhline(0.0, color="#333333", linewidth=1.0)
    seen = set()
    for i, (p, seed_ci, image_ci) in enumerate(zip(pts, seed_cis, image_cis)):
        method, d = str(p["method"]), float(p["delta"])
        color = colors.get(method, PALETTE[0])
        # the whisker spans the interval itself, which need not hold the point (the per-image one
        # is centred on the pooled difference), so it is drawn apart from the marker
        (marker,) = ax.plot([i], [d], "o", color=color, markersize=5,
                            label="_nolegend_" if method in seen else method)
        seen.add(method)
        whisker: list[Any] = []
        ci = seed_ci or image_ci
        if ci is not None:
            mid, half = (ci[0] + ci[1]) / 2, (ci[1] - ci[0]) / 2
            bars = ax.errorbar([i], [mid], yerr=[[half], [half]], fmt="none", ecolor=color, capsize=3)
            if seed_ci is None:
                bars.lines[2][0].set_linestyle((0, (3, 2)))
            whisker = point_artists(bars)
        pv = p.get("p_value")
        tip = (f"{method}, sparsity {_fmt(float(p['sparsity']))} %: {d:+.2f} pp"
               + (f"; 95 % CI over seeds [{seed_ci[0]:+.1f}, {seed_ci[1]:+.1f}] (the effect)" if seed_ci
                  else "; no interval over seeds (below 3 seeds)")
               + (f"; per-image interval [{image_ci[0]:+.1f}, {image_ci[1]:+.1f}]" if image_ci else "")
               + (f", McNemar p = {float(pv):.3g} (these models on these images only)" if finite(pv) else ""))
        marks.add(p, [marker, *whisker], tip,
                  whisker_class="whisker seed-ci" if seed_ci else "whisker image-ci")
    ax.set_xlim(-0.5, len(pts) - 0.5)
    ax.set_ylim(-top, top)
    ax.set_xticks(range(len(pts)))
    ax.set_xticklabels([f"{p['method']} @ {_fmt(float(p['sparsity']))}" for p in pts], rotation=35, ha="right")
    ax.set_xlabel("method @ sparsity (%)" + (f"\nwhiskers: {kinds}" if kinds else ""))
    ax.set_ylabel("difference (percentage points)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, axis="y", alpha=0.3)
    _legend(ax)
    return figure_svg(fig, marks, title)


def reference_vs_ours(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *,
                      metric: str = "autoattack", title: str = "") -> str:
    """Our accuracy (Wilson whiskers) against the published one; on the diagonal they agree."""
    ref_key = f"ref_{metric}"
    pts = [r for r in rows if finite(r.get(ref_key)) and finite(r.get(metric))]
    if not pts:
        return ""
    name = {"autoattack": "AutoAttack", "clean": "clean"}.get(metric, metric)
    lim = _limits([v for r in pts for v in (r[ref_key], r[metric], r.get(f"{metric}_lo"), r.get(f"{metric}_hi"))])
    title = title or f"Published vs ours ({name})"
    marks = Marks(f"reference-vs-ours-{metric}")
    fig, ax = _plt().subplots(figsize=FIGSIZE)
    ax.plot(lim, lim, color="#999999", linestyle=(0, (4, 3)), linewidth=1.0)
    seen = set()
    for r in sorted(pts, key=lambda r: (str(r["method"]), float(r["sparsity"]))):
        method = str(r["method"])
        c = draw_point(ax, float(r[ref_key]), float(r[metric]), color=colors.get(method, PALETTE[0]),
                       yerr=_whiskers(r, metric), label="_nolegend_" if method in seen else method)
        seen.add(method)
        c.lines[0].set_linestyle("none")
        marks.add(r, point_artists(c), f"{method}, {r['arch']}, sparsity {_fmt(float(r['sparsity']))} %: "
                  f"published {_pct(r[ref_key])} %, ours {_pct(r[metric])} %")
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel(f"published {name} accuracy (%)")
    ax.set_ylabel(f"our {name} accuracy (%)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return figure_svg(fig, marks, title)


__all__ = ["method_colors", "accuracy_vs_sparsity", "clean_vs_robust", "s2ap_difference",
           "reference_vs_ours", "paired_interval", "figure_svg"]
