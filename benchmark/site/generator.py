"""The static web leaderboard: one ``index.html`` with every row, a page per entry, no network.

``build_site(runs, out_dir, ...)`` writes::

  out_dir/index.html            one table per (dataset, threat model, eps, AutoAttack images),
                                filters, search, sorting, CSV/JSON download of the shown rows,
                                SVG plots; the leaderboard rows inline as JSON
  out_dir/entries/<slug>.html   one page per entry (leaderboard row): config and hash, recipe of
                                every stage, per-attack accuracy, diagnostics, provenance, links
                                to result JSON, logs, model files (sha256), RobustBench export,
                                the command that reproduces it
  out_dir/assets/leaderboard.js, out_dir/assets/style.css

The folder is built aside and swapped in whole. Links to result files, logs, models and
RobustBench entries are relative, so the site keeps working when ``results/<preset>/`` is copied
or opened from ``file://``. Inputs: the result files (through ``benchmark.entries.read_result``)
and the leaderboard of ``benchmark.aggregate.build_tables`` (so the page and leaderboard.csv
show the same numbers).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from benchmark import svg_plots
from benchmark.aggregate import build_tables
from benchmark.config import s2ap_search_value, s2ap_to_path
from benchmark.entries import (canon_s2ap, entry_id, entry_slug, expand_runs, model_key,
                               preset_of, read_result, reproduce_command, result_key, row_key)
from benchmark.export_robustbench import entry_path as rb_entry_path
from benchmark.export_robustbench import robustbench_status
from benchmark.io import atomic_write_text, replace_dir

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = PACKAGE_DIR / "templates"
STATIC = PACKAGE_DIR / "static"
DASH = "—"

# code, short name, what it means (the legend); the reason of each occurrence is its tooltip
FLAG_LEGEND = [
    ("W", "warnings", "AutoAttack (or Python) warned during the evaluation."),
    ("L", "lowered after APGD", "FAB-T or Square broke images APGD had left: the APGD attacks "
                                "alone were not enough, the robustness estimate is fragile."),
    ("N", "non-standard AutoAttack", "an attack subset, not AutoAttack standard."),
    ("S", "test subset", "AutoAttack ran on part of the test set only (wider interval; not "
                         "comparable with full-test-set leaderboards)."),
    ("D", "uncommitted code", "computed from a working tree with uncommitted changes, or at an "
                              "unknown revision: the exact code cannot be checked out."),
]
STAGES = ("pretrain", "prune", "finetune", "evaluate")


# ------------------------------------------------------------------------------ values
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _fmt(v: Any, digits: int = 2) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:.{digits}f}"


def _fmt_sparsity(v: Any) -> str:
    f = _num(v)
    return DASH if f is None else f"{f:g}"


def inline_json(obj: Any) -> str:
    """JSON for a <script type="application/json"> block: '<', '>' and '&' escaped as \\u003c...,
    so no string in the data ('</script>', '<!--') can end the block or open markup."""
    text = json.dumps(_plain(obj), ensure_ascii=False, allow_nan=False, sort_keys=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _href(target: Path, from_dir: Path) -> str:
    rel = os.path.relpath(Path(target).resolve(), from_dir.resolve())
    return "/".join(quote(part) for part in rel.split(os.sep))


def _full_test_size(dataset: str) -> int | None:
    try:
        from benchmark.datasets import get_info

        return int(get_info(dataset).test_size)
    except Exception:  # a dataset of a plugin, unknown here: no claim either way
        return None


# ------------------------------------------------------------------------------ per entry
def _flags(row: Mapping[str, Any], runs: list[tuple[Path, dict]], full_n: int | None) -> list[dict]:
    flags = []
    warned = [f"seed {res['cell'].get('seed')}: {str(w).strip().splitlines()[0]}"
              for _, res in runs for w in ((res["metrics"].get("autoattack") or {}).get("warnings") or [])
              if str(w).strip()]
    if warned:
        flags.append({"code": "W", "reason": "; ".join(warned)[:600]})
    lowered = []
    for _, res in runs:
        aa = res["metrics"].get("autoattack") or {}
        if aa.get("lowered_by") or aa.get("lowered_after_apgd"):
            after = aa.get("robust_after") or {}
            apgd = min((v for k, v in after.items() if k.startswith("apgd")), default=None)
            detail = (f" (after APGD {100 * apgd:.2f} %, final {100 * float(aa.get('acc', 0)):.2f} %)"
                      if apgd is not None else "")
            lowered.append(f"seed {res['cell'].get('seed')}: "
                           f"{'+'.join(aa.get('lowered_by') or []) or 'a later attack'}{detail}")
    if lowered:
        flags.append({"code": "L", "reason": "; ".join(lowered)})
    if row.get("aa_standard") is False:
        flags.append({"code": "N", "reason": f"attacks: {row.get('aa_attacks') or 'unknown'} "
                                             f"(version {row.get('aa_version')})"})
    n = _num(row.get("autoattack_n"))
    if n is not None and full_n is not None and n < full_n:
        flags.append({"code": "S", "reason": f"AutoAttack on the first {int(n):,} of {full_n:,} test images"})
    dirty = []
    for _, res in runs:
        git = (res.get("provenance") or {}).get("git") or {}
        if git.get("dirty") or git.get("revision") in (None, "unknown"):
            dirty.append(f"seed {res['cell'].get('seed')}: revision {git.get('revision') or 'unknown'}"
                         + (" with uncommitted changes" if git.get("dirty") else ""))
    if dirty:
        flags.append({"code": "D", "reason": "; ".join(dirty)})
    names = {code: name for code, name, _ in FLAG_LEGEND}
    return [{**f, "name": names[f["code"]]} for f in flags]


def _stage_summary(stage: str, cfg: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The few settings of a stage config a reader compares first; the whole config is shown too."""
    if not isinstance(cfg, Mapping):
        return []
    out: list[tuple[str, str]] = []
    train = cfg.get("train") or {}
    if train:
        attack = train.get("attack") or {}
        out += [("epochs", str(train.get("epochs"))), ("loss", str(train.get("loss"))),
                ("lr", str(train.get("lr"))), ("schedule", str(train.get("schedule"))),
                ("batch size", str(train.get("batch_size"))),
                ("weight decay", str(train.get("weight_decay"))),
                ("attack", f"eps {attack.get('eps')}, {attack.get('steps')} steps of {attack.get('step_size')}")]
    method = cfg.get("method")
    if isinstance(method, Mapping):
        opts = method.get("options") or {}
        out.append(("method", str(method.get("name")) + (f" {json.dumps(opts, sort_keys=True)}" if opts else "")))
    if "s2ap" in cfg:
        out.append(("S2AP score step", json.dumps(cfg.get("s2ap"), sort_keys=True) if cfg.get("s2ap") else "off"))
    if "awp" in cfg:
        out.append(("AWP", json.dumps(cfg.get("awp"), sort_keys=True) if cfg.get("awp") else "off"))
    ev = cfg.get("evaluate") or {}
    if ev:
        aa = ev.get("autoattack") or {}
        out += [("eps", str(ev.get("eps"))), ("PGD", f"{ev.get('pgd_steps')} steps on {ev.get('pgd_n')} images"),
                ("AutoAttack", f"{aa.get('version')} on {aa.get('n_images')} images, seed {aa.get('seed')}"
                 if aa else "off")]
    data = cfg.get("data") or {}
    if data and stage != "evaluate":
        out.append(("training images", "all" if data.get("train_subset") in (None, 0) else str(data.get("train_subset"))))
    return out


def _stage_logs(res: Mapping[str, Any], logs_dir: Path | None) -> list[tuple[str, Path]]:
    if logs_dir is None:
        return []
    cell = res["cell"]
    key = model_key(cell)
    parts = key.split("/")
    found = []
    candidates = []
    if cell.get("pretrain_recipe"):
        candidates.append(("pretrain", logs_dir / "pretrain" / cell["dataset"] / cell["arch"]
                           / str(cell["pretrain_recipe"]) / f"seed{cell.get('seed')}.log"))
    if cell["method"] != "dense":
        search = s2ap_to_path(s2ap_search_value(canon_s2ap(cell.get("s2ap"))))
        candidates.append(("prune", logs_dir / "prune" / f"{'/'.join(parts[:3] + [search] + parts[4:])}.log"))
        candidates.append(("finetune", logs_dir / "finetune" / f"{key}.log"))
    candidates.append(("evaluate", logs_dir / "evaluate" / f"{key}.log"))
    for stage, path in candidates:
        if path.is_file():
            found.append((stage, path))
    return found


def _run_detail(path: Path, res: dict, *, entries_dir: Path, logs_dir: Path | None,
                models: Mapping[tuple, Mapping[str, Any]], rb_dir: Path | None,
                method_files: list) -> dict[str, Any]:
    cell, metrics = res["cell"], res["metrics"]
    aa = metrics.get("autoattack") or {}
    attacks = []
    clean = metrics.get("clean") or {}
    if clean:
        attacks.append(("clean", 100 * float(clean["acc"]), clean.get("n")))
    pgd = metrics.get("pgd") or {}
    if pgd:
        attacks.append((f"PGD-{pgd.get('steps')}", 100 * float(pgd["acc"]), pgd.get("n")))
    if aa:
        if aa.get("clean_acc") is not None:
            attacks.append(("clean (AutoAttack images)", 100 * float(aa["clean_acc"]), aa.get("n")))
        for name, acc in (aa.get("robust_after") or {}).items():
            attacks.append((f"after {name}", 100 * float(acc), aa.get("n")))
        attacks.append(("AutoAttack", 100 * float(aa["acc"]), aa.get("n")))
    key = model_key(cell)
    model = models.get((preset_of(res), key))
    model_files = []
    if model:
        for fmt, f in sorted((model.get("files") or {}).items()):
            model_files.append({"format": fmt, "href": _href(Path(f["path"]), entries_dir),
                                "name": Path(f["path"]).name, "sha256": f.get("sha256"),
                                "size": f.get("size")})
    ok, what = robustbench_status(res, method_files)
    rb = {"exported": ok, "key": what if ok else None, "reason": None if ok else what, "href": None}
    if ok and rb_dir is not None and (rb_dir / rb_entry_path(res, what)).is_file():
        rb["href"] = _href(rb_dir / rb_entry_path(res, what), entries_dir)
    prov = res.get("provenance") or {}
    git = prov.get("git") or {}
    diag = res.get("diagnostics") or {}
    return {
        "seed": cell.get("seed"), "model": key, "file": str(path),
        "result_href": _href(path, entries_dir), "result_name": path.name,
        "logs": [{"stage": s, "href": _href(p, entries_dir), "name": p.name} for s, p in _stage_logs(res, logs_dir)],
        "model_files": model_files,
        "attacks": [{"name": n, "acc": _fmt(a), "n": f"{int(k):,}" if _num(k) is not None else DASH}
                    for n, a, k in attacks],
        "aa": {"version": aa.get("version"), "attacks": ", ".join(aa.get("attacks") or []),
               "seconds": _fmt(aa.get("seconds"), 0), "warnings": [str(w) for w in aa.get("warnings") or []]},
        "diagnostics": [(k, _fmt(v, 4) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
                        for k, v in sorted(diag.items())],
        "timing": [(k, _fmt(v, 1)) for k, v in sorted((res.get("timing") or {}).items())],
        "sparsity": {"nominal": _fmt(100 * float((res.get("sparsity") or {}).get("nominal") or 0)),
                     "measured": _fmt(100 * float((res.get("sparsity") or {}).get("measured"))
                                      if (res.get("sparsity") or {}).get("measured") is not None else None),
                     "layers": [(k, _fmt(100 * float(v))) for k, v in sorted(((res.get("sparsity") or {}).get("layers") or {}).items())]},
        "provenance": {"revision": git.get("revision") or "unknown", "dirty": git.get("dirty"),
                       "packages": sorted((prov.get("packages") or {}).items()),
                       "device": prov.get("device") or {}, "platform": prov.get("platform"),
                       "python": prov.get("python"), "time": prov.get("time_utc")},
        "robustbench": rb,
        "reproduce": reproduce_command(res),
    }


# ------------------------------------------------------------------------------ the data
def _per_preset(folder: str | Path | None, res: Mapping[str, Any]) -> Path | None:
    """A folder of one preset's run; '{preset}' in it is replaced (a site over several presets)."""
    if not folder:
        return None
    return Path(str(folder).replace("{preset}", preset_of(res) or "unknown"))


def _table_key(row: Mapping[str, Any], threat: str) -> tuple:
    n = _num(row.get("autoattack_n"))
    return (str(row["dataset"]), threat, _num(row.get("eps")), int(n) if n is not None else None)


def _table_title(key: tuple) -> str:
    dataset, threat, eps, n = key
    threat_text = "L∞" if threat == "Linf" else threat
    aa = f"AutoAttack on {n:,} images" if n is not None else "no AutoAttack"
    return f"{dataset} · {threat_text} · ε = {_fmt_sparsity(eps)} · {aa}"


def site_data(runs: Any, *, reference_csv: str | Path | None = None,
              models_manifest: Any = None, logs_dir: str | Path | None = None,
              robustbench_dir: str | Path | None = None, method_files: Iterable[str | Path] = (),
              out_dir: str | Path = "site") -> dict[str, Any]:
    """Everything the templates show, computed once (tests read it too)."""
    from benchmark.model_export import manifest_by_model

    out_dir = Path(out_dir)
    entries_dir = out_dir / "entries"
    files = expand_runs(runs)
    if not files:
        raise FileNotFoundError(f"no result files in {runs}")
    results = {p: read_result(p) for p in files}
    table, pairs, _ = build_tables(files, reference_csv)
    columns = [str(c) for c in table.columns]
    by_key: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
    for p, res in results.items():
        by_key[result_key(res)].append((p, res))
    models = manifest_by_model(models_manifest)
    method_files = list(method_files)

    deltas: dict[tuple, dict] = {}
    pair_rows = [] if pairs is None else [_plain(r) for r in pairs.to_dict("records")]
    for p in pair_rows:
        if p.get("s2ap_applicable") and p.get("s2ap_config") and _num(p.get("delta")) is not None:
            deltas.setdefault((p["dataset"], p["arch"], p["method"], float(p["sparsity"]), p["s2ap_config"]), p)

    entries = []
    for raw in table.to_dict("records"):
        row = _plain(raw)
        key = row_key(row)
        runs_of = sorted(by_key.get(key, []), key=lambda pr: str(pr[1]["cell"].get("seed")))
        if not runs_of:
            raise ValueError(f"leaderboard row {entry_id(row)} has no result file; this is a bug")
        first = runs_of[0][1]
        threat = str((first["metrics"].get("autoattack") or {}).get("norm") or "Linf")
        full_n = _full_test_size(row["dataset"])
        n_aa = _num(row.get("autoattack_n"))
        pair = deltas.get((row["dataset"], row["arch"], row["method"], float(row["sparsity"]), row["config_hash"]))
        delta = None
        if pair is not None and canon_s2ap(row["s2ap"]) == "on":
            delta = {"value": pair["delta"], "p": pair.get("p_value"), "seeds": pair.get("paired_seeds"),
                     "orig": pair.get("orig_aa")}
        eid = entry_id(row)
        slug = entry_slug(row)
        details = [_run_detail(p, res, entries_dir=entries_dir, logs_dir=_per_preset(logs_dir, res),
                               models=models, rb_dir=_per_preset(robustbench_dir, res),
                               method_files=method_files) for p, res in runs_of]
        n_rb = sum(d["robustbench"]["exported"] for d in details)
        entries.append({
            "id": eid, "slug": slug, "page": f"entries/{quote(slug)}.html",
            "table": _table_key(row, threat), "threat": threat,
            "dataset": row["dataset"], "arch": row["arch"], "method": row["method"],
            "s2ap": row["s2ap"], "structure": row.get("structure") or "unstructured",
            "sparsity": row["sparsity"], "sparsity_text": _fmt_sparsity(row["sparsity"]),
            "row": row, "flags": _flags(row, runs_of, full_n), "delta": delta,
            "full_standard_aa": bool(row.get("aa_standard")) and n_aa is not None
                                and full_n is not None and n_aa >= full_n,
            "preset": preset_of(first), "config": first.get("config") or {},
            "config_hash": row["config_hash"],
            "stages": [(s, _stage_summary(s, (first.get("config") or {}).get(s)),
                        json.dumps((first.get("config") or {}).get(s), indent=2, sort_keys=True))
                       for s in STAGES if (first.get("config") or {}).get(s) is not None],
            "runs": details,
            "robustbench": {"exported": n_rb, "total": len(details),
                            "reasons": sorted({d["robustbench"]["reason"] for d in details
                                               if d["robustbench"]["reason"]})},
        })

    colors = svg_plots.method_colors(e["method"] for e in entries)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        groups[e["table"]].append(e)
    tables = []
    for tkey in sorted(groups, key=lambda k: (k[0], k[1], k[2] if k[2] is not None else -1, -(k[3] or 0))):
        rows = groups[tkey]
        plain_rows = [e["row"] for e in rows]
        plots = []
        for arch in sorted({e["arch"] for e in rows}):
            svg = svg_plots.accuracy_vs_sparsity([r for r in plain_rows if r["arch"] == arch], colors,
                                                 title=f"AutoAttack accuracy vs sparsity ({arch})")
            if svg:
                plots.append(svg)
        svg = svg_plots.clean_vs_robust(plain_rows, colors)
        if svg:
            plots.append(svg)
        ids = {row_key(r) for r in plain_rows}
        group_pairs = []
        for p in pair_rows:
            on_key = (p["dataset"], p["arch"], p["method"], "on", float(p["sparsity"]), p.get("s2ap_config"))
            if on_key in ids and _num(p.get("delta")) is not None:
                on_row = next(r for r in plain_rows if row_key(r) == on_key)
                group_pairs.append({**p, "n_paired": (_num(on_row.get("autoattack_n")) or 0)
                                    * (_num(p.get("paired_seeds")) or 0)})
        svg = svg_plots.s2ap_difference(group_pairs, colors)
        if svg:
            plots.append(svg)
        svg = svg_plots.reference_vs_ours(plain_rows, colors)
        if svg:
            plots.append(svg)
        tables.append({"key": tkey, "title": _table_title(tkey), "entries": rows, "plots": plots,
                       "archs": sorted({e["arch"] for e in rows})})

    revisions = sorted({((res.get("provenance") or {}).get("git") or {}).get("revision") or "unknown"
                        for res in results.values()})
    dirty = any(((res.get("provenance") or {}).get("git") or {}).get("dirty") for res in results.values())
    presets = sorted({preset_of(res) or "?" for res in results.values()})
    filters = {
        "dataset": sorted({e["dataset"] for e in entries}),
        "arch": sorted({e["arch"] for e in entries}),
        "structure": sorted({e["structure"] for e in entries}),
        "method": sorted({e["method"] for e in entries}),
        "s2ap": sorted({e["s2ap"] for e in entries}),
        "sparsity": [_fmt_sparsity(s) for s in sorted({float(e["sparsity"]) for e in entries})],
    }
    download = {"columns": ["entry"] + columns,
                "rows": [{"id": e["id"], "values": {"entry": e["id"], **{c: e["row"].get(c) for c in columns}}}
                         for e in entries]}
    return {"entries": entries, "tables": tables, "filters": filters, "download": download,
            "columns": columns, "n_files": len(files), "revisions": revisions, "dirty": dirty,
            "presets": presets, "legend": FLAG_LEGEND, "has_reference": reference_csv is not None,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ------------------------------------------------------------------------------ rendering
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _fmt
    env.filters["sparsity"] = _fmt_sparsity
    env.filters["sortnum"] = lambda v: "" if _num(v) is None else repr(float(v))
    return env


def build_site(runs: Any, out_dir: str | Path, *, reference_csv: str | Path | None = None,
               models_manifest: Any = None, logs_dir: str | Path | None = None,
               robustbench_dir: str | Path | None = None, method_files: Iterable[str | Path] = (),
               title: str | None = None) -> Path:
    """Writes the site for the result files under ``runs`` into ``out_dir``; returns index.html.

    ``runs``: result files and/or folders (several presets may share one site).
    ``models_manifest``: one model manifest or a list (one per preset), for links and sha256.
    ``logs_dir``, ``robustbench_dir``: the run's logs (``work/<preset>/logs``) and RobustBench
    export; '{preset}' in them stands for each result's preset."""
    out_dir = Path(out_dir)
    data = site_data(runs, reference_csv=reference_csv, models_manifest=models_manifest,
                     logs_dir=logs_dir, robustbench_dir=robustbench_dir, method_files=method_files,
                     out_dir=out_dir)
    title = title or "Adversarial pruning leaderboard: " + ", ".join(data["presets"])
    env = _environment()
    index = env.get_template("index.html.j2")
    entry = env.get_template("entry.html.j2")

    def build(tmp: Path) -> None:
        (tmp / "assets").mkdir(parents=True)
        for name in ("leaderboard.js", "style.css"):
            shutil.copyfile(STATIC / name, tmp / "assets" / name)
        atomic_write_text(tmp / "index.html",
                          index.render(title=title, data=data, inline_data=inline_json(data["download"]),
                                       legend=FLAG_LEGEND, root=""))
        for e in data["entries"]:
            atomic_write_text(tmp / "entries" / f"{e['slug']}.html",
                              entry.render(title=title, e=e, legend=FLAG_LEGEND, root="../", data=data))

    replace_dir(out_dir, build)
    return out_dir / "index.html"


__all__ = ["build_site", "site_data", "inline_json", "FLAG_LEGEND"]
