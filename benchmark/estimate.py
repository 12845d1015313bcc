"""What a preset costs before it runs: its jobs per workflow rule and their compute time.

``python -m benchmark estimate --configfile presets/X.yaml [presets/smoke.yaml] [--device cuda]
[--target table_main]`` lists the jobs the workflow would run for the targets (``plan``: the same
cells, searches and dense models the Snakefile derives, so the counts equal a Snakemake dry run's;
tests/test_paper_presets.py compares them) and what they cost on the device from the calibration
file (benchmark/calibration.py), never from a guess: an architecture, width, input shape or device
that was not measured is reported as "no calibration for ...".

The cost model, per job (seconds):

- training stage: epochs x steps per epoch x the calibrated step, scaled linearly from the
  calibration's batch size to the stage's, and from its PGD-AT 10-step attack to the stage's
  attack (a PGD-AT step with s attack steps is s + 1 forward/backward passes, a TRADES step
  s + 2); S2AP's score step and AWP count from the epoch their warm-up ends; plus a validation
  pass per epoch (clean + PGD at ``val_attack_steps`` on the validation slice);
- steps per epoch: the training images (the subset, else the training split less the validation
  slice) over the batch size, the last partial batch dropped as the trainer does;
- a search of a method that learns no scores: one validation pass; a stage with 0 epochs: none;
- evaluation: clean_n clean passes, pgd_n PGD images scaled from PGD-50 to the preset's steps,
  and AutoAttack's per-image figure for each of n_images (an upper bound: the figure is an image
  no attack breaks; a subset of the attacks is counted as the full set);
- not counted: the search diagnostics, data loading, process start-up, bookkeeping jobs
  (aggregation, tables).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import calibration as _cal
from benchmark import config as apcfg
from benchmark import tables as _tables
from benchmark.errors import ConfigError

TRAINING_RULES = ("pretrain", "prune", "prune_second_seed", "finetune")
COMPUTE_RULES = ("import_dense", "pretrain", "prune", "prune_second_seed", "finetune", "evaluate",
                 "evaluate_dense")
BOOKKEEPING_RULES = ("seed_stability", "aggregate", "table", "figure")
SEED_SEARCH_OFFSET = 1000  # workflows/rules/common.smk: SEARCH_SEED_OFFSET


@dataclass
class Job:
    rule: str
    dataset: str
    arch: str
    method: str | None = None
    s2ap: str | None = None
    cell: Mapping[str, Any] | None = None


@dataclass
class Plan:
    """The jobs of one or more targets, by rule (the target rules themselves included)."""

    jobs: dict[str, list[Job]] = field(default_factory=dict)

    def add(self, key: tuple, job: Job, seen: set) -> None:
        if key in seen:
            return
        seen.add(key)
        self.jobs.setdefault(job.rule, []).append(job)

    def counts(self) -> dict[str, int]:
        return {rule: len(jobs) for rule, jobs in self.jobs.items()}


# ---------------------------------------------------------------- the DAG, without Snakemake
def targets_of(cfg: Mapping[str, Any]) -> list[str]:
    """Every target this preset has: all, and one per table it feeds."""
    return ["all", *(_tables.KINDS[n].target for n in cfg.get("tables") or {})]


def plan(cfg: Mapping[str, Any], targets: Sequence[str] = ("all",),
         search_dirs: Iterable[str | Path] = ()) -> Plan:
    """The jobs Snakemake runs for ``targets`` from scratch (``all`` or a table target)."""
    registry = apcfg.methods_of(cfg, search_dirs)
    cells = apcfg.grid_cells(cfg, registry)
    dense = apcfg.dense_cells(cfg, cells)
    recipes = apcfg.pretrain_recipes(cfg, cells, dense)
    traits = {m: registry.traits(m) for m in cfg["grid"]["methods"]}
    by_target = {k.target: k for k in _tables.KINDS.values()}
    out, seen = Plan(), set()
    for target in targets:
        if target == "all":
            chosen, with_dense = cells, True
            out.add(("aggregate",), Job("aggregate", "", ""), seen)
        elif target in by_target:
            kind = by_target[target]
            if kind.name not in (cfg.get("tables") or {}):
                raise ConfigError(
                    f"preset {cfg['name']} feeds no {kind.name} table (its tables: "
                    f"{', '.join(cfg.get('tables') or {}) or 'none'})")
            chosen, with_dense = _tables.table_cells(cfg, cells, kind.name, traits), False
            rule = "figure" if kind.figure else "table"
            out.add((rule, kind.name), Job(rule, "", "", method=kind.name), seen)
        else:
            raise ConfigError(f"unknown target {target!r}; this preset's: "
                                    f"{', '.join(targets_of(cfg))}")
        out.add((target,), Job(target, "", ""), seen)
        for cell in chosen:
            _add_cell(out, seen, cfg, cell, recipes)
        if with_dense:
            for cell in dense:
                out.add(("evaluate_dense", cell["dataset"], cell["arch"], cell["seed"]),
                        Job("evaluate_dense", cell["dataset"], cell["arch"], "dense", "n/a", cell), seen)
                _add_dense(out, seen, cell["dataset"], cell["arch"], cell["recipe"], cell["seed"],
                           recipes, cell.get("recipe_method"))
    return out


def _add_dense(out: Plan, seen: set, dataset: str, arch: str, recipe: str, seed: int,
               recipes: Mapping[str, Any], method: str | None) -> None:
    if (recipes.get(recipe) or {}).get("external"):
        out.add(("import_dense", dataset, arch, recipe), Job("import_dense", dataset, arch), seen)
    else:
        out.add(("pretrain", dataset, arch, recipe, seed),
                Job("pretrain", dataset, arch, method=method,
                    cell={"dataset": dataset, "arch": arch, "seed": seed}), seen)


def _add_cell(out: Plan, seen: set, cfg: Mapping[str, Any], cell: Mapping[str, Any],
              recipes: Mapping[str, Any]) -> None:
    d, a, m, s, sp, seed = (cell[k] for k in ("dataset", "arch", "method", "s2ap", "sparsity", "seed"))
    search = apcfg.s2ap_search_value(s)
    out.add(("evaluate", d, a, m, s, sp, seed), Job("evaluate", d, a, m, s, cell), seen)
    out.add(("finetune", d, a, m, s, sp, seed), Job("finetune", d, a, m, s, cell), seen)
    out.add(("prune", d, a, m, search, sp, seed), Job("prune", d, a, m, search, cell), seen)
    if cell["traits"]["learns_scores"] and cfg["diagnostics"].get("seed_stability"):
        out.add(("prune_second_seed", d, a, m, search, sp, seed),
                Job("prune_second_seed", d, a, m, search, cell), seen)
        out.add(("seed_stability", d, a, m, search, sp, seed),
                Job("seed_stability", d, a, m, search, cell), seen)
    if cell["recipe"] is not None:
        _add_dense(out, seen, d, a, cell["recipe"], seed, recipes, m)


# ---------------------------------------------------------------- what each job costs
class NoCalibration(LookupError):
    """What a job needs was never measured on the device."""


@dataclass
class Cost:
    seconds: float = 0.0
    missing: set = field(default_factory=set)
    used: dict = field(default_factory=dict)  # calibration key -> entry


def _info(dataset: str):
    from benchmark.datasets import get_info

    return get_info(dataset)


def _entry(cal: _cal.Calibration, cost: Cost, *, device: str, dataset: str, arch: str,
           width: float, precision: str) -> dict[str, Any]:
    info = _info(dataset)
    shape = [info.in_channels, info.image_size, info.image_size]
    entry = cal.find(device=device, arch=arch, input_shape=shape, num_classes=info.num_classes,
                     width=width, precision=precision)
    if entry is None:
        what = (f"{arch} ({'x'.join(map(str, shape))}, {info.num_classes} classes, width "
                f"{width:g}, {precision}) on {device}")
        cost.missing.add(what)
        raise NoCalibration(what)
    cost.used[_cal.key(entry)] = entry
    return entry


def _passes(steps: int, loss: str, replays: int = 1) -> int:
    """Forward/backward passes of one training step (one minibatch): the attack's, then the
    loss's; free adversarial training has no attack and replays the minibatch ``replays`` times,
    one pass each."""
    if loss == "clean":
        return 1
    if loss == "free":
        return int(replays)
    return steps + (2 if loss == "trades" else 1)


def _train_images(cfg_data: Mapping[str, Any], info) -> int:
    n = info.train_size - int(cfg_data["val_size"])
    return n if cfg_data.get("train_subset") is None else min(int(cfg_data["train_subset"]), n)


def _steps_per_epoch(n: int, batch: int) -> int:
    return n // batch if n > batch else 1


def _training_seconds(stage_cfg: Mapping[str, Any], entry: Mapping[str, Any], info,
                      step_plain: str, step_plus: str | None, warm_epochs: int) -> float:
    train, data = stage_cfg["train"], stage_cfg["data"]
    epochs = int(train["epochs"])
    if epochs <= 0:
        return 0.0
    secs = entry["seconds"]
    attack_steps = int(train["attack"]["steps"])
    scale = (_passes(attack_steps, train["loss"], int(train.get("free_replays", 1)))
             / _passes(_cal.STEP_ATTACK_STEPS, "pgd_at")
             * int(train["batch_size"]) / int(entry["batch_size"]))
    steps = _steps_per_epoch(_train_images(data, info), int(train["batch_size"]))
    plain_epochs = epochs if step_plus is None else min(epochs, max(warm_epochs, 0))
    total = steps * scale * (plain_epochs * secs[step_plain]
                             + (epochs - plain_epochs) * (secs[step_plus] if step_plus else 0.0))
    return total + epochs * _validation_seconds(stage_cfg, entry)


def _validation_seconds(stage_cfg: Mapping[str, Any], entry: Mapping[str, Any]) -> float:
    n = int(stage_cfg["data"]["val_size"])
    steps = int(stage_cfg["train"]["val_attack_steps"])
    secs = entry["seconds"]
    return n * (secs["clean_image"] + secs["pgd_image"] * steps / _cal.PGD_IMAGE_STEPS)


def _evaluation_seconds(cfg: Mapping[str, Any], entry: Mapping[str, Any], info) -> float:
    ev, data = cfg["evaluate"], cfg["data"]
    test = info.test_size if data.get("test_subset") is None else min(int(data["test_subset"]),
                                                                       info.test_size)

    def n_of(v):
        return test if v is None else min(int(v), test)

    secs = entry["seconds"]
    total = n_of(ev["clean_n"]) * secs["clean_image"]
    total += n_of(ev["pgd_n"]) * secs["pgd_image"] * int(ev["pgd_steps"]) / _cal.PGD_IMAGE_STEPS
    aa = ev["autoattack"]
    if aa and aa.get("n_images"):
        total += n_of(aa["n_images"]) * secs["autoattack_image"]
    return total


def job_seconds(cfg: Mapping[str, Any], job: Job, cal: _cal.Calibration, device: str,
                cost: Cost) -> float:
    """Compute seconds of one job on ``device``; NoCalibration when its figures are missing."""
    if job.rule not in COMPUTE_RULES or job.rule == "import_dense":
        return 0.0
    info = _info(job.dataset)
    bf16 = bool(cfg["runtime"].get("bf16")) and device == "cuda"
    width = float(cfg["model"]["width"])
    if job.rule in ("evaluate", "evaluate_dense"):
        # evaluation runs in float32 whatever the training precision
        entry = _entry(cal, cost, device=device, dataset=job.dataset, arch=job.arch, width=width,
                       precision="fp32")
        return _evaluation_seconds(cfg, entry, info)
    entry = _entry(cal, cost, device=device, dataset=job.dataset, arch=job.arch, width=width,
                   precision="bf16" if bf16 else "fp32")
    traits = (job.cell or {}).get("traits") or {}
    if job.rule == "pretrain":
        stage = apcfg.stage_config(cfg, "pretrain", dataset=job.dataset, arch=job.arch,
                                   method=job.method)
        return _training_seconds(stage, entry, info, "pretrain_step", None, 0)
    stage_name = "prune" if job.rule in ("prune", "prune_second_seed") else "finetune"
    s2ap = job.s2ap
    stage = apcfg.stage_config(cfg, stage_name, dataset=job.dataset, arch=job.arch,
                               method=job.method, s2ap=s2ap, traits=traits)
    if stage_name == "prune":
        if not traits.get("learns_scores", True):
            return _validation_seconds(stage, entry)
        if stage.get("s2ap"):
            warm = int(math.floor(float(stage["s2ap"]["warmup"]) * int(stage["train"]["epochs"]) + 1e-9))
            return _training_seconds(stage, entry, info, "search_step", "search_step_s2ap", warm)
        return _training_seconds(stage, entry, info, "search_step", None, 0)
    if stage.get("awp"):
        return _training_seconds(stage, entry, info, "finetune_step", "finetune_step_awp",
                                 int(stage["awp"]["warmup_epochs"]))
    return _training_seconds(stage, entry, info, "finetune_step", None, 0)


@dataclass
class Estimate:
    counts: dict[str, int]
    seconds: dict[str, float | None]  # None: some job of the rule has no calibration
    missing: set
    used: dict


def estimate(cfg: Mapping[str, Any], plan_: Plan, cal: _cal.Calibration, device: str) -> Estimate:
    cost = Cost()
    seconds: dict[str, float | None] = {}
    for rule, jobs in plan_.jobs.items():
        if rule not in COMPUTE_RULES:
            continue
        total: float | None = 0.0
        for job in jobs:
            try:
                s = job_seconds(cfg, job, cal, device, cost)
            except NoCalibration:
                total = None
                continue
            if total is not None:
                total += s
        seconds[rule] = total
    return Estimate(plan_.counts(), seconds, cost.missing, cost.used)


# ---------------------------------------------------------------- the report
def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 3600:,.0f} h ({seconds / 86400:,.1f} days)"


def default_device(cfg: Mapping[str, Any]) -> str:
    """The preset's device; 'auto' is CUDA wherever one exists, which is where runs this size are
    planned."""
    device = str(cfg["runtime"]["device"])
    return "cpu" if device == "cpu" else "cuda"


def report(cfg: Mapping[str, Any], preset_files: Sequence[str | Path], targets: Sequence[str],
           device: str, cal: _cal.Calibration, search_dirs: Iterable[str | Path] = ()) -> str:
    p = plan(cfg, targets, search_dirs)
    est = estimate(cfg, p, cal, device)
    lines = [f"preset {cfg['name']} ({' + '.join(str(f) for f in preset_files)}), "
             f"target{'s' if len(targets) > 1 else ''} {', '.join(targets)}, device {device}",
             f"calibration: {_display(cal.source)}"]
    if device not in cal.devices():
        lines.append(f"no calibration for {device}: none of its figures was measured (the file "
                     f"has {', '.join(cal.devices()) or 'no device'}); job counts only")
    for entry in sorted(est.used.values(), key=lambda e: (e["arch"], e["width"])):
        lines.append(
            f"  {entry['device']} {entry['arch']} {'x'.join(map(str, entry['input_shape']))} "
            f"width {float(entry['width']):g} batch {entry['batch_size']} {entry['precision']}: "
            f"{entry['device_name']}, {entry['threads'] or '-'} thread(s), measured "
            f"{entry['measured']}")
    for what in sorted(est.missing):
        if device in cal.devices():
            lines.append(f"no calibration for {what}")
    lines += ["", f"{'rule':<20} {'jobs':>6}  compute"]
    total: float | None = 0.0
    for rule, count in sorted(est.counts.items(), key=lambda kv: _rule_order(kv[0])):
        if rule in COMPUTE_RULES:
            secs = est.seconds.get(rule)
            if rule == "import_dense":
                text = "checksum and conversion only"
            elif secs is None:
                text = f"no calibration for {device}" if device not in cal.devices() \
                    else "incomplete: no calibration for some job"
                total = None
            else:
                text = human(secs)
                if total is not None:
                    total += secs
        else:
            text = "bookkeeping"
        lines.append(f"{rule:<20} {count:>6}  {text}")
    n_jobs = sum(est.counts.values())
    lines.append(f"{'total':<20} {n_jobs:>6}  "
                 + (human(total) + f" of {device} time" if total is not None
                    else f"unknown: no calibration for {device}" if device not in cal.devices()
                    else "unknown: some jobs have no calibration (listed above)"))
    lines += ["", "Counted: training steps from the calibration (scaled by batch size and attack "
              "steps), a validation pass per epoch, clean/PGD/AutoAttack per image (AutoAttack: "
              "an image no attack breaks, an upper bound). Not counted: diagnostics, data loading, "
              "process start-up. One device; jobs that run side by side divide the wall time."]
    return "\n".join(lines) + "\n"


def _display(path: str | Path) -> str:
    """A file of the package by its place in the repository, any other as given."""
    root = Path(__file__).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _rule_order(rule: str) -> tuple:
    order = [*COMPUTE_RULES, *BOOKKEEPING_RULES]
    return (order.index(rule) if rule in order else len(order), rule)


def main(preset_files: Sequence[str | Path], *, device: str | None = None,
         targets: Sequence[str] = ("all",), calibration: str | Path | None = None) -> str:
    """The text ``python -m benchmark estimate`` prints."""
    search_dirs = [Path.cwd(), Path(__file__).resolve().parent.parent]
    try:
        cfg = apcfg.validate(apcfg.load_presets(preset_files), search_dirs=search_dirs)
    except FileNotFoundError as exc:
        raise ConfigError(f"preset file not found: {exc.filename}") from exc
    except ValueError as exc:  # the preset's own errors name the field
        raise ConfigError(str(exc)) from exc
    cal = _cal.load(calibration)
    if device is None and str(cfg["runtime"]["device"]) == "auto":
        device, note = auto_device(cfg, list(targets), cal, search_dirs)
        return note + report(cfg, preset_files, list(targets), device, cal, search_dirs=search_dirs)
    return report(cfg, preset_files, list(targets), device or default_device(cfg), cal,
                  search_dirs=search_dirs)


def auto_device(cfg: Mapping[str, Any], targets: list[str], cal: _cal.Calibration,
                search_dirs: Iterable[str | Path] = ()) -> tuple[str, str]:
    """(device, note) for a preset with runtime.device auto: CUDA, unless the calibration has
    figures for every job on the CPU and not on CUDA (a preset sized for a CPU, such as the
    offline study); the note says so."""
    search_dirs = list(search_dirs)
    p = plan(cfg, targets, search_dirs)
    cuda = estimate(cfg, p, cal, "cuda")
    if not cuda.missing:
        return "cuda", ""
    cpu = estimate(cfg, p, cal, "cpu")
    if cpu.missing:
        return "cuda", ""
    return "cpu", ("runtime.device is auto, and the calibration lacks CUDA figures for some of "
                   "these jobs but has CPU figures for all: estimated on cpu (--device cuda to "
                   "insist)\n")


__all__ = ["Estimate", "Job", "Plan", "auto_device", "estimate", "human", "job_seconds", "main", "plan", "report",
           "targets_of"]
