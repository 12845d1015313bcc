"""What publishing re-derives instead of reading it from a result file.

A result JSON is text anyone can edit consistently: counts with their flag strings, the recorded
cell, sparsity, AutoAttack's per-attack numbers, revision and code digest all pass the result
rules (``benchmark.core.result_file``) when changed together. So before a run is published
(``benchmark.publishing.publish.check_run``), ``check(chk)`` re-derives what it can from the files that made
the numbers and refuses every disagreement, each as one line naming the file:

- ``results``: each result lies at the path of its recorded cell, and that cell is one of the
  preset's grid with the preset's config hash for it; the stage configs inside the model file
  (the checkpoint's own meta, not the result) are the preset's for that cell, and the result
  records those same configs; no two seeds of a cell share a model file (same sha256: a seed
  copied under another seed would narrow the confidence interval); the code digest of the
  recorded revision is recomputed from git's tree of HEAD (not the working tree, not the result);
- ``results`` (AutoAttack evidence): AutoAttack's per-shard records (``work/<preset>/state/evaluate/.../autoattack``)
  exist and give the result's per-image flags, per-attack robust counts (``robust_after``, which
  the lowered-after-APGD flag comes from), perturbed counts and warnings: a deleted record
  refuses publication instead of silently dropping the flag it supports;
- ``models``: the sparsity is measured again from the model file; and the first
  ``reattack_batches`` PGD batches (default 1; 0 skips) are attacked again with the saved model,
  the preset's protocol and seed, on this machine: every per-image clean and PGD result must be
  the recorded one (the batches are the evaluation's own, so the random starts are too).

Torch is imported inside ``_model_checks`` only: the other checks run on the JSON files alone.
"""
from __future__ import annotations

import math
import os
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core import safe_json
from benchmark.core.provenance import stage_code_digest
from benchmark.core.result_file import ResultError, read_result
from benchmark.results.staleness import code_scope_of

DEFAULT_REATTACK_BATCHES = 1
CELL_FIELDS = ("dataset", "arch", "method", "s2ap", "seed", "preset", "pretrain_recipe", "config_hash")


def expected_cells(cfg: Mapping[str, Any], run_dir: Path, search_dirs) -> dict[Path, dict[str, Any]]:
    """result path -> the cell the preset's grid puts there (its cell_json, traits and recipe)."""

    methods = apcfg.methods_of(cfg, search_dirs)
    cells = apcfg.grid_cells(cfg, methods)
    recipes = apcfg.pretrain_recipes(cfg, cells, apcfg.dense_cells(cfg, cells))
    out = {}
    for c in apcfg.dense_cells(cfg, cells) + cells:
        path = (run_dir / "runs" / c["dataset"] / c["arch"] / c["method"] / apcfg.s2ap_to_path(c["s2ap"])
                / f"sp{c['sparsity']}" / f"seed{c['seed']}.json")
        out[path.resolve()] = {"json": apcfg.cell_json(cfg, c), "cell": c,
                               "pretrain": (recipes.get(c.get("recipe")) or {}).get("config")}
    return out


def _recorded_cell_problem(res: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:

    rec = res["cell"]
    diff = [f for f in CELL_FIELDS if rec.get(f) != expected.get(f)]
    try:
        if apcfg.canonical_sparsity(rec.get("sparsity")) != apcfg.canonical_sparsity(expected["sparsity"]):
            diff.append("sparsity")
    except ValueError:
        diff.append("sparsity")
    if not diff:
        return None
    shown = ", ".join(f"{f} {rec.get(f)!r} (its path: {expected.get(f)!r})" for f in diff[:4])
    return f"records another cell than its path: {shown}"


def _expected_stage_configs(cfg, entry) -> dict[str, Any]:

    c = entry["cell"]
    out = {}
    if entry["pretrain"] is not None:
        out["pretrain"] = entry["pretrain"]
    if c["method"] != "dense":
        for stage in ("prune", "finetune"):
            out[stage] = apcfg.stage_config(cfg, stage, dataset=c["dataset"], arch=c["arch"],
                                            method=c["method"], s2ap=c["s2ap"], traits=c.get("traits"))
    out["evaluate"] = apcfg.stage_config(cfg, "evaluate", dataset=c["dataset"], arch=c["arch"])
    return out


class HeadCode:
    """The stage code digests of git's HEAD tree (``git archive``): what the commit holds, whatever
    the working tree or a result says, per code scope (a row covers the shared stage code and its
    own method's files, ``benchmark.results.staleness``). ``ok`` is False when git cannot give the
    tree. Call ``close`` (or use it in a ``with``) to remove the extracted copy."""

    def __init__(self, repo: Path) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="apbench-head-")
        self.tree = Path(self._tmp.name) / "tree"
        self._memo: dict[tuple, str] = {}
        archive = Path(self._tmp.name) / "head.tar"
        with open(archive, "wb") as fh:
            # the whole commit: a method file of a row may live outside benchmark/ and methods/
            proc = subprocess.run(["git", "archive", "HEAD"], cwd=repo, stdout=fh,
                                  stderr=subprocess.PIPE, timeout=300)
        self.ok = proc.returncode == 0
        if self.ok:
            with tarfile.open(archive) as tar:
                tar.extractall(self.tree, filter="data")
        archive.unlink()

    def of_result(self, res: Mapping[str, Any]) -> str | None:
        """HEAD's digest of the scope the result's recorded digest covers; None without a tree."""
        if not self.ok:
            return None
        scope = code_scope_of(dict(res))
        # method files are recorded as the workflow names them, relative to the repository
        files = tuple(f for f in scope["method_files"]
                      if not Path(f).is_absolute() and (self.tree / f).is_file())
        key = (scope["method"], scope["s2ap"], files)
        if key not in self._memo:
            self._memo[key] = stage_code_digest(self.tree, method=scope["method"], s2ap=scope["s2ap"],
                                                method_files=[self.tree / f for f in files])
        return self._memo[key]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> HeadCode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def head_stage_code(repo: Path) -> str | None:
    """The shared stage code digest of git's HEAD tree (no method's own files); None when git
    cannot give it."""
    with HeadCode(repo) as head:
        return stage_code_digest(head.tree) if head.ok else None


def _evidence_dir(root: Path, run_dir: Path, preset: str, result: Path) -> Path:
    rel = result.relative_to((run_dir / "runs").resolve()).with_suffix("")
    return root / "work" / preset / "state" / "evaluate" / rel / "autoattack"


def evidence_problems(res: Mapping[str, Any], folder: Path) -> list[str]:
    """Why the AutoAttack shard records in ``folder`` do not back the result's AutoAttack numbers."""
    aa = res["metrics"].get("autoattack")
    if aa is None:
        return []
    files = sorted(folder.glob("shard_*.json")) if folder.is_dir() else []
    if not files:
        return [f"AutoAttack's per-shard records are missing ({folder}): the flags they support "
                "(warnings, lowered-after-APGD) cannot be checked; rerun the evaluation"]
    shards = []
    for f in files:
        try:
            shards.append(safe_json.read_json_file(f))
        except safe_json.JSONFileError as exc:
            return [f"AutoAttack record {exc}"]
    try:
        shards.sort(key=lambda s: int(s["start"]))
        flags = "".join(str(s["flags"]) for s in shards)
        spans = [(int(s["start"]), int(s["end"])) for s in shards]
        perturbed: dict[str, int] = defaultdict(int)
        for s in shards:
            for attack, count in (s.get("perturbed") or {}).items():
                perturbed[str(attack)] += int(count)
        warnings = sorted({str(w) for s in shards for w in s.get("warnings") or []})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [f"AutoAttack records in {folder} are not shard records ({exc!r})"]
    problems = []
    n = int(aa["n"])
    if spans[0][0] != 0 or spans[-1][1] != n or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        problems.append(f"AutoAttack records in {folder} cover {spans}, not the {n} images attacked")
    if flags != res["flags"].get("autoattack"):
        problems.append("its AutoAttack per-image flags are not the ones AutoAttack's records hold")
    # robust_after as benchmark.evaluation.autoattack derives it: the final count plus the images the
    # attacks after each one broke
    attacks = list(aa.get("attacks") or [])
    derived, remaining = {}, flags.count("1")
    for attack in reversed(attacks):
        derived[attack] = remaining / n if n else None
        remaining += perturbed.get(attack, 0)
    recorded = aa.get("robust_after") or {}
    for attack in sorted(set(derived) | set(recorded)):
        got, want = recorded.get(attack), derived.get(attack)
        if got is None or want is None or not math.isclose(float(got), want, abs_tol=1e-12):
            problems.append(f"robust_after[{attack!r}] {got} is not what AutoAttack's records give "
                            f"({want})")
    if {a: int(c) for a, c in (aa.get("perturbed") or {}).items()} != {a: perturbed.get(a, 0) for a in attacks}:
        problems.append(f"perturbed {aa.get('perturbed')} is not the records' {dict(perturbed)}")
    # the evaluation may add its own log-parse warning to AutoAttack's
    ours = sorted(str(w) for w in aa.get("warnings") or [] if not str(w).startswith("log parse mismatch"))
    if ours != warnings:
        problems.append("its AutoAttack warnings are not the ones AutoAttack's records hold")
    return problems


def _model_checks(res: Mapping[str, Any], model_path: Path, stage_cfgs: Mapping[str, Any],
                  root: Path, reattack_batches: int) -> tuple[list[str], dict[str, Any] | None]:
    """(problems, the checkpoint's meta): sparsity measured again, the first PGD batches again."""
    import torch  # deferred: torch

    from benchmark.core import masking  # deferred: torch

    # deferred: pyautoattack, torch
    from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval, stage_config

    # deferred: pyautoattack, torch, tqdm
    from benchmark.training.stages import dataset_info, load_exported, load_splits

    cell = res["cell"]
    info = dataset_info(cell["dataset"])
    ev = stage_cfgs["evaluate"]
    try:
        model, masks, meta = load_exported(model_path, cell["arch"], info, ev.get("model"))
        granularity = meta.get("granularity") if masks is not None else None
        sparsity = masking.measure_sparsity(model, masks, granularity)
    except Exception as exc:  # any failure to load is a refusal, with the loader's own words
        return [f"its model file {model_path} cannot be loaded and measured: {exc}"], None
    problems = []
    rec = res["sparsity"]
    fields = ("zeros", "total", "kept_zero")
    if any(rec.get(f) != sparsity.get(f) for f in fields) \
            or (rec.get("mask") or {}).get("kept") != (sparsity.get("mask") or {}).get("kept") \
            or not math.isclose(float(rec["measured"]), float(sparsity["measured"]), abs_tol=1e-12):
        problems.append(f"its recorded sparsity ({rec['zeros']}/{rec['total']} zeros) is not the "
                        f"model file's ({sparsity['zeros']}/{sparsity['total']})")
    proto = res["protocol"]
    if reattack_batches <= 0 or not res["flags"].get("pgd"):
        return problems, meta
    bs = int(proto["batch_size"])
    k = min(int(proto["pgd_n"]), bs * reattack_batches)
    data = dict(ev.get("data") or {})
    if data.get("root") and not Path(data["root"]).is_absolute():
        data["root"] = str(root / data["root"])
    ecfg = stage_config(ev["evaluate"], info.eps, None)
    ecfg.update(clean_n=k, pgd_n=k, batch_size=bs, autoattack=None)
    try:
        torch.set_num_threads(max(1, int((ev.get("runtime") or {}).get("threads") or 1)))
        _, _, test_set = load_splits(cell["dataset"], data, augment=False)
        again = evaluate_model(prepare_for_eval(model), test_set, ecfg, "cpu", progress=False)
    except Exception as exc:  # the data or the model cannot be evaluated here: say so, refuse
        return problems + [f"its first {k} images could not be attacked again here: {exc}"], meta
    for name in ("clean", "pgd"):
        ours, theirs = again["flags"][name], res["flags"][name][:k]
        if ours != theirs:
            where = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
            problems.append(f"re-attacked with its model file, {len(where)} of its first {k} "
                            f"per-image {name} results differ from the recorded ones (images "
                            f"{where[:8]}): the result is not this model's")
    return problems, meta


def check(chk: Any, stamp: Mapping[str, Any] | None, *, search_dirs: list[Path],
          repo: Path | None = None, reattack_batches: int = DEFAULT_REATTACK_BATCHES) -> None:
    """Adds to ``chk`` (a ``benchmark.publishing.publish.RunCheck``) every disagreement between its results
    and what can be re-derived (see the module docstring); ``stamp`` is the aggregation's record
    of its inputs, ``search_dirs`` find method files."""

    if chk.cfg is None:
        return
    root = chk.root
    with HeadCode(repo or root) as head:
        _check_results(chk, head, stamp, search_dirs, root, reattack_batches)


def _check_results(chk, head: HeadCode, stamp: Mapping[str, Any] | None, search_dirs, root: Path,
                   reattack_batches: int) -> None:
    """``check``'s body, with HEAD's tree at hand."""
    run_dir = chk.run_dir.resolve()
    expected = expected_cells(chk.cfg, run_dir, search_dirs)
    if not head.ok:
        chk.fail("results", f"git cannot give the code of HEAD in {root}: the stage code "
                            "of the results cannot be checked")
    by_group: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    refused = set()
    cwd = Path((stamp or {}).get("cwd") or root)
    for name in (stamp or {}).get("inputs") or {}:
        # the stamp's paths as written: a link among them resolves elsewhere before the other
        # checks see it
        problem = safe_json.regular_file_problem(cwd / name, safe_json.MAX_BYTES)
        if problem is not None:
            chk.fail("results", f"{name} {problem}")
            refused.add((cwd / name).resolve())
    for path in chk.results:
        where = os.path.relpath(path, root)
        if Path(path).resolve() in refused:
            continue
        try:
            res = read_result(path)
        except (ResultError, OSError):
            continue  # reported by the results check
        if res.get("submission"):
            continue  # its cell is its own (benchmark.publishing.submission); its model is checked by sha256
        entry = expected.get(Path(path).resolve())
        if entry is None:
            chk.fail("results", f"{where} is not a result of the preset's grid (no cell of "
                                f"{chk.preset} lies at that path)")
            continue
        problem = _recorded_cell_problem(res, entry["json"])
        if problem:
            chk.fail("results", f"{where} {problem}")
            continue
        head_code = head.of_result(res)
        if head_code is not None and res["provenance"]["stage_code"] != head_code:
            chk.fail("results", f"{where} records stage code {res['provenance']['stage_code']}; "
                                f"git's HEAD holds {head_code} for its method: rerun it")
        stage_cfgs = _expected_stage_configs(chk.cfg, entry)
        recorded_eval = (res.get("config") or {}).get("evaluate")
        if recorded_eval is None or apcfg.stage_key(recorded_eval) != apcfg.stage_key(stage_cfgs["evaluate"]):
            chk.fail("results", f"{where}: its evaluate config is not the preset's for its cell")
        folder = _evidence_dir(root, chk.run_dir, chk.preset, Path(path))
        for p in evidence_problems(res, folder):
            chk.fail("results", f"{where}: AutoAttack evidence: {p}")
        model = chk.models.get(path)
        if model is None:
            continue  # the models check reported it
        sha = res["model"]["sha256"]  # the models check found the file's sha256 equal to it
        c = res["cell"]
        group = (c["dataset"], c["arch"], c["method"], c["s2ap"], apcfg.canonical_sparsity(c["sparsity"]))
        by_group[group][sha].append(where)
        problems, meta = _model_checks(res, model, stage_cfgs, root, reattack_batches)
        for p in problems:
            chk.fail("models", f"{where}: {p}")
        for stage, made in ((meta or {}).get("configs") or {}).items():
            if stage in stage_cfgs and apcfg.stage_key(made) != apcfg.stage_key(stage_cfgs[stage]):
                chk.fail("results", f"{where}: its model file was made by a {stage} stage with another "
                                    "config than the preset's for its cell")
            recorded = (res.get("config") or {}).get(stage)
            if recorded is not None and apcfg.stage_key(recorded) != apcfg.stage_key(made):
                chk.fail("results", f"{where}: its recorded {stage} config is not the one its model "
                                    "file was made with")
    for shas in by_group.values():
        for sha, wheres in shas.items():
            if len(wheres) > 1:
                chk.fail("results", f"{', '.join(wheres)} evaluated one and the same model file "
                                    f"(sha256 {sha[:12]}): seeds of a cell must be separate runs")


__all__ = ["DEFAULT_REATTACK_BATCHES", "check", "evidence_problems", "expected_cells", "HeadCode",
           "head_stage_code"]
