"""The static web leaderboard: one ``index.html`` with every row, a page per entry, no network.

Long because the index and the entry pages are built in one pass from one data model of the rows,
which its helpers share.

``build_site(runs, out_dir, ...)`` writes::

  out_dir/index.html            one table per (dataset, threat model, eps, AutoAttack images),
                                filters, search, sorting, CSV/JSON download of the shown rows,
                                SVG plots (matplotlib); the leaderboard rows inline as JSON
  out_dir/entries/<slug>.html   one page per entry (leaderboard row): config and hash, recipe of
                                every stage, per-attack accuracy, diagnostics, provenance, links
                                to result JSON, logs, model files (sha256), RobustBench export,
                                the command that reproduces it
  out_dir/assets/leaderboard.js, out_dir/assets/style.css

The folder is built aside and swapped in whole. Links to result files, logs, models and
RobustBench entries are relative, so the site keeps working when ``results/<preset>/`` is copied
or opened from ``file://``. Inputs: the result files (through ``benchmark.core.result_file.read_result``,
the suite's one reader) and, per preset, the leaderboard of ``benchmark.results.aggregate.build_tables``
(so the page and that preset's leaderboard.csv show the same numbers; results of different
presets are never pooled). A file that breaks a rule stops the build, as it stops the
aggregation; with ``exclude_invalid`` it is listed on the page as excluded instead.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmark.core.config import s2ap_search_value, s2ap_to_path
from benchmark.core.datasets import get_info
from benchmark.core.entries import (
    canon_s2ap,
    entry_id,
    entry_slug,
    expand_runs,
    model_key,
    preset_of,
    reproduce_command,
    result_key,
    row_key,
)
from benchmark.core.io import atomic_write_text, replace_dir
from benchmark.core.model_files import manifest_by_model
from benchmark.core.result_file import ResultError, read_result
from benchmark.publishing import site_links
from benchmark.publishing.export_robustbench import entry_path as rb_entry_path
from benchmark.publishing.export_robustbench import robustbench_status
from benchmark.publishing.ranked_board import ranked_boards
from benchmark.results import flags as flag_legend
from benchmark.results import site_plots
from benchmark.results.aggregate import AggregationError, build_tables
from benchmark.results.published import finite_number as _num
from benchmark.results.staleness import CurrentCode

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = PACKAGE_DIR / "templates"
STATIC = PACKAGE_DIR / "static"
DASH = "—"

# code, short name, what it means (the legend); the reason of each occurrence is its tooltip
FLAG_LEGEND = [(f.code, f.title, f.meaning) for f in flag_legend.LEGEND + flag_legend.SITE_LEGEND]
STAGES = ("pretrain", "prune", "finetune", "evaluate")


# ------------------------------------------------------------------------------ values
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

        return int(get_info(dataset).test_size)
    except Exception:  # a dataset of a plugin, unknown here: no claim either way
        return None


# ------------------------------------------------------------------------------ per entry
def _seed(res: Mapping[str, Any]) -> str:
    return f"seed {res['cell'].get('seed')}"


def _flag_reason(name: str, detail: str, row: Mapping[str, Any], runs: list[tuple[Path, dict]],
                 current_code: CurrentCode) -> str:
    """Why a flag of the leaderboard's ``flag`` column is set, from the result files."""
    if name == "warnings":
        warned = [f"{_seed(res)}: {str(w).strip().splitlines()[0]}" for _, res in runs
                  for w in ((res["metrics"].get("autoattack") or {}).get("warnings") or []) if str(w).strip()]
        return "; ".join(warned)[:600] or "warnings during the evaluation"
    if name == "lowered-after-apgd":
        lowered = []
        for _, res in runs:
            aa = res["metrics"].get("autoattack") or {}
            if aa.get("lowered_by") or aa.get("lowered_after_apgd"):
                after = aa.get("robust_after") or {}
                apgd = min((v for k, v in after.items() if k.startswith("apgd")), default=None)
                extra = (f" (after APGD {100 * apgd:.2f} %, final {100 * float(aa.get('acc', 0)):.2f} %)"
                         if apgd is not None else "")
                lowered.append(f"{_seed(res)}: {'+'.join(aa.get('lowered_by') or []) or 'a later attack'}{extra}")
        return "; ".join(lowered) or detail
    if name == "non-standard-AA":
        return f"attacks: {row.get('aa_attacks') or 'unknown'} (version {row.get('aa_version')})"
    if name == "pgd-broke-aa-robust":
        return f"{detail} image(s) robust to AutoAttack were broken by PGD"
    if name in ("dirty-tree", "no-revision"):
        out = []
        for _, res in runs:
            git = (res.get("provenance") or {}).get("git") or {}
            if git.get("dirty") is not False:
                out.append(f"{_seed(res)}: revision {git.get('revision') or 'unknown'}"
                           + (" with uncommitted changes" if git.get("dirty")
                              else " (outside a git checkout)"))
        return "; ".join(out)
    if name == "stale-code":
        old = sorted({str((res.get("provenance") or {}).get("stage_code")) for _, res in runs
                      if current_code.is_stale(res)})
        now = sorted({current_code.of_result(res) for _, res in runs})
        return f"stage code {', '.join(old)}; the current code is {', '.join(now)}"
    if name == "submission":
        subs = {res["submission"]["name"]: res["submission"]["method"] for _, res in runs if res.get("submission")}
        return "; ".join(f"{k}: {v}" for k, v in subs.items())
    if name == "claim-outside":
        out = []
        for _, res in runs:
            sub = res.get("submission") or {}
            for what in sub.get("outside") or []:
                claim, got = sub["claims"].get(what), sub["measured"].get(what)
                ci = sub["measured"].get(f"{what}_ci")
                out.append(f"{what}: claimed {_fmt(claim)} %, measured {_fmt(got)} %"
                           + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""))
        return "; ".join(out) or detail
    return detail or name


def _flags(row: Mapping[str, Any], runs: list[tuple[Path, dict]], full_n: int | None,
           current_code: CurrentCode) -> list[dict]:
    """The row's flags (the leaderboard's ``flag`` column, one letter each, with the reason), and
    the site's own test-subset flag."""
    out = []
    for name, detail in flag_legend.split(row.get("flag")):
        flag = flag_legend.BY_NAME.get(name)
        out.append({"code": flag.code if flag else name, "name": flag.title if flag else name,
                    "reason": _flag_reason(name, detail, row, runs, current_code)})
    n = _num(row.get("autoattack_n"))
    if n is not None and full_n is not None and n < full_n:
        subset = flag_legend.BY_NAME["test-subset"]
        out.append({"code": subset.code, "name": subset.title,
                    "reason": f"AutoAttack on the first {int(n):,} of {full_n:,} test images"})
    return out


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
        subset = data.get("train_subset")
        out.append(("training images", "all" if subset in (None, 0) else str(subset)))
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


def _sparsity_detail(sp: Mapping[str, Any]) -> dict[str, Any]:
    """The result's sparsity block for the entry page: zeros of the attacked weights, the mask's
    count beside them, per layer."""
    mask = sp.get("mask")
    return {"nominal": _fmt(100 * float(sp["nominal"])), "measured": _fmt(100 * float(sp["measured"])),
            "zeros": f"{sp['zeros']:,} of {sp['total']:,}",
            "mask": None if mask is None else _fmt(100 * float(mask["sparsity"])),
            "kept_zero": sp.get("kept_zero"),
            "layers": [(k, _fmt(100 * float(v["sparsity"])), f"{v['zeros']:,} / {v['total']:,}")
                       for k, v in sorted(sp["layers"].items())]}


def _run_detail(path: Path, res: dict, *, entries_dir: Path, logs_dir: Path | None,
                models: Mapping[tuple, Mapping[str, Any]], rb_dir: Path | None,
                method_files: list, current_code: CurrentCode) -> dict[str, Any]:
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
        "model_files": model_files, "manifest": model.get("manifest") if model else None,
        "attacks": [{"name": n, "acc": _fmt(a), "n": f"{int(k):,}" if _num(k) is not None else DASH}
                    for n, a, k in attacks],
        "aa": {"version": aa.get("version"), "attacks": ", ".join(aa.get("attacks") or []),
               "seconds": _fmt(aa.get("seconds"), 0), "warnings": [str(w) for w in aa.get("warnings") or []]},
        "diagnostics": [(k, _fmt(v, 4) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
                        for k, v in sorted(diag.items())],
        "timing": [(k, _fmt(v, 1)) for k, v in sorted((res.get("timing") or {}).items())],
        "sparsity": _sparsity_detail(res["sparsity"]),
        "provenance": {"revision": git.get("revision") or "unknown", "dirty": git.get("dirty"),
                       "stage_code": prov.get("stage_code"),
                       "stale": current_code.is_stale(res), "current_code": current_code.of_result(res),
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


def _table_key(row: Mapping[str, Any], threat: str, preset: str | None) -> tuple:
    n = _num(row.get("autoattack_n"))
    return (preset or "", str(row["dataset"]), threat, _num(row.get("eps")),
            int(n) if n is not None else None)


def _table_title(key: tuple, several_presets: bool) -> str:
    preset, dataset, threat, eps, n = key
    threat_text = "L∞" if threat == "Linf" else threat
    aa = f"AutoAttack on {n:,} images" if n is not None else "no AutoAttack"
    title = f"{dataset} · {threat_text} · ε = {_fmt_sparsity(eps)} · {aa}"
    return f"{preset}: {title}" if several_presets else title


def _read_all(files: list[Path], exclude_invalid: bool) -> tuple[dict[Path, dict], list[dict]]:
    """Every valid result record, and the excluded files ({file, rule, detail}); a file that breaks
    a rule stops the build unless exclude_invalid (as in benchmark.results.aggregate)."""
    results, excluded = {}, []
    for path in files:
        try:
            results[path] = read_result(path)
        except ResultError as exc:
            if not exclude_invalid:
                raise AggregationError(f"{exc}. (To leave it out and list it as excluded, build "
                                       "the site with --exclude-invalid.)") from exc
            excluded.append({"file": str(path), "rule": exc.rule, "detail": exc.detail})
    return results, excluded


def _published_for(published_csv: str | Path | None, preset: str | None) -> Path | None:
    """The published leaderboard of a preset ('{preset}' in the path), when it exists."""
    if not published_csv:
        return None
    path = Path(str(published_csv).replace("{preset}", preset or "unknown"))
    return path if path.is_file() else None


def site_data(runs: Any, *, reference_csv: str | Path | None = None,
              models_manifest: Any = None, logs_dir: str | Path | None = None,
              robustbench_dir: str | Path | None = None, method_files: Iterable[str | Path] = (),
              out_dir: str | Path = "site", exclude_invalid: bool = False,
              published_csv: str | Path | None = None) -> dict[str, Any]:
    """Everything the templates show, computed once (tests read it too).

    Each preset's results are aggregated on their own (benchmark.results.aggregate.build_tables), so a
    site over several presets shows each preset's leaderboard as that preset's leaderboard.csv
    does. ``published_csv``: the published leaderboard to compare with ('{preset}' stands for
    each preset; a preset without one gets no comparison)."""

    out_dir = Path(out_dir)
    entries_dir = out_dir / "entries"
    files = expand_runs(runs)
    if not files:
        raise FileNotFoundError(f"no result files in {runs}")
    results, excluded = _read_all(files, exclude_invalid)
    by_preset: dict[str | None, list[Path]] = defaultdict(list)
    for path, res in results.items():
        by_preset[preset_of(res)].append(path)
    several = len(by_preset) > 1
    models = manifest_by_model(models_manifest)
    method_files = list(method_files)
    current_code = CurrentCode()

    entries, columns, pair_rows = [], [], {}
    for preset in sorted(by_preset, key=str):
        group = by_preset[preset]
        published = _published_for(published_csv, preset)
        table, pairs, _ = build_tables(group, reference_csv, exclude_invalid=exclude_invalid,
                                       published_csv=published)
        dropped = {e["file"] for e in table.attrs.get("excluded") or []}
        excluded += [e for e in table.attrs.get("excluded") or [] if e["file"] not in
                     {x["file"] for x in excluded}]
        columns += [str(c) for c in table.columns if str(c) not in columns]
        by_key: dict[tuple, list[tuple[Path, dict]]] = defaultdict(list)
        for p in group:
            if str(p) not in dropped:
                by_key[result_key(results[p])].append((p, results[p]))
        pair_rows[preset] = [] if pairs is None else [_plain(r) for r in pairs.to_dict("records")]
        deltas: dict[tuple, dict] = {}
        for pr in pair_rows[preset]:
            if pr.get("s2ap_applicable") and pr.get("s2ap_config") and _num(pr.get("delta")) is not None:
                deltas.setdefault((pr["dataset"], pr["arch"], pr["method"], float(pr["sparsity"]),
                                   pr["s2ap_config"]), pr)
        for raw in table.to_dict("records"):
            row = _plain(raw)
            runs_of = sorted(by_key.get(row_key(row), []), key=lambda pr: str(pr[1]["cell"].get("seed")))
            if not runs_of:
                raise ValueError(f"leaderboard row {entry_id(row)} has no result file; this is a bug")
            first = runs_of[0][1]
            threat = str((first["metrics"].get("autoattack") or {}).get("norm") or "Linf")
            full_n = _full_test_size(row["dataset"])
            n_aa = _num(row.get("autoattack_n"))
            pair = deltas.get((row["dataset"], row["arch"], row["method"], float(row["sparsity"]),
                               row["config_hash"]))
            delta = None
            if pair is not None and canon_s2ap(row["s2ap"]) == "on":
                # the seed-level interval (a t-interval of the per-seed differences, none below
                # 3 seeds) is the evidence for an effect of S2AP; McNemar's p only says whether
                # these models differ on these test images (benchmark/results/aggregate.py)
                lo, hi = _num(pair.get("delta_lo")), _num(pair.get("delta_hi"))
                delta = {"value": pair["delta"], "p": pair.get("p_value"),
                         "seeds": pair.get("paired_seeds"), "orig": pair.get("orig_aa"),
                         "seed_ci": None if lo is None or hi is None else (lo, hi)}
            eid = entry_id(row)
            slug = entry_slug(row, preset)
            details = [_run_detail(p, res, entries_dir=entries_dir, logs_dir=_per_preset(logs_dir, res),
                                   models=models, rb_dir=_per_preset(robustbench_dir, res),
                                   method_files=method_files, current_code=current_code)
                       for p, res in runs_of]
            n_rb = sum(d["robustbench"]["exported"] for d in details)
            entries.append({
                "id": f"{preset}/{eid}" if several else eid, "slug": slug,
                "page": f"entries/{quote(slug)}.html",
                "table": _table_key(row, threat, preset), "threat": threat,
                "dataset": row["dataset"], "arch": row["arch"], "method": row["method"],
                "s2ap": row["s2ap"], "structure": row.get("structure") or "unstructured",
                "sparsity": row["sparsity"], "sparsity_text": _fmt_sparsity(row["sparsity"]),
                "row": row, "flags": _flags(row, runs_of, full_n, current_code), "delta": delta,
                "published": _num(row.get("published_autoattack")) is not None,
                "full_standard_aa": bool(row.get("aa_standard")) and n_aa is not None
                                    and full_n is not None and n_aa >= full_n,
                "preset": preset, "config": first.get("config") or {},
                # the ranked board's name and paper columns (benchmark.publishing.ranked_board)
                "name": ((first.get("submission") or {}).get("title")
                         or (first.get("submission") or {}).get("name") or row["method"]),
                "submission_paper": (first.get("submission") or {}).get("paper"),
                "submission": bool(first.get("submission")),
                "config_hash": row["config_hash"],
                "stages": [(st, _stage_summary(st, (first.get("config") or {}).get(st)),
                            json.dumps((first.get("config") or {}).get(st), indent=2, sort_keys=True))
                           for st in STAGES if (first.get("config") or {}).get(st) is not None],
                "runs": details,
                "robustbench": {"exported": n_rb, "total": len(details),
                                "reasons": sorted({d["robustbench"]["reason"] for d in details
                                                   if d["robustbench"]["reason"]})},
            })

    colors = site_plots.method_colors(e["method"] for e in entries)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for e in entries:
        groups[e["table"]].append(e)
    tables = []
    order = lambda k: (k[0], k[1], k[2], k[3] if k[3] is not None else -1, -(k[4] or 0))  # noqa: E731
    for tkey in sorted(groups, key=order):
        rows = groups[tkey]
        plain_rows = [{**e["row"], "entry": e["id"]} for e in rows]  # entry: the plots' data-row
        plots = []
        for arch in sorted({e["arch"] for e in rows}):
            svg = site_plots.accuracy_vs_sparsity([r for r in plain_rows if r["arch"] == arch], colors,
                                                 title=f"AutoAttack accuracy vs sparsity ({arch})")
            if svg:
                plots.append(svg)
        svg = site_plots.clean_vs_robust(plain_rows, colors)
        if svg:
            plots.append(svg)
        ids = {row_key(r) for r in plain_rows}
        group_pairs = []
        for pr in pair_rows.get(rows[0]["preset"], []):
            on_key = (pr["dataset"], pr["arch"], pr["method"], "on", float(pr["sparsity"]), pr.get("s2ap_config"))
            if on_key in ids and _num(pr.get("delta")) is not None:
                on_row = next(r for r in plain_rows if row_key(r) == on_key)
                group_pairs.append({**pr, "entry": on_row["entry"], "n_paired": (_num(on_row.get("autoattack_n")) or 0)
                                    * (_num(pr.get("paired_seeds")) or 0)})
        svg = site_plots.s2ap_difference(group_pairs, colors)
        if svg:
            plots.append(svg)
        svg = site_plots.reference_vs_ours(plain_rows, colors)
        if svg:
            plots.append(svg)
        tables.append({"key": tkey, "title": _table_title(tkey, several), "entries": rows,
                       "plots": plots, "archs": sorted({e["arch"] for e in rows}),
                       "has_published": any(e["published"] for e in rows)})

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
            "columns": columns, "n_files": len(results), "revisions": revisions, "dirty": dirty,
            "presets": presets, "legend": FLAG_LEGEND, "has_reference": reference_csv is not None,
            "excluded": excluded,
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ------------------------------------------------------------------------------ rendering
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape  # deferred: jinja2

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
               title: str | None = None, exclude_invalid: bool = False,
               published_csv: str | Path | None = None, banners: Iterable[str] = (),
               archived: Iterable[dict[str, Any]] = (), snippet_manifest: str | None = None) -> Path:
    """Writes the site for the result files under ``runs`` into ``out_dir``; returns index.html.

    ``runs``: result files and/or folders (several presets may share one site).
    ``models_manifest``: one model manifest or a list (one per preset), for links and sha256.
    ``logs_dir``, ``robustbench_dir``: the run's logs (``work/<preset>/logs``) and RobustBench
    export; '{preset}' in them stands for each result's preset. ``exclude_invalid``: list result
    files that break a rule as excluded (on the page) instead of stopping. ``published_csv``: the
    published leaderboard to compare with ('{preset}' as for the logs). ``banners``: lines shown
    at the top of every page and above every table (an archived publication says so there).
    ``archived``: the archived publications the index links to ({preset, revision, href,
    banner} each), listed apart from the current board. ``snippet_manifest``: the model
    manifest's path as the load snippets of the ranked board (ranked.html) name it ('{preset}'
    as for the logs; default: where the manifest lies, relative to the current folder)."""
    out_dir = Path(out_dir)
    method_files = list(method_files)
    data = site_data(runs, reference_csv=reference_csv, models_manifest=models_manifest,
                     logs_dir=logs_dir, robustbench_dir=robustbench_dir, method_files=method_files,
                     out_dir=out_dir, exclude_invalid=exclude_invalid, published_csv=published_csv)
    title = title or "Adversarial pruning leaderboard: " + ", ".join(data["presets"])
    data["banners"] = [str(b) for b in banners]
    data["archived"] = [dict(a) for a in archived]
    data["ranked"] = ranked_boards(data["tables"], method_files=method_files,
                                   snippet_manifest=snippet_manifest)
    env = _environment()
    index = env.get_template("index.html.j2")
    entry = env.get_template("entry.html.j2")
    ranked = env.get_template("ranked.html.j2")

    def build(tmp: Path) -> None:
        (tmp / "assets").mkdir(parents=True)
        for name in ("leaderboard.js", "style.css"):
            shutil.copyfile(STATIC / name, tmp / "assets" / name)
        atomic_write_text(tmp / "index.html",
                          index.render(title=title, data=data, inline_data=inline_json(data["download"]),
                                       legend=FLAG_LEGEND, root=""))
        atomic_write_text(tmp / "ranked.html", ranked.render(title=title, data=data, legend=FLAG_LEGEND,
                                                             root=""))
        for e in data["entries"]:
            atomic_write_text(tmp / "entries" / f"{e['slug']}.html",
                              entry.render(title=title, e=e, legend=FLAG_LEGEND, root="../", data=data))
        # the pages link where the files lie; the site must stand on its own (benchmark.publishing.site_links)
        # the archived publications' sites are built into this one afterwards (their links hold)
        site_links.bundle(tmp, out_dir.resolve().parent, pending=[a["href"] for a in data["archived"]])

    replace_dir(out_dir, build)
    return out_dir / "index.html"


__all__ = ["build_site", "site_data", "inline_json", "FLAG_LEGEND"]
