"""The site's plots as inline SVG, written by hand: no matplotlib start-up, no fonts or URLs in the
output, every point with a tooltip (``<title>``), and the same picture in every browser.

All accuracies are in %, with the Wilson 95 % interval of the leaderboard as whiskers (one seed
still has an interval: the number of images). Series that would sit on top of each other are
dodged sideways. Each function takes leaderboard rows (dicts with the columns of
benchmark.aggregate's leaderboard) and returns an ``<svg>`` string, or "" when there is nothing
to draw.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22")
DENSE_COLOR = "#555555"
WIDTH, HEIGHT = 560, 340
MARGIN = {"left": 58, "right": 170, "top": 34, "bottom": 50}
S2AP_DASHED = ("on", "score")


def finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """One colour per method, stable across the plots of a page."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(methods) - {"dense"}))}


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if not (finite(lo) and finite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) > 1e-9 else str(int(round(v)))


def _pct(v: Any) -> str:
    return f"{float(v):.2f}" if finite(v) else "—"


class Frame:
    """A plot area with linear axes; ``x``/``y`` map data to pixels."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float], *, title: str,
                 xlabel: str, ylabel: str, xticks: Sequence[tuple[float, str]] | None = None,
                 yticks: Sequence[float] | None = None, label: str = "plot",
                 rotate_xticks: bool = False, width: int = WIDTH):
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        self.rotate = rotate_xticks
        self.width = width
        self.height = HEIGHT + (40 if rotate_xticks else 0)
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.w = width - MARGIN["left"] - MARGIN["right"]
        self.h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]
        self.title, self.xlabel, self.ylabel, self.label = title, xlabel, ylabel, label
        self.xticks = xticks if xticks is not None else [(t, _fmt(t)) for t in nice_ticks(*xlim)]
        self.yticks = yticks if yticks is not None else nice_ticks(*ylim)
        self.parts: list[str] = []
        self.legend: list[str] = []

    def x(self, v: float) -> float:
        return self.left + (float(v) - self.x0) / ((self.x1 - self.x0) or 1.0) * self.w

    def y(self, v: float) -> float:
        return self.top + self.h - (float(v) - self.y0) / ((self.y1 - self.y0) or 1.0) * self.h

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def legend_entry(self, text: str, color: str, *, dashed: bool = False, marker: str = "circle",
                     filled: bool = True) -> None:
        i = len(self.legend)
        ly = self.top + 8 + 16 * i
        lx = self.width - MARGIN["right"] + 14
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        self.legend.append(
            f'<g class="legend-item"><line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
            + _marker(lx + 11, ly, color, marker, filled)
            + f'<text x="{lx + 28}" y="{ly + 4}">{escape(text)}</text></g>')

    def render(self) -> str:
        grid, axes = [], []
        for t in self.yticks:
            if self.y0 - 1e-9 <= t <= self.y1 + 1e-9:
                py = self.y(t)
                grid.append(f'<line class="grid" x1="{self.left}" y1="{py:.1f}" x2="{self.left + self.w}" y2="{py:.1f}"/>')
                axes.append(f'<text class="tick" x="{self.left - 6}" y="{py + 4:.1f}" text-anchor="end">{escape(_fmt(t))}</text>')
        for t, text in self.xticks:
            px = self.x(t)
            axes.append(f'<line class="axis" x1="{px:.1f}" y1="{self.top + self.h}" x2="{px:.1f}" y2="{self.top + self.h + 4}"/>')
            if self.rotate:
                ty = self.top + self.h + 12
                axes.append(f'<text class="tick" x="{px:.1f}" y="{ty}" text-anchor="end" '
                            f'transform="rotate(-35 {px:.1f} {ty})">{escape(text)}</text>')
            else:
                axes.append(f'<text class="tick" x="{px:.1f}" y="{self.top + self.h + 17}" text-anchor="middle">{escape(text)}</text>')
        axes.append(f'<rect class="frame" x="{self.left}" y="{self.top}" width="{self.w}" height="{self.h}"/>')
        axes.append(f'<text class="label" x="{self.left + self.w / 2:.1f}" y="{self.height - 10}" text-anchor="middle">{escape(self.xlabel)}</text>')
        cy = self.top + self.h / 2
        axes.append(f'<text class="label" x="14" y="{cy:.1f}" text-anchor="middle" transform="rotate(-90 14 {cy:.1f})">{escape(self.ylabel)}</text>')
        title = f'<text class="title" x="{self.left}" y="{self.top - 12}">{escape(self.title)}</text>'
        return (f'<svg class="plot" data-plot="{escape(self.label)}" viewBox="0 0 {self.width} {self.height}" '
                f'width="{self.width}" height="{self.height}" role="img" aria-label="{escape(self.title)}">'
                f'<title>{escape(self.title)}</title>' + "".join(grid) + "".join(axes) + title
                + "".join(self.parts) + "".join(self.legend) + "</svg>")


def _marker(x: float, y: float, color: str, shape: str = "circle", filled: bool = True, r: float = 4.0) -> str:
    fill = color if filled else "#ffffff"
    if shape == "diamond":
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
        return f'<polygon points="{pts}" fill="{fill}" stroke="{color}" stroke-width="1.5"/>'
    if shape == "square":
        return (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" '
                f'fill="{fill}" stroke="{color}" stroke-width="1.5"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{color}" stroke-width="1.5"/>'


def _vwhisker(f: Frame, x: float, lo: float, hi: float, color: str, kind: str = "", dashed: bool = False) -> str:
    cls = f"whisker {kind}".strip()
    dash = ' stroke-dasharray="3 2"' if dashed else ""
    return (f'<path class="{cls}"{dash} d="M{x:.1f},{f.y(lo):.1f}V{f.y(hi):.1f}M{x - 3:.1f},{f.y(lo):.1f}'
            f'h6M{x - 3:.1f},{f.y(hi):.1f}h6" stroke="{color}"/>')


def _hwhisker(f: Frame, y: float, lo: float, hi: float, color: str) -> str:
    return (f'<path class="whisker" d="M{f.x(lo):.1f},{y:.1f}H{f.x(hi):.1f}M{f.x(lo):.1f},{y - 3:.1f}'
            f'v6M{f.x(hi):.1f},{y - 3:.1f}v6" stroke="{color}"/>')


def _limits(values: Iterable[float], pad: float = 3.0, lo_cap: float = 0.0, hi_cap: float = 100.0) -> tuple[float, float]:
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return lo_cap, hi_cap
    lo = max(lo_cap, math.floor((min(vals) - pad) / 5) * 5)
    hi = min(hi_cap, math.ceil((max(vals) + pad) / 5) * 5)
    return (lo, hi) if hi > lo else (lo, lo + 5)


def _row_attr(r: Mapping[str, Any]) -> str:
    """``data-row``: the leaderboard row a point draws (the site's entry id, ``_site_id``), so the
    page's filters hide the point with its row."""
    rid = r.get("_site_id")
    return "" if rid is None else f' data-row="{escape(str(rid))}"'


def _rows_attr(rows: Iterable[Mapping[str, Any]]) -> str:
    ids = [str(r["_site_id"]) for r in rows if r.get("_site_id") is not None]
    return f' data-rows="{escape(" ".join(ids))}"' if ids else ""


def _series_name(method: str, s2ap: str) -> str:
    return f"{method} · S2AP {s2ap}" if s2ap in ("on", "off", "score", "awp") else str(method)


def dodge_offsets(n: int, width: float = 0.5) -> list[float]:
    """Sideways offsets (in category units) for n series, centred on 0 and at most ``width`` wide."""
    if n <= 1:
        return [0.0] * n
    step = min(width / (n - 1), 0.12)
    return [(i - (n - 1) / 2) * step for i in range(n)]


def accuracy_vs_sparsity(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *,
                         metric: str = "autoattack", title: str = "") -> str:
    """Accuracy vs nominal sparsity, one line per (method, S2AP) (dashed with S2AP's score step),
    Wilson whiskers, the dense model as a grey dashed line. Sparsities sit at evenly spaced
    positions (90, 95, 99 would crowd on a linear axis)."""
    name = {"autoattack": "AutoAttack", "clean": "Clean", "pgd": "PGD"}.get(metric, metric)
    pruned = [r for r in rows if r["method"] != "dense" and finite(r.get(metric))]
    dense = [r for r in rows if r["method"] == "dense" and finite(r.get(metric))]
    if not pruned:
        return ""
    sparsities = sorted({float(r["sparsity"]) for r in pruned})
    pos = {s: i for i, s in enumerate(sparsities)}
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in pruned:
        series.setdefault((str(r["method"]), str(r["s2ap"])), []).append(r)
    keys = sorted(series)
    offsets = dict(zip(keys, dodge_offsets(len(keys))))
    lo_key, hi_key = f"{metric}_lo", f"{metric}_hi"
    ylim = _limits([v for r in pruned + dense for v in (r.get(metric), r.get(lo_key), r.get(hi_key))])
    f = Frame((-0.5, len(sparsities) - 0.5), ylim, title=title or f"{name} accuracy vs sparsity",
              xlabel="nominal sparsity (%)", ylabel=f"{name} accuracy (%)",
              xticks=[(i, _fmt(s)) for i, s in enumerate(sparsities)], label=f"{metric}-vs-sparsity")
    for d in dense:
        py = f.y(float(d[metric]))
        f.add(f'<line class="dense"{_row_attr(d)} x1="{f.left}" y1="{py:.1f}" x2="{f.left + f.w}" y2="{py:.1f}" '
              f'stroke="{DENSE_COLOR}" stroke-dasharray="2 3"><title>dense: {_pct(d[metric])} %</title></line>')
    if dense:
        f.legend_entry("dense", DENSE_COLOR, dashed=True, marker="square")
    for key in keys:
        method, s2ap = key
        color = colors.get(method, PALETTE[0])
        dashed = s2ap in S2AP_DASHED
        pts = sorted(series[key], key=lambda r: float(r["sparsity"]))
        xy = [(f.x(pos[float(r["sparsity"])] + offsets[key]), f.y(float(r[metric])), r) for r in pts]
        if len(xy) > 1:
            path = "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy)
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            f.add(f'<path class="series"{_rows_attr(pts)} d="{path}" fill="none" stroke="{color}" '
                  f'stroke-width="1.8"{dash}/>')
        for x, y, r in xy:
            whisk = ""
            interval = ""
            if finite(r.get(lo_key)) and finite(r.get(hi_key)):
                whisk = _vwhisker(f, x, float(r[lo_key]), float(r[hi_key]), color)
                interval = f" [{_pct(r[lo_key])}, {_pct(r[hi_key])}]"
            n = r.get(f"{metric}_n")
            tip = (f"{_series_name(method, s2ap)}, sparsity {_fmt(float(r['sparsity']))} %: "
                   f"{name} {_pct(r[metric])} %{interval}" + (f", n = {int(float(n))}" if finite(n) else ""))
            f.add(f'<g class="point" data-series="{escape(_series_name(method, s2ap))}"{_row_attr(r)}>{whisk}'
                  f'{_marker(x, y, color, "diamond" if dashed else "circle", not dashed)}'
                  f'<title>{escape(tip)}</title></g>')
        f.legend_entry(_series_name(method, s2ap), color, dashed=dashed,
                       marker="diamond" if dashed else "circle", filled=not dashed)
    return f.render()


def clean_vs_robust(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *, title: str = "") -> str:
    """Clean vs AutoAttack accuracy, both with Wilson whiskers; hollow diamonds: S2AP score step."""
    pts = [r for r in rows if finite(r.get("clean")) and finite(r.get("autoattack"))]
    if not pts:
        return ""
    xlim = _limits([v for r in pts for v in (r["clean"], r.get("clean_lo"), r.get("clean_hi"))])
    ylim = _limits([v for r in pts for v in (r["autoattack"], r.get("autoattack_lo"), r.get("autoattack_hi"))])
    f = Frame(xlim, ylim, title=title or "Clean vs AutoAttack accuracy", xlabel="clean accuracy (%)",
              ylabel="AutoAttack accuracy (%)", label="clean-vs-autoattack")
    seen = set()
    for r in sorted(pts, key=lambda r: (str(r["method"]), str(r["s2ap"]), float(r["sparsity"]))):
        method, s2ap = str(r["method"]), str(r["s2ap"])
        dense = method == "dense"
        color = DENSE_COLOR if dense else colors.get(method, PALETTE[0])
        dashed = s2ap in S2AP_DASHED
        shape = "square" if dense else ("diamond" if dashed else "circle")
        x, y = f.x(float(r["clean"])), f.y(float(r["autoattack"]))
        whisk = ""
        if finite(r.get("autoattack_lo")) and finite(r.get("autoattack_hi")):
            whisk += _vwhisker(f, x, float(r["autoattack_lo"]), float(r["autoattack_hi"]), color)
        if finite(r.get("clean_lo")) and finite(r.get("clean_hi")):
            whisk += _hwhisker(f, y, float(r["clean_lo"]), float(r["clean_hi"]), color)
        label = "dense" if dense else _series_name(method, s2ap)
        tip = (f"{label}, sparsity {_fmt(float(r['sparsity']))} %: clean {_pct(r['clean'])} %, "
               f"AutoAttack {_pct(r['autoattack'])} %")
        f.add(f'<g class="point" data-series="{escape(label)}"{_row_attr(r)}>{whisk}'
              f'{_marker(x, y, color, shape, not dashed)}'
              f'<title>{escape(tip)}</title></g>')
        if label not in seen:
            seen.add(label)
            f.legend_entry(label, color, marker=shape, filled=not dashed)
    return f.render()


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
    span = max(abs(min(vals)), abs(max(vals)), 1.0)
    top = math.ceil(span * 1.1)
    has_seed = any(seed_cis)
    has_image = any(s is None and i for s, i in zip(seed_cis, image_cis))
    kinds = ("95 % CI over seeds; dashed: per-image interval (below 3 seeds)" if has_seed and has_image
             else "95 % CI over seeds" if has_seed
             else "per-image interval, dashed (below 3 seeds: no CI over seeds)" if has_image else "")
    f = Frame((-0.5, len(pts) - 0.5), (-top, top), title=title or "S2AP − original (AutoAttack)",
              xlabel="method @ sparsity (%)" + (f"; whiskers: {kinds}" if kinds else ""),
              ylabel="difference (percentage points)",
              xticks=[(i, f"{p['method']} @ {_fmt(float(p['sparsity']))}") for i, p in enumerate(pts)],
              label="s2ap-difference", rotate_xticks=True,
              width=max(WIDTH, MARGIN["left"] + MARGIN["right"] + 34 * len(pts)))
    f.add(f'<line class="zero" x1="{f.left}" y1="{f.y(0):.1f}" x2="{f.left + f.w}" y2="{f.y(0):.1f}" stroke="#333"/>')
    seen = set()
    for i, (p, seed_ci, image_ci) in enumerate(zip(pts, seed_cis, image_cis)):
        method = str(p["method"])
        color = colors.get(method, PALETTE[0])
        x, y = f.x(i), f.y(float(p["delta"]))
        if seed_ci:
            whisk = _vwhisker(f, x, seed_ci[0], seed_ci[1], color, "seed-ci")
        elif image_ci:
            whisk = _vwhisker(f, x, image_ci[0], image_ci[1], color, "image-ci", dashed=True)
        else:
            whisk = ""
        pv = p.get("p_value")
        tip = (f"{method}, sparsity {_fmt(float(p['sparsity']))} %: {float(p['delta']):+.2f} pp"
               + (f"; 95 % CI over seeds [{seed_ci[0]:+.1f}, {seed_ci[1]:+.1f}] (the effect)" if seed_ci
                  else "; no interval over seeds (below 3 seeds)")
               + (f"; per-image interval [{image_ci[0]:+.1f}, {image_ci[1]:+.1f}]" if image_ci else "")
               + (f", McNemar p = {float(pv):.3g} (these models on these images only)" if finite(pv) else ""))
        f.add(f'<g class="point" data-series="{escape(method)}"{_row_attr(p)}>{whisk}{_marker(x, y, color)}'
              f'<title>{escape(tip)}</title></g>')
        if method not in seen:
            seen.add(method)
            f.legend_entry(method, color)
    return f.render()


def reference_vs_ours(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str], *,
                      metric: str = "autoattack", title: str = "") -> str:
    """Our accuracy (Wilson whiskers) against the published one; on the diagonal they agree."""
    ref_key = f"ref_{metric}"
    pts = [r for r in rows if finite(r.get(ref_key)) and finite(r.get(metric))]
    if not pts:
        return ""
    name = {"autoattack": "AutoAttack", "clean": "clean"}.get(metric, metric)
    lim = _limits([v for r in pts for v in (r[ref_key], r[metric], r.get(f"{metric}_lo"), r.get(f"{metric}_hi"))])
    f = Frame(lim, lim, title=title or f"Published vs ours ({name})", xlabel=f"published {name} accuracy (%)",
              ylabel=f"our {name} accuracy (%)", label=f"reference-vs-ours-{metric}")
    f.add(f'<line class="diagonal" x1="{f.x(lim[0]):.1f}" y1="{f.y(lim[0]):.1f}" x2="{f.x(lim[1]):.1f}" '
          f'y2="{f.y(lim[1]):.1f}" stroke="#999" stroke-dasharray="4 3"/>')
    seen = set()
    for r in sorted(pts, key=lambda r: (str(r["method"]), float(r["sparsity"]))):
        method = str(r["method"])
        color = colors.get(method, PALETTE[0])
        x, y = f.x(float(r[ref_key])), f.y(float(r[metric]))
        whisk = ""
        if finite(r.get(f"{metric}_lo")) and finite(r.get(f"{metric}_hi")):
            whisk = _vwhisker(f, x, float(r[f"{metric}_lo"]), float(r[f"{metric}_hi"]), color)
        tip = (f"{method}, {r['arch']}, sparsity {_fmt(float(r['sparsity']))} %: published "
               f"{_pct(r[ref_key])} %, ours {_pct(r[metric])} %")
        f.add(f'<g class="point" data-series="{escape(method)}"{_row_attr(r)}>{whisk}{_marker(x, y, color)}'
              f'<title>{escape(tip)}</title></g>')
        if method not in seen:
            seen.add(method)
            f.legend_entry(method, color)
    return f.render()


__all__ = ["method_colors", "accuracy_vs_sparsity", "clean_vs_robust", "s2ap_difference",
           "reference_vs_ours", "paired_interval", "dodge_offsets", "nice_ticks"]
