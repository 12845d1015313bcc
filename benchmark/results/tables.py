"""The S2AP paper's tables and figures, in the paper's layout, from one preset's result files.

Long because the four table layouts (s2ap, ablation, metrics, overhead) are formatted from the same
reading of the results and share its header.

A preset names the tables it feeds (``tables:``, e.g. ``{main: null, ablation: null}``); each is
one Snakemake target (``table_main``, ``figure_sharpness``, ...; docs/paper_tables.md) that needs
exactly the results its cells read and writes ``results/<preset>/tables/<table>.md`` and ``.csv``
(figures also ``.png``). What each table shows is declared in benchmark/core/paper_tables.py
(``KINDS``); the preset may narrow its methods, architectures or sparsities.

Layouts (rows: method x architecture in the preset's order; columns: sparsity):

- ``s2ap`` (main, structured, vit, imagenet, baselines): per sparsity ``Orig. | S2AP | Δ``, each
  cell ``clean / AutoAttack`` (% mean over seeds; Δ = S2AP - Orig. in points; ``n/a`` where the
  method learns no scores), then the published Orig. cell ``reference (AP benchmark)``, ``Orig. -
  ref.`` and whether the reference lies inside our 95 % Wilson interval (``yes / no``), or ``no
  counterpart`` with the reason listed under the table (benchmark/results/reference.py matches on dataset,
  architecture, method, structure, sparsity, eps and number of images).
- ``ablation``: per sparsity ``Orig. | score-only | Δ | AWP-only | Δ | both | Δ``.
- ``metrics`` (sharpness, stability figures): one table per diagnostic, per sparsity ``Orig. |
  S2AP | Δ``, and a PNG with one panel per diagnostic against sparsity.
- ``overhead``: mask-search and finetune seconds (mean over seeds, from each result's timing),
  per sparsity ``Orig. | S2AP | ratio``, with the devices that measured them.

Nothing is guessed: every result goes through the aggregation's checks (benchmark.results.aggregate), a
cell of the table without its result, a cell with two configurations, or a result whose structure
label is not the table's is an error naming the cell (``TableError``). The table spec passed to
the builder (``spec``) is computed from the preset without torch or pandas, so the Snakefile and
``python -m benchmark estimate`` use the same cell selection (``table_cells``).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.core.cells import canonical_sparsity
from benchmark.core.paper_tables import (  # noqa: F401 - the declarations, for callers of this module
    ABLATION_LABELS,
    FIGURE_METRICS,
    KINDS,
    METRIC_TITLES,
    OVERHEAD_METRICS,
    TableError,
    TableKind,
    preset_problems,
    s2ap_values,
    selection,
    spec,
    table_cells,
)
from benchmark.core.io import atomic_output, atomic_write_text
from benchmark.results import md_escape
from benchmark.results import reference as ref_mod

DASH = "—"
NA = "n/a"
# beside a reference cell whose method trains with a recipe that deviates from the published one
RECIPE_MARK = "† recipe differs"


# ---------------------------------------------------------------- reading the results
def _rows(files: Sequence[str | Path]) -> Any:
    from benchmark.results.aggregate import build_tables  # deferred: pandas

    df, _, _ = build_tables(list(files))
    return df


def _lookup(df: Any, spec_: Mapping[str, Any], kind: TableKind) -> dict[tuple, dict]:
    """(dataset, arch, method, s2ap, sparsity) -> the pooled row, every cell of the table present
    once, with the table's structure."""
    found: dict[tuple, dict] = {}
    for row in df.to_dict("records"):
        key = (row["dataset"], row["arch"], row["method"], row["s2ap"], canonical_sparsity(row["sparsity"]))
        if key in found:
            raise TableError(f"{'/'.join(key)} has results of two configurations "
                             f"({found[key]['config_hash']}, {row['config_hash']}): one table "
                             "cell, one configuration; pass the result files of one preset")
        found[key] = row
    # a variant that changes nothing for a method (RST's score, awp) shows its other row
    variants = spec_.get("variants") or {}
    for m, mapping in variants.items():
        for v, eff in mapping.items():
            for key in [k for k in found if k[2] == m and k[3] == eff and v != eff]:
                found.setdefault((key[0], key[1], m, v, key[4]), found[key])
    missing, wrong = [], []
    for key in expected_keys(spec_, kind):
        if key not in found:
            missing.append("/".join(key))
        elif kind.structure and found[key].get("structure") != kind.structure:
            wrong.append(f"{'/'.join(key)} is {found[key].get('structure')}")
    if missing:
        raise TableError(f"the {kind.name} table has no result for {len(missing)} cell(s): "
                         + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else "")
                         + "; run its target (every cell is a job of it)")
    if wrong:
        raise TableError(f"the {kind.name} table shows {kind.structure} pruning only, but "
                         + "; ".join(wrong) + ": a result keeps its structure label, so it "
                         "belongs in another table")
    return found


def expected_keys(spec_: Mapping[str, Any], kind: TableKind) -> list[tuple]:
    return [(d, a, m, v, sp) for d in spec_["datasets"] for m in spec_["methods"]
            for a in spec_["archs"] for sp in spec_["sparsities"]
            for v in s2ap_values(kind, spec_["learns_scores"][m])]


# ---------------------------------------------------------------- formatting
def _finite(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _pct(v: Any) -> str:
    return f"{v:.2f}" if _finite(v) else DASH


def _signed(v: Any) -> str:
    return f"{v:+.2f}" if _finite(v) else DASH


def _pair(a: str, b: str) -> str:
    return f"{a} / {b}"


def _yes(v: bool | None) -> str:
    return DASH if v is None else ("yes" if v else "no")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return md_escape.cell(str(s))

    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _sp_label(sp: str) -> str:
    return f"{sp} %"


# ---------------------------------------------------------------- the header every table shares
def _protocol(rows: list[dict]) -> list[str]:
    eps = sorted({r["eps"] for r in rows if _finite(r.get("eps"))})
    n_aa = sorted({int(r["autoattack_n"]) for r in rows if _finite(r.get("autoattack_n"))})
    aa = sorted({(r.get("aa_version") or DASH) + ("" if r.get("aa_standard") else
                                                   f" subset [{r.get('aa_attacks')}], non-standard")
                 for r in rows})
    steps = sorted({int(r["pgd_steps"]) for r in rows if _finite(r.get("pgd_steps"))})
    seeds = sorted({int(r["n_seeds"]) for r in rows if _finite(r.get("n_seeds"))})
    return [f"- Threat model: L-inf, eps {', '.join(f'{e:g}' for e in eps) or DASH}; AutoAttack "
            f"{'; '.join(aa) or DASH} on the first {', '.join(f'{n:,}' for n in n_aa) or DASH} "
            f"test images; PGD-{', '.join(map(str, steps)) or DASH}",
            f"- Seeds per cell: {', '.join(map(str, seeds)) or DASH}; 95 % CI: Wilson interval on "
            "the correct/total counts pooled over seeds"]


def _warnings(rows: list[dict]) -> list[str]:
    out = []
    if any(r.get("synthetic") for r in rows):
        out.append("**Synthetic stand-in data (a smoke run, `data.synthetic`): images of the "
                   "dataset's shape generated by benchmark/core/synthetic.py. These numbers say nothing "
                   "about the dataset; they show the table's layout and that every cell ran.**")
    if any(r.get("aa_standard") is False for r in rows):
        out.append("**AutoAttack subset (non-standard): not comparable with published AutoAttack "
                   "numbers.**")
    return out


def _flag_lines(cells: list[tuple[str, dict]]) -> list[str]:
    """The leaderboard's flags of the table's cells: those every cell carries once, the others
    cell by cell."""
    flags = [(label, [f for f in (r.get("flag") or "").split("; ") if f]) for label, r in cells]
    if not any(f for _, f in flags):
        return []
    common = set.intersection(*(set(f) for _, f in flags)) if flags else set()
    out = ["Flags (the leaderboard's; its header explains each):", ""]
    if common:
        out.append(f"- every cell: {'; '.join(f for f in flags[0][1] if f in common)}")
    out += [f"- {label}: {'; '.join(f for f in fl if f not in common)}"
            for label, fl in flags if set(fl) - common]
    return out + [""]


def _title(kind: TableKind, preset: str) -> str:
    return f"# {kind.title}: {preset}"


# ---------------------------------------------------------------- the s2ap layout
def _s2ap_table(spec_: Mapping[str, Any], kind: TableKind, found: dict, reference_csv):

    ref, ref_note = ref_mod.load_reference(reference_csv)
    label = ref_mod.REFERENCE_LABEL
    md, csv_rows, notes, flagged = [], [], [], []
    deviating = spec_.get("recipe_deviations") or {}
    for dataset in spec_["datasets"]:
        header = ["Method", "Arch"]
        for sp in spec_["sparsities"]:
            s = _sp_label(sp)
            header += [f"{s} Orig.", f"{s} S2AP", f"{s} Δ", f"{s} {label}", f"{s} Orig. − ref.",
                       f"{s} ref. in 95 % CI"]
        body = []
        for method in spec_["methods"]:
            learns = spec_["learns_scores"][method]
            for arch in spec_["archs"]:
                line, csv = [method, arch], {"dataset": dataset, "method": method, "arch": arch,
                                             "structure": kind.structure or ""}
                for sp in spec_["sparsities"]:
                    orig = found[(dataset, arch, method, "off" if learns else NA, sp)]
                    on = found.get((dataset, arch, method, "on", sp)) if learns else None
                    flagged.append((f"{method}/{arch}/{sp} % Orig.", orig))
                    if on is not None:
                        flagged.append((f"{method}/{arch}/{sp} % S2AP", on))
                    m = ref_mod.match_row(ref, orig)
                    p = f"sp{sp}_"
                    differs = bool(deviating.get(method))
                    csv[p + "recipe_differs"] = differs
                    line.append(_pair(_pct(orig["clean"]), _pct(orig["autoattack"])))
                    csv.update({p + "orig_clean": orig["clean"], p + "orig_aa": orig["autoattack"],
                                p + "orig_clean_lo": orig["clean_lo"], p + "orig_clean_hi": orig["clean_hi"],
                                p + "orig_aa_lo": orig["autoattack_lo"], p + "orig_aa_hi": orig["autoattack_hi"],
                                p + "orig_seeds": orig["n_seeds"]})
                    if on is None:
                        line += [NA, NA]
                        csv.update({p + "s2ap_clean": math.nan, p + "s2ap_aa": math.nan,
                                    p + "delta_clean": math.nan, p + "delta_aa": math.nan,
                                    p + "s2ap_seeds": 0})
                    else:
                        dc, da = on["clean"] - orig["clean"], on["autoattack"] - orig["autoattack"]
                        line += [_pair(_pct(on["clean"]), _pct(on["autoattack"])),
                                 _pair(_signed(dc), _signed(da))]
                        csv.update({p + "s2ap_clean": on["clean"], p + "s2ap_aa": on["autoattack"],
                                    p + "delta_clean": dc, p + "delta_aa": da,
                                    p + "s2ap_seeds": on["n_seeds"]})
                    if m.matched:
                        in_c = ref_mod.inside(m.clean, orig["clean_lo"], orig["clean_hi"])
                        in_a = ref_mod.inside(m.autoattack, orig["autoattack_lo"], orig["autoattack_hi"])
                        line += [_pair(_pct(m.clean), _pct(m.autoattack))
                                 + (f" {RECIPE_MARK}" if differs else ""),
                                 _pair(_signed(orig["clean"] - m.clean),
                                       _signed(orig["autoattack"] - m.autoattack)),
                                 _pair(_yes(in_c), _yes(in_a))]
                        csv.update({p + "ref_clean": m.clean, p + "ref_aa": m.autoattack,
                                    p + "ref_diff_clean": orig["clean"] - m.clean,
                                    p + "ref_diff_aa": orig["autoattack"] - m.autoattack,
                                    p + "ref_in_ci_clean": in_c, p + "ref_in_ci_aa": in_a,
                                    p + "ref_status": m.status})
                    else:
                        line += ["no counterpart" + (f" {RECIPE_MARK}" if differs else ""), DASH, DASH]
                        notes.append(f"- {dataset}/{method}/{arch}/{sp} %: {m.detail}")
                        csv.update({p + "ref_clean": math.nan, p + "ref_aa": math.nan,
                                    p + "ref_diff_clean": math.nan, p + "ref_diff_aa": math.nan,
                                    p + "ref_in_ci_clean": None, p + "ref_in_ci_aa": None,
                                    p + "ref_status": f"{m.status}: {m.detail}"})
                body.append(line)
                csv_rows.append(csv)
        md += [f"## {dataset}", "", _md_table(header, body), ""]
    intro = ("Clean / AutoAttack accuracy in % (mean over seeds). Rows: method and architecture; "
             "columns: nominal sparsity. Orig. = the method as published (S2AP off), S2AP = the "
             "score-space step in the mask search and AWP in the finetune, Δ = S2AP − Orig. in "
             f"points; {NA}: the method learns no scores, so S2AP does not apply. {label}: the "
             f"published Orig. cell ({ref_note}), Orig. − ref. in points, and whether the "
             "reference lies inside our 95 % interval (clean / AutoAttack).")
    tail = (["Cells without a reference counterpart (benchmark/results/reference.py matches dataset, "
             "architecture, method, structure, sparsity, eps and number of images):", "", *notes, ""]
            if notes else [])
    if deviating:
        tail += [f"{RECIPE_MARK}: our recipe for this method deviates from the published one, as "
                 "benchmark/recipe_ledger.yaml declares (docs/recipes.md):", ""]
        tail += [f"- {line}" for m in spec_["methods"] for line in deviating.get(m, [])] + [""]
    return intro, md + tail + _flag_lines(flagged), csv_rows


# ---------------------------------------------------------------- the ablation layout
def _ablation_table(spec_: Mapping[str, Any], kind: TableKind, found: dict):
    md, csv_rows, flagged = [], [], []
    order = ("off", "score", "awp", "on")
    for dataset in spec_["datasets"]:
        header = ["Method", "Arch"]
        for sp in spec_["sparsities"]:
            s = _sp_label(sp)
            header.append(f"{s} {ABLATION_LABELS['off']}")
            for v in order[1:]:
                header += [f"{s} {ABLATION_LABELS[v]}", f"{s} Δ {ABLATION_LABELS[v]}"]
        body = []
        for method in spec_["methods"]:
            for arch in spec_["archs"]:
                line, csv = [method, arch], {"dataset": dataset, "method": method, "arch": arch}
                for sp in spec_["sparsities"]:
                    rows = {v: found[(dataset, arch, method, v, sp)] for v in order}
                    base = rows["off"]
                    for v in order:
                        r = rows[v]
                        flagged.append((f"{method}/{arch}/{sp} % {ABLATION_LABELS[v]}", r))
                        line.append(_pair(_pct(r["clean"]), _pct(r["autoattack"])))
                        csv[f"sp{sp}_{v}_clean"], csv[f"sp{sp}_{v}_aa"] = r["clean"], r["autoattack"]
                        if v != "off":
                            dc, da = r["clean"] - base["clean"], r["autoattack"] - base["autoattack"]
                            line.append(_pair(_signed(dc), _signed(da)))
                            csv[f"sp{sp}_{v}_delta_clean"], csv[f"sp{sp}_{v}_delta_aa"] = dc, da
                body.append(line)
                csv_rows.append(csv)
        md += [f"## {dataset}", "", _md_table(header, body), ""]
    intro = ("Clean / AutoAttack accuracy in % (mean over seeds). Orig. = S2AP off; score-only = "
             "the score-space step in the mask search, plain finetune; AWP-only = plain search, "
             "AWP in the finetune; both = S2AP on. Each Δ is the variant − Orig. in points.")
    return intro, md + _flag_lines(flagged), csv_rows


# ---------------------------------------------------------------- figures: diagnostics
def _metric_keys(df: Any, name: str) -> list[str]:
    cols = [c[len("diag."):] for c in df.columns if str(c).startswith("diag.")]
    keys = []
    for pattern in FIGURE_METRICS[name]:
        keys += sorted((c for c in cols if re.fullmatch(pattern, c)),
                       key=lambda c: (re.sub(r"_r[0-9.e-]+$", "", c),
                                      float(re.search(r"_r([0-9.e-]+)$", c).group(1))
                                      if re.search(r"_r([0-9.e-]+)$", c) else 0.0))
    return keys


def metric_title(key: str) -> str:
    m = re.fullmatch(r"(.+)_r([0-9.e-]+)", key)
    base, radius = (m.group(1), m.group(2)) if m else (key, "")
    return METRIC_TITLES.get(base, key).format(r=radius)


def _num(v: Any) -> str:
    return f"{v:.4g}" if _finite(v) else DASH


def _metric_tables(spec_: Mapping[str, Any], found: dict, keys: list[tuple[str, str]],
                   value, fmt_delta, delta_label: str, delta_csv: str, delta):
    md, csv_rows = [], []
    for key, title in keys:
        md += [f"## {title}", ""]
        for dataset in spec_["datasets"]:
            header = ["Method", "Arch"]
            for sp in spec_["sparsities"]:
                s = _sp_label(sp)
                header += [f"{s} Orig.", f"{s} S2AP", f"{s} {delta_label}"]
            body = []
            for method in spec_["methods"]:
                for arch in spec_["archs"]:
                    line = [method, arch]
                    csv = {"dataset": dataset, "method": method, "arch": arch, "metric": key}
                    for sp in spec_["sparsities"]:
                        a = value(found[(dataset, arch, method, "off", sp)], key)
                        b = value(found[(dataset, arch, method, "on", sp)], key)
                        d = delta(a, b)
                        line += [_num(a), _num(b), fmt_delta(d)]
                        csv.update({f"sp{sp}_orig": a, f"sp{sp}_s2ap": b, f"sp{sp}_{delta_csv}": d})
                    body.append(line)
                    csv_rows.append(csv)
            md += ([f"### {dataset}", ""] if len(spec_["datasets"]) > 1 else []) \
                + [_md_table(header, body), ""]
    return md, csv_rows


def _diag(row: Mapping[str, Any], key: str) -> float:
    v = row.get(f"diag.{key}")
    return float(v) if _finite(v) else math.nan


def _figure(spec_: Mapping[str, Any], found: dict, keys: list[tuple[str, str]], value, title: str):
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # deferred: matplotlib

    n = max(len(keys), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4.2 * cols, 3.4 * ((n + cols - 1) // cols)),
                             squeeze=False)
    xs = list(range(len(spec_["sparsities"])))
    for ax, (key, label) in zip(axes.flat, keys):
        for dataset in spec_["datasets"]:
            for method in spec_["methods"]:
                for arch in spec_["archs"]:
                    for s2ap, style in (("off", "--"), ("on", "-")):
                        ys = [value(found[(dataset, arch, method, s2ap, sp)], key)
                              for sp in spec_["sparsities"]]
                        ax.plot(xs, ys, style, marker="o",
                                label=f"{method} {arch} S2AP {s2ap}")
        ax.set_xticks(xs, [f"{sp} %" for sp in spec_["sparsities"]])
        ax.set_xlabel("sparsity")
        ax.set_title(label, fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7,
               bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(labels) / 4)))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- overhead
def _timings(files: Sequence[str | Path]) -> tuple[dict[tuple, dict[str, list[float]]], set[str]]:
    """(cell key -> timing key -> seconds per seed, the devices that measured them)."""
    out: dict[tuple, dict[str, list[float]]] = {}
    devices = set()
    for f in files:
        rec = json.loads(Path(f).read_text())  # checked by the aggregation already
        c = rec["cell"]
        key = (c["dataset"], c["arch"], c["method"], c["s2ap"], canonical_sparsity(c["sparsity"]))
        for name, _ in OVERHEAD_METRICS:
            if name in rec["timing"]:
                out.setdefault(key, {}).setdefault(name, []).append(float(rec["timing"][name]))
        dev = rec["provenance"].get("device") or {}
        devices.add(str(dev.get("cuda_device") or f"cpu ({dev.get('torch_threads')} threads)"))
    return out, devices


# ---------------------------------------------------------------- entry point
@dataclass
class Table:
    markdown: str
    rows: list[dict]
    figure: Any = None


def build(spec_: Mapping[str, Any], files: Sequence[str | Path],
          reference_csv: str | Path | None = None) -> Table:
    """The table ``spec_["table"]`` of one preset's result files (nothing written)."""
    kind = KINDS[spec_["table"]]
    df = _rows(files)
    found = _lookup(df, spec_, kind)
    rows = list(found.values())
    head = [_title(kind, spec_["preset"]), "", *_warnings(rows)]
    if head[-1] != "":
        head.append("")
    figure = None
    if kind.layout == "s2ap":
        intro, body, csv_rows = _s2ap_table(spec_, kind, found, reference_csv)
    elif kind.layout == "ablation":
        intro, body, csv_rows = _ablation_table(spec_, kind, found)
    elif kind.layout == "metrics":
        keys = [(k, metric_title(k)) for k in _metric_keys(df, kind.name)]
        if not keys:
            raise TableError(f"the {kind.name} figure found none of its diagnostics "
                             f"({', '.join(FIGURE_METRICS[kind.name])}) in the results")
        body, csv_rows = _metric_tables(spec_, found, keys, _diag, _signed_metric, "Δ", "delta",
                                        lambda a, b: b - a)
        intro = (f"Diagnostics recorded at the end of the mask search (benchmark/training/diagnostics.py), "
                 "mean over seeds; Orig. = S2AP off, S2AP = on, Δ = S2AP − Orig. The figure "
                 f"{kind.name}.png plots them against sparsity (dashed: Orig., solid: S2AP).")
        figure = _figure(spec_, found, keys, _diag, f"{kind.title}: {spec_['preset']}")
    else:  # overhead
        times, devices = _timings(files)

        def seconds(row, key):
            vals = times.get((row["dataset"], row["arch"], row["method"], row["s2ap"],
                              canonical_sparsity(row["sparsity"])), {}).get(key, [])
            return sum(vals) / len(vals) if vals else math.nan

        body, csv_rows = _metric_tables(spec_, found, list(OVERHEAD_METRICS), seconds,
                                        lambda r: f"{r:.3f}x" if _finite(r) else DASH, "ratio",
                                        "ratio",
                                        lambda a, b: b / a if _finite(a) and a > 0 else math.nan)
        intro = ("Wall-clock seconds of each stage's job as recorded in its results' timing, mean "
                 "over seeds: the mask search with and without the score-space step (S2AP on vs "
                 "off), and the finetune with and without AWP; ratio = S2AP / Orig. Measured on: "
                 f"{', '.join(sorted(devices))}"
                 + (" — mixed devices: the ratios mix machines" if len(devices) > 1 else "") + ".")
    md = "\n".join([*head, intro, "", *_protocol(rows), "", *body])
    return Table(markdown=md.rstrip() + "\n", rows=csv_rows, figure=figure)


def _signed_metric(v: Any) -> str:
    return f"{v:+.4g}" if _finite(v) else DASH


def write(spec_: Mapping[str, Any], files: Sequence[str | Path], out_dir: str | Path,
          reference_csv: str | Path | None = None) -> list[Path]:
    """Builds the table, then writes ``<out_dir>/<table>.md`` and ``.csv`` (and ``.png``)
    atomically; nothing is written when the build fails."""
    import pandas as pd  # deferred: pandas


    table = build(spec_, files, reference_csv)
    out_dir = Path(out_dir)
    name = spec_["table"]
    written = [atomic_write_text(out_dir / f"{name}.csv", pd.DataFrame(table.rows).to_csv(index=False)),
               atomic_write_text(out_dir / f"{name}.md", table.markdown)]
    if table.figure is not None:
        import matplotlib.pyplot as plt  # deferred: matplotlib

        with atomic_output(out_dir / f"{name}.png") as tmp:
            table.figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(table.figure)
        written.append(out_dir / f"{name}.png")
    return written


__all__ = ["KINDS", "TableError", "TableKind", "build", "expected_keys", "preset_problems",
           "selection", "spec", "table_cells", "write"]
