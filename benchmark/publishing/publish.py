"""Publishing a finished run: ``results/<preset>/`` -> ``results/published/<preset>/``.

Long because the integrity checks a publication passes are one list, run together so that a refusal
names every reason.

A run writes ``results/<preset>/`` (ignored by git: it is yours). ``python -m benchmark publish
--preset NAME`` (``make publish PRESET=NAME``) copies it to ``results/published/<preset>/``
(committed), only when every integrity check passes; otherwise it refuses with every reason and
writes nothing, naming per reason the command that fixes it. The checks:

- ``purpose``: the preset is a benchmark, not a plumbing preset (``purpose: plumbing``, tiny and
  smoke: their numbers mean nothing);
- ``git``: the repository is a git checkout at a commit, with no uncommitted change to a tracked
  file outside ``results/``, no untracked file under ``benchmark/``, ``methods/``, ``presets/`` or
  ``workflows/`` (code the commit would not have), and the preset file and its method files
  committed;
- ``finished``: the aggregation finished (``leaderboard.stamp.json``), its inputs are every result
  the preset's grid asks for (plus any submissions), and no input changed since it was aggregated;
- ``results``: every result file validates (``benchmark.core.result_file.read_result``) and was made for
  this preset from a clean tree at the current revision (HEAD) by the current stage code of its
  row (benchmark.results.staleness), and so was every stage that made its model (pretrain, prune,
  finetune, evaluate: a model Snakemake kept from older code is refused, not reused);
- ``leaderboard``: the recorded aggregation, rerun into a scratch folder, gives the same tables
  (every CSV and markdown file byte for byte);
- ``models``: every result names the model file it evaluated, and that file still has the sha256
  the result recorded (the published model is the one that was evaluated); the exported copies
  are verified against their manifest.

What is published: the result JSONs (``runs/``, ``submissions/``), the leaderboard tables and
plots, the model manifest and, when their total size is at most ``MODEL_BUDGET_BYTES`` (32 MiB),
the safetensors model files (the quick and offline presets' small CNNs take under 10 MiB; a
larger export is published as its manifest only, whose sha256 lets anyone verify a copy hosted
elsewhere), the RobustBench entries, a site of the preset (``site/``) and ``published.json`` (the
revision, the checks passed, and the sha256 of every published file). Then
``results/published/site/`` is rebuilt over every published preset.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_write_json, replace_dir, sha256_file
from benchmark.core.model_files import export_models, verify_manifest
from benchmark.core.paths import REPO_ROOT
from benchmark.core.provenance import (
    CODE_DIRS,  # code a commit must hold: untracked files there
    git_revision,
)
from benchmark.core.result_file import ResultError, read_result
from benchmark.planning.jobgraph import JobGraph
from benchmark.publishing import result_trust, site_links
from benchmark.publishing.export_robustbench import export_robustbench
from benchmark.results.leaderboard_stamp import read_stamp
from benchmark.results.staleness import CurrentCode, archive, archive_record, banner_text, stale_stages

log = logging.getLogger(__name__)

REPO = REPO_ROOT
PUBLISHED = Path("results") / "published"
MODEL_BUDGET_BYTES = 32 * 2 ** 20
PUBLISHED_MODEL_FORMATS = ("safetensors",)
PUBLISHED_FORMAT = "apbench-published-run"
CHECKS = ("purpose", "git", "finished", "results", "leaderboard", "models")
# where a clone of the repository has a published preset's model manifest (the load snippets)
SNIPPET_MANIFEST = "results/published/{preset}/export/models/manifest.json"


class PublishError(UserError, ValueError):
    """A run that must not be published; ``problems`` lists (check, detail) pairs, ``fixes`` the
    command that fixes each (same order; None where no command can)."""

    def __init__(self, preset: str, problems: list[tuple[str, str]],
                 fixes: list[str | None] | None = None) -> None:
        self.problems = problems
        self.fixes = list(fixes or [None] * len(problems))
        lines = []
        for (check, detail), fix in zip(problems, self.fixes):
            lines.append(f"  [{check}] {detail}")
            if fix:
                lines.append(f"      fix: {fix}")
        todo = list(dict.fromkeys(f for f in self.fixes if f))
        tail = ("\nto fix every problem, run in order:\n" + "\n".join(f"  {f}" for f in todo)
                if todo else "")
        super().__init__(f"refusing to publish results/{preset}: {len(problems)} problem(s)\n"
                         + "\n".join(lines) + tail)


@dataclass
class RunCheck:
    """What the checks found: the problems, and what publishing needs."""
    preset: str
    root: Path
    problems: list[tuple[str, str]] = field(default_factory=list)
    fixes: list[str | None] = field(default_factory=list)  # the command that fixes each problem
    revision: str | None = None
    cfg: dict[str, Any] | None = None
    preset_file: Path | None = None
    results: list[Path] = field(default_factory=list)
    models: dict[Path, Path] = field(default_factory=dict)  # result -> the model file it evaluated

    def fail(self, check: str, detail: str, fix: str | None = None) -> None:
        self.problems.append((check, detail))
        self.fixes.append(fix)

    def error(self) -> PublishError:
        return PublishError(self.preset, self.problems, self.fixes)

    # the commands the fixes name (the Makefile's targets; rerun = run the preset again)
    @property
    def rerun(self) -> str:
        return f"make run PRESET={self.preset}"

    def fresh_rerun(self) -> str:
        """Models of older code must not be reused: their work folder goes, then the preset reruns."""
        return f"rm -rf work/{self.preset} results/{self.preset} && make run PRESET={self.preset}"

    def reaggregate(self) -> str:
        return (f".venv/bin/python -m benchmark.runner --profile workflows/profiles/local "
                f"--configfile presets/{self.preset}.yaml --forcerun aggregate")

    @property
    def run_dir(self) -> Path:
        return self.root / "results" / self.preset


# ---------------------------------------------------------------- git
def _git(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)


def _check_git(chk: RunCheck, repo: Path, committed: list[Path]) -> None:

    git = git_revision(repo)
    if git["revision"] == "unknown" or git["dirty"] is None:
        chk.fail("git", f"{repo} is not a git checkout with a commit: published numbers must name "
                        "the revision that made them",
                 fix=f"git clone <the repository> && cd <it> && {chk.rerun} && make publish "
                     f"PRESET={chk.preset}")
        return
    chk.revision = git["revision"]
    code_dirs = [d for d in CODE_DIRS if (repo / d).exists()]
    status = _git(["status", "--porcelain", "--untracked-files=all", "--", *code_dirs], repo) \
        if code_dirs else None
    untracked = [line[3:] for line in status.stdout.splitlines() if line.startswith("??")] \
        if status is not None else []
    changed = [f for f in git["dirty_files"] if f not in untracked]  # untracked: reported below
    if changed:
        chk.fail("git", "uncommitted changes to tracked files: " + ", ".join(changed[:10])
                 + (" ..." if len(changed) > 10 else "")
                 + " (commit or stash them, rerun the preset, then publish)",
                 fix=f"git stash -u (or git commit -am '...') && {chk.fresh_rerun()}")
    if untracked:
        chk.fail("git", "untracked code the commit does not hold: " + ", ".join(untracked[:10])
                 + " (commit it, or move it out of " + "/, ".join(CODE_DIRS) + "/)",
                 fix=(f"git add {' '.join(untracked[:10])} && git commit -m '...' (or git stash -u)"
                      f" && {chk.fresh_rerun()}"))
    for path in committed:
        try:
            rel = path.resolve().relative_to(repo.resolve())
        except ValueError:
            chk.fail("git", f"{path} lies outside the repository {repo}: the commit cannot hold it",
                     fix=f"cp {path} methods/ && git add methods/{path.name} && git commit -m '...' "
                         f"(and name methods/{path.name} in presets/{chk.preset}.yaml)")
            continue
        if _git(["ls-files", "--error-unmatch", "--", str(rel)], repo).returncode != 0:
            chk.fail("git", f"{rel} is not committed: the published run must be reproducible from "
                            "the commit",
                     fix=f"git add {rel} && git commit -m '...' && {chk.fresh_rerun()}")


# ---------------------------------------------------------------- the run
def _preset(chk: RunCheck) -> list[Path]:
    """Loads the preset; returns the files the commit must hold (the preset and its method files)."""

    path = chk.root / "presets" / f"{chk.preset}.yaml"
    if not path.is_file():
        chk.fail("finished", f"preset file {path} not found",
                 fix="ls presets/*.yaml (then make publish PRESET=<one of them>)")
        return []
    try:
        cfg = apcfg.load_preset(path)
        cfg = apcfg.validate(cfg, search_dirs=[chk.root, REPO])
    except (UserError, ValueError) as exc:
        chk.fail("finished", f"preset {path} does not validate: {exc}",
                 fix=f"edit {path.name} until `make dry-run PRESET={chk.preset}` passes, then "
                     f"{chk.rerun}")
        return [path]
    chk.cfg, chk.preset_file = cfg, path
    if cfg.get("purpose") == "plumbing":
        # its numbers mean nothing (config.py PURPOSE_NOTES): a published board would be quoted
        chk.fail("purpose", f"preset {chk.preset} is a plumbing preset (purpose: plumbing in "
                            f"{path.name}): it checks that every stage runs, its numbers mean "
                            "nothing and are never published",
                 fix="make run PRESET=quick && make publish PRESET=quick (or any preset whose "
                     "purpose is benchmark)")
    return [path, *map(Path, apcfg.resolve_method_files(cfg["method_files"], [chk.root, REPO]))]


def expected_results(cfg: dict[str, Any], root: Path) -> list[Path]:
    """The result files the preset's grid asks for: the workflow's RUNS, from its job graph."""
    return [root / f for f in JobGraph(cfg, [root, REPO_ROOT]).runs()]


def _stamp_cwd(stamp: dict[str, Any], root: Path) -> Path:
    cwd = Path(stamp.get("cwd") or root)
    return cwd if cwd.is_dir() else root


def _check_finished(chk: RunCheck) -> dict[str, Any] | None:

    try:
        stamp = read_stamp(chk.run_dir)
    except UserError as exc:
        chk.fail("finished", str(exc), fix=chk.rerun)
        return None
    cwd = _stamp_cwd(stamp, chk.root)
    inputs = {}
    for name, sha in stamp["inputs"].items():
        path = (cwd / name).resolve()
        inputs[path] = sha
        if not path.is_file():
            chk.fail("finished", f"{name} was aggregated but no longer exists", fix=chk.rerun)
        elif sha256_file(path) != sha:
            chk.fail("finished", f"{name} changed since the leaderboard was aggregated (rerun the "
                                 "workflow: its aggregate job runs again)", fix=chk.reaggregate())
        try:
            path.relative_to(chk.run_dir.resolve())
        except ValueError:
            chk.fail("finished", f"{name} lies outside {chk.run_dir}: a published run holds only "
                                 "its own results", fix=chk.reaggregate())
    if chk.cfg is not None:
        missing = [p for p in expected_results(chk.cfg, chk.root) if p.resolve() not in inputs]
        if missing:
            chk.fail("finished", f"the run is not finished: {len(missing)} result(s) of the preset's "
                                 f"grid are not in its leaderboard, e.g. {missing[0]} (run `make run "
                                 f"PRESET={chk.preset}` to finish it)", fix=chk.rerun)
    chk.results = sorted(inputs)
    return stamp


def _check_results(chk: RunCheck) -> None:

    current = CurrentCode()
    for path in chk.results:
        if not path.is_file():
            continue
        where = os.path.relpath(path, chk.root)
        try:
            res = read_result(path)
        except ResultError as exc:
            chk.fail("results", str(exc), fix=f"rm {where} && {chk.rerun}")
            continue
        git = res["provenance"]["git"]
        if res["cell"].get("preset") != chk.preset:
            chk.fail("results", f"{where} was made for preset {res['cell'].get('preset')!r}",
                     fix=f"rm {where} && {chk.rerun}")
        if git["dirty"] is None:
            chk.fail("results", f"{where} was made outside a git checkout (revision unknown)",
                     fix=chk.fresh_rerun())
        elif git["dirty"]:
            chk.fail("results", f"{where} was made from a tree with uncommitted changes "
                                f"({', '.join(git['dirty_files'][:5])})",
                     fix=f"git stash -u && {chk.fresh_rerun()}")
        if chk.revision and git["revision"] != chk.revision:
            chk.fail("results", f"{where} was made at revision {git['revision'][:12]}, HEAD is "
                                f"{chk.revision[:12]}: rerun the preset at the current revision",
                     fix=chk.fresh_rerun())
        if res["provenance"]["stage_code"] != current.of_result(res):
            chk.fail("results", f"{where} was made by other stage code ({res['provenance']['stage_code']}"
                                f", current {current.of_result(res)}): rerun it",
                     fix=chk.fresh_rerun())
        if not res.get("submission"):
            # every stage that made the model, not only the evaluation: a dense model or a mask
            # Snakemake kept from older code would otherwise be published as today's
            for stage, why in stale_stages(res, current, chk.revision):
                chk.fail("results", f"{where}: its {stage} stage {why}", fix=chk.fresh_rerun())
        stale = _stale_stages(chk.cfg, res)
        if stale:
            chk.fail("results", f"{where}: its {', '.join(stale)} stage ran with another config than "
                                "the preset's for its cell (a model kept from before the preset "
                                "changed): delete it and rerun the cell", fix=chk.fresh_rerun())


# the stages whose config a cell's result records from the checkpoints that made its model
CELL_STAGES = ("prune", "finetune")


def _stale_stages(cfg: dict[str, Any] | None, res: dict[str, Any]) -> list[str]:
    """The stages of ``res`` whose recorded config does not hash as the preset's for its cell.
    The cell's config_hash comes from the preset when the result is written, the recorded configs
    from the checkpoints: a checkpoint Snakemake did not rerun (its metadata lost, say) shows only
    here."""

    cell = res["cell"]
    if cfg is None or res.get("submission") or cell.get("method") == "dense":
        return []
    stale = []
    for stage in CELL_STAGES:
        recorded = (res.get("config") or {}).get(stage)
        if recorded is None:
            continue
        expected = apcfg.stage_config(cfg, stage, dataset=cell["dataset"], arch=cell["arch"],
                                      method=cell["method"], s2ap=cell["s2ap"])
        if apcfg.stage_key(recorded) != apcfg.stage_key(expected):
            stale.append(stage)
    return stale


def _out_arg(argv: list[str]) -> tuple[int, str, str] | None:
    """(index, value, prefix) of the --out argument: argv[index] == prefix + value."""
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            return i + 1, argv[i + 1], ""
        if a.startswith("--out="):
            return i, a.split("=", 1)[1], "--out="
    return None


def _check_leaderboard(chk: RunCheck, stamp: dict[str, Any]) -> None:
    argv = list(stamp["argv"])
    if not argv or argv[0] != "aggregate":
        chk.fail("leaderboard", f"the stamp records {argv[:1]}, not an aggregate command",
                 fix=chk.reaggregate())
        return
    out = _out_arg(argv)
    cwd = _stamp_cwd(stamp, chk.root)
    if out is None or (cwd / out[1]).resolve() != chk.run_dir.resolve():
        chk.fail("leaderboard", f"the recorded aggregation wrote to {out[1] if out else '?'}, not "
                                f"{chk.run_dir}", fix=chk.reaggregate())
        return
    with tempfile.TemporaryDirectory(prefix="apbench-publish-") as tmp:
        argv[out[0]] = out[2] + tmp
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-m", "benchmark", *argv, "--no-plots"], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            chk.fail("leaderboard", f"the aggregation does not run again: {tail}",
                     fix=chk.reaggregate())
            return
        made = sorted(p.name for p in Path(tmp).iterdir()
                      if p.is_file() and p.suffix in (".csv", ".md"))
        for name in made:
            ours = chk.run_dir / name
            if not ours.is_file():
                chk.fail("leaderboard", f"{ours} is missing (the aggregation writes it)",
                         fix=chk.reaggregate())
            elif ours.read_bytes() != (Path(tmp) / name).read_bytes():
                chk.fail("leaderboard", f"{ours} differs from what its aggregation gives again: "
                                        "edited by hand, or made from other inputs (rerun the "
                                        "workflow)", fix=chk.reaggregate())


def _check_models(chk: RunCheck, stamp: dict[str, Any] | None) -> None:
    """Every result names the model file it evaluated, and that file is still the one."""

    cwd = _stamp_cwd(stamp or {}, chk.root)
    for path in chk.results:
        try:
            res = read_result(path)
        except (ResultError, OSError):
            continue  # reported by the results check
        where = os.path.relpath(path, chk.root)
        model = res.get("model")
        if not model or not model.get("sha256"):
            chk.fail("models", f"{where} does not name the model file it evaluated (made by an "
                               "older version of the suite): rerun it", fix=chk.fresh_rerun())
            continue
        src = (cwd / model["path"]).resolve()
        if not src.is_file():
            chk.fail("models", f"{where}: its model file {model['path']} is gone (work/ holds the "
                               "models of a run: rerun the preset)", fix=chk.fresh_rerun())
        elif sha256_file(src) != model["sha256"]:
            chk.fail("models", f"{where}: its model file {model['path']} is not the one it evaluated "
                               "(the sha256 differs): rerun the preset", fix=chk.fresh_rerun())
        else:
            chk.models[path] = src


def check_run(preset: str, *, root: str | Path = ".", repo: str | Path | None = None,
              reattack_batches: int = result_trust.DEFAULT_REATTACK_BATCHES) -> RunCheck:
    """Every integrity check of a run (see the module docstring and benchmark.publishing.result_trust);
    ``.problems`` empty when it may be published."""
    root = Path(root).resolve()
    chk = RunCheck(preset=preset, root=root)
    committed = _preset(chk)
    _check_git(chk, Path(repo).resolve() if repo is not None else root, committed)
    stamp = _check_finished(chk)
    _check_results(chk)
    if stamp is not None and not any(c in ("finished", "results") for c, _ in chk.problems):
        _check_leaderboard(chk, stamp)
    _check_models(chk, stamp)
    result_trust.check(chk, stamp, search_dirs=[root, REPO], repo=Path(repo).resolve() if repo else root,
                       reattack_batches=reattack_batches)
    return chk


# ---------------------------------------------------------------- publishing
def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _reference(cfg: dict[str, Any], root: Path) -> str | None:

    if not cfg.get("reference_csv"):
        return None
    return apcfg.resolve_file(cfg["reference_csv"], [root, REPO], field="reference_csv")


def _publish_models(chk: RunCheck, copied: dict[Path, Path], tmp: Path, budget: int) -> dict[str, Any]:
    """Exports every result's model beside the published results, keeps the safetensors files
    when their total fits the budget (the manifest, with every sha256, always), and verifies
    what it keeps."""

    out_dir = tmp / "export" / "models"
    manifest = export_models(sorted(copied.values()), out_dir,
                             sources={str(dst): chk.models[src] for src, dst in copied.items()})
    keep = [f for r in manifest["models"] for fmt, f in r["files"].items()
            if fmt in PUBLISHED_MODEL_FORMATS]
    total = sum(int(f["size"]) for f in keep)
    included = total <= budget
    for record in manifest["models"]:
        for fmt, f in list(record["files"].items()):
            if fmt not in PUBLISHED_MODEL_FORMATS or not included:
                (out_dir / f["path"]).unlink()
            if fmt not in PUBLISHED_MODEL_FORMATS:
                del record["files"][fmt]
    manifest["files_included"] = included
    atomic_write_json(out_dir / "manifest.json", manifest)
    if included:
        problems = verify_manifest(out_dir / "manifest.json")
        if problems:
            raise PublishError(chk.preset, [("models", line) for line in problems])
    return {"included": included, "bytes": total, "budget_bytes": budget,
            "formats": list(PUBLISHED_MODEL_FORMATS),
            "why": None if included else (f"the model files take {total:,} bytes, more than the "
                                          f"budget of {budget:,}: host them elsewhere; the "
                                          "manifest's sha256 verifies a copy")}


def _file_digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def publish(preset: str, *, root: str | Path = ".", repo: str | Path | None = None,
            model_budget: int = MODEL_BUDGET_BYTES,
            reattack_batches: int = result_trust.DEFAULT_REATTACK_BATCHES) -> Path:
    """Checks the run of ``preset`` and, when it passes, replaces ``results/published/<preset>/``
    with it and rebuilds ``results/published/site/``; returns the published folder. PublishError
    with every problem otherwise (nothing is written)."""
    from benchmark.publishing.site import build_site  # deferred: pandas

    chk = check_run(preset, root=root, repo=repo, reattack_batches=reattack_batches)
    if chk.problems:
        raise chk.error()
    root = chk.root
    run_dir = chk.run_dir.resolve()
    pub_dir = root / PUBLISHED / preset
    method_files = apcfg.resolve_method_files(chk.cfg["method_files"], [root, REPO_ROOT])
    reference = _reference(chk.cfg, root)
    info: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        copied_map = {}
        for res in chk.results:
            dst = tmp / res.relative_to(run_dir)
            _copy(res, dst)
            copied_map[res] = dst
        copied = sorted(copied_map.values())
        for table in sorted(run_dir.iterdir()):
            if table.is_file() and table.suffix in (".csv", ".md"):
                _copy(table, tmp / table.name)
        if (run_dir / "plots").is_dir():
            shutil.copytree(run_dir / "plots", tmp / "plots")
        info["models"] = _publish_models(chk, copied_map, tmp, model_budget)
        export_robustbench(copied, tmp / "export" / "robustbench", method_files=method_files,
                           reference_csv=reference)
        build_site(copied, tmp / "site", reference_csv=reference, method_files=method_files,
                   models_manifest=(tmp / "export" / "models" / "manifest.json"
                                    if info["models"]["included"] else None),
                   robustbench_dir=tmp / "export" / "robustbench",
                   title=f"Adversarial pruning leaderboard: {preset} (published)",
                   snippet_manifest=SNIPPET_MANIFEST)
        record = {"format": PUBLISHED_FORMAT, "version": 1, "preset": preset,
                  "revision": chk.revision,
                  "published_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "results": len(copied), "checks": list(CHECKS), "models": info["models"],
                  "files": _file_digests(tmp)}
        atomic_write_json(tmp / "published.json", record)

    replace_dir(pub_dir, build)
    log.info("published %s -> %s", run_dir, pub_dir)
    build_published_site(root)
    return pub_dir


def published_presets(root: str | Path = ".") -> list[str]:
    base = Path(root) / PUBLISHED
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "published.json").is_file())


def _site_inputs(root: Path, presets: list[str]) -> tuple[list[Path], list[Path], list[str]]:
    """(result folders, model manifests with their files, method files) of published presets."""

    base = root / PUBLISHED
    runs, manifests, method_files = [], [], []
    for preset in presets:
        folder = base / preset
        runs += [d for d in (folder / "runs", folder / "submissions") if d.is_dir()]
        manifest = folder / "export" / "models" / "manifest.json"
        if manifest.is_file() and json.loads(manifest.read_text()).get("files_included"):
            manifests.append(manifest)
        preset_file = root / "presets" / f"{preset}.yaml"
        if preset_file.is_file():
            cfg = apcfg.load_preset(preset_file)
            method_files += [f for f in apcfg.resolve_method_files(cfg.get("method_files") or [],
                                                                   [root, REPO_ROOT])
                             if f not in method_files]
    return runs, manifests, method_files


def _build_archived_site(root: Path, preset: str, rec: dict[str, Any], out_dir: Path) -> None:
    """The site of an archived publication, its banner on every page and above every table."""
    from benchmark.publishing.site import build_site  # deferred: pandas

    runs, manifests, method_files = _site_inputs(root, [preset])
    build_site(runs, out_dir, models_manifest=manifests or None,
               robustbench_dir=str(root / PUBLISHED / "{preset}" / "export" / "robustbench"),
               method_files=method_files, banners=[banner_text(rec)], snippet_manifest=SNIPPET_MANIFEST,
               title=f"Adversarial pruning leaderboard: {preset} (archived, made at revision "
                     f"{str(rec.get('revision') or 'unknown')[:12]})")


def build_published_site(root: str | Path = ".") -> Path | None:
    """``results/published/site/``: one site over every current published preset (None when none
    is); each archived preset (benchmark.results.staleness) gets its own site under ``site/archived/<preset>/``
    with its banner on every page and table, linked from the index's "Archived" section."""
    from benchmark.publishing.site import build_site  # deferred: pandas

    root = Path(root)
    presets = published_presets(root)
    if not presets:
        return None
    base = root / PUBLISHED
    rb_dir = str(base / "{preset}" / "export" / "robustbench")
    archived, current = [], []
    for preset in presets:
        rec = archive_record(base / preset)
        (current if rec is None else archived).append((preset, rec))
    links = [{"preset": preset, "revision": rec.get("revision"), "banner": banner_text(rec),
              "href": f"archived/{preset}/index.html"} for preset, rec in archived]
    runs, manifests, method_files = _site_inputs(root, [p for p, _ in current])
    banners = []
    if not runs:  # only archived presets: the index lists them, under their banner
        runs, manifests, method_files = _site_inputs(root, [p for p, _ in archived])
        banners = [f"Every publication here is archived, none is current: {link['banner']}"
                   for link in links]
    index = build_site(runs, base / "site", models_manifest=manifests or None,
                       robustbench_dir=rb_dir, method_files=method_files, banners=banners,
                       archived=links, title="Adversarial pruning leaderboard: published runs",
                       snippet_manifest=SNIPPET_MANIFEST)
    # after the index (its build replaces the whole folder); in place, so relative links hold
    for preset, rec in archived:
        _build_archived_site(root, preset, rec, base / "site" / "archived" / preset)
    problems = site_links.link_problems(base / "site")
    if problems:  # the index was bundled expecting the archived sites: they must be there now
        raise UserError("the published site does not stand on its own: " + "; ".join(problems[:5]))
    return index


def archive_published(preset: str, *, reason: str, root: str | Path = ".") -> dict[str, Any]:
    """``python -m benchmark publish --archive NAME``: marks a published preset as archived (made
    at its recorded revision, not republished after its code changed): its own tables and site
    get the banner, and the combined site shows it apart from the current board under a banner
    on every page."""
    root = Path(root)
    folder = root / PUBLISHED / preset
    if not (folder / "published.json").is_file():
        raise UserError(f"{folder} is not a published preset (no published.json); published: "
                        f"{', '.join(published_presets(root)) or 'none'}")
    rec = archive(folder, reason=reason, root=None)
    _build_archived_site(root, preset, rec, folder / "site")  # the publication's own site
    build_published_site(root)
    return rec


__all__ = ["PublishError", "RunCheck", "CHECKS", "MODEL_BUDGET_BYTES", "check_run", "publish",
           "expected_results", "published_presets", "build_published_site", "archive_published"]
