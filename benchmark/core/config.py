"""Presets: loading, validation, per-stage sub-configs and hashes.

Long because it is the preset's one gate, loaded by the Snakefile on every parse: defaults, every
rule across fields, the stage cut-outs and their hashes must agree with each other.

This module is imported by the Snakefile on every parse, so it must never import torch, nor any
method's code: method traits come from the literal arguments of ``@register_method`` in source
(``benchmark.core.registry``), and the lists of valid words from ``benchmark.core.choices``.

A preset is YAML data. ``load_preset`` fills every field the preset leaves out from ``DEFAULTS``
(deep merge), ``validate`` checks it against the schema (``benchmark/schemas/config.schema.yaml``,
enums filled from the code's lists) and against the rules that span fields, and ``stage_config``
cuts out the part of it that shapes one stage, which is what a Snakemake rule passes to the CLI (so
editing the evaluation section reruns evaluation only). What depends on the machine (data on disk,
CUDA, method files that import) is checked by ``benchmark.planning.preflight``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core import choices, recipes, strict_yaml
from benchmark.core import external_dense as _external
from benchmark.core import paper_tables as _tables
from benchmark.core import registry as _registry
from benchmark.core.cells import (  # noqa: F401 - the config's API
    canonical_sparsity,
    effective_variant,
    runs_finetune,
    s2ap_from_path,
    s2ap_search_value,
    s2ap_to_path,
)
from benchmark.core.cells import method_overrides as _method_overrides
from benchmark.core.paths import SCHEMAS_DIR

SCHEMA_PATH = SCHEMAS_DIR / "config.schema.yaml"

STAGES = ("pretrain", "prune", "finetune", "evaluate")
TRAIN_STAGES = ("pretrain", "prune", "finetune")

# Values a preset may list under grid.s2ap. "n/a" is never written by hand: a method that learns no
# scores gets it automatically (such a method shows n/a in the leaderboard, not off).
S2AP_CHOICES = choices.S2AP_GRID_VALUES
S2AP_NA = choices.S2AP_NA
S2AP_NA_PATH = choices.S2AP_NA_PATH

# Defaults of one training stage: the published HYDRA recipe (docs/methods.md), so a full-size preset
# that names only its grid trains like the paper. Short presets override epochs and subsets.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1.0e-4,
    "batch_size": 128,
    "loss": "trades",
    "trades_beta": 6.0,
    "schedule": "cosine",
    # null fields take the dataset's defaults (docs/decisions.md, "Training")
    "attack": {"eps": None, "steps": 10, "step_size": None},
    "val_attack_steps": 10,
    "adv_eval_mode": True,
    "train_bn": True,
    "nesterov": False,
}

DEFAULTS: dict[str, Any] = {
    "name": None,
    # appended to the name: an overlay (presets/smoke.yaml) sends its run to results/<name><suffix>
    "name_suffix": "",
    "description": "",
    "purpose": "benchmark",
    "grid": {
        "datasets": ["fashion-mnist"],
        "archs": ["small_cnn"],
        "sparsities": [90, 95, 99],
        "methods": ["hydra"],
        "s2ap": ["off"],
        "seeds": [0],
    },
    "method_files": [],
    "data": {
        "root": "data",
        "download": False,
        "imagenet_root": None,
        "train_subset": None,
        "val_size": 1000,
        "test_subset": None,
        "batch_size": 128,
        "num_workers": 0,
        "augment": True,
        # seed of the fixed validation slice, independent of the training seed
        "split_seed": 0,
        # stand-in data of the dataset's shape (benchmark/core/synthetic.py): smoke runs anywhere
        "synthetic": False,
        # ImageNet's test images: RobustBench's 5,000-image list from val/ (benchmark/
        # imagenet_list.py), or every image of val/ ("folder")
        "imagenet_test": "robustbench",
    },
    "model": {"width": 1.0},
    # group_jobs: a cell's search, finetunes and evaluations go to a cluster as one job;
    # gpu_memory_gib: one card's memory, for the check that jobs_per_gpu jobs fit on it (null: the
    # runner asks nvidia-smi on a workstation; benchmark/planning/gpu_memory.py)
    "runtime": {"device": "auto", "threads": 2, "bf16": False, "channels_last": False,
                "group_jobs": False, "autoattack_shard_jobs": False, "jobs_per_gpu": 1,
                "gpu_memory_gib": None},
    "pretrain": dict(TRAIN_DEFAULTS, epochs=100, lr=0.1),
    "prune": dict(TRAIN_DEFAULTS, epochs=20, lr=0.1),
    "finetune": dict(TRAIN_DEFAULTS, epochs=100, lr=0.01),
    "methods": {},
    # gamma 0.01 is no one's selection outside the setting it was swept on: labelled unselected
    # until a preset's own sweep selects it (methods.<name>.s2ap)
    "s2ap": {"gamma": 0.01, "warmup": 0.25, "norm": "l2", "regenerate": False,
             "gamma_status": "unselected"},
    "awp": {"gamma": 0.01, "warmup_epochs": 0, "proxy_lr": 0.01},
    "evaluate": {
        "eps": None,
        "pgd_steps": 50,
        "pgd_step_size": None,
        "clean_n": None,
        "pgd_n": 1000,
        "batch_size": 256,
        "autoattack": {
            "n_images": 10000,
            "version": "standard",
            "attacks": None,
            "batch_size": 250,
            "shard_size": 500,
            "seed": 0,
        },
    },
    "diagnostics": {
        "radii": [0.01, 0.02, 0.05, 0.1],
        "n_random": 5,
        "hessian_iters": 10,
        "seed_stability": False,
    },
    "gamma_sweep": None,
    # the paper presets follow benchmark/recipe_ledger.yaml (strict); see benchmark/core/recipes.py
    "recipe_ledger": "off",
    "reference_csv": None,
    # paper tables this preset feeds: {table name: null or {methods, archs, sparsities}}
    # (benchmark/results/tables.py; docs/paper_tables.md)
    "tables": {},
    # dense models not trained here: [{dataset, arch, sha256, path | robustbench}]
    # (benchmark/core/external_dense.py)
    "external_dense": [],
}

# Fields that change how fast a job runs, or where its inputs live, but not what it computes: left
# out of every hash (and of Snakemake's rerun check), so moving a preset from a laptop to a GPU
# node, to another data folder or another thread count reuses the dense models.
_NOT_IN_HASH = {"runtime": ("threads", "device", "channels_last", "group_jobs",
                             "autoattack_shard_jobs", "jobs_per_gpu", "gpu_memory_gib"),
                "data": ("num_workers", "root", "download", "imagenet_root")}


# Fields added after results existed: left out of the hash while they hold their default, so their
# arrival reran nothing; any other value is part of it (synthetic data never pools with real).
_HASHED_UNLESS_DEFAULT = {("data", "synthetic"): False, ("data", "imagenet_test"): "robustbench"}


class ConfigError(ValueError):
    """A preset that cannot run; the message names each offending field."""


# ---------------------------------------------------------------------------------- loading
def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``override`` over ``base``; nested dicts merge, everything else (lists too) is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if value is None and isinstance(out.get(key), Mapping):
            continue  # an empty YAML section ("methods:") means "no changes", not null
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_defaults(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = deep_merge(DEFAULTS, raw or {})
    grid = cfg.get("grid")
    if isinstance(grid, dict) and isinstance(grid.get("s2ap"), list):
        # YAML 1.1 reads unquoted off/on as booleans: `s2ap: [off, on]` means the strings
        grid["s2ap"] = [{False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v
                        for v in grid["s2ap"]]
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = strict_yaml.load_file(path) or {}
    except strict_yaml.StrictYAMLError as exc:
        raise ConfigError(f"preset {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"preset {path} must be a YAML mapping, got {type(raw).__name__}")
    return dict(raw)


def overlay(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` over ``base`` as Snakemake merges two ``--configfile`` files: mappings merge key by
    key, anything else (lists, null) replaces. ``load_presets`` uses it so the CLI reads a preset
    plus an overlay exactly as the workflow does."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping):
            out[key] = overlay(out[key] if isinstance(out.get(key), Mapping) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def finish_name(cfg: dict[str, Any], stem: str) -> dict[str, Any]:
    """The preset's name (the last preset file's stem when it names none) with ``name_suffix``
    appended; the suffix is used up, so calling this twice appends it once."""
    cfg["name"] = (cfg.get("name") or stem) + (cfg.get("name_suffix") or "")
    cfg["name_suffix"] = ""
    return cfg


def load_presets(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Read one or more preset files (later ones overlay earlier ones, as ``snakemake
    --configfile a.yaml b.yaml`` does) and fill in defaults and the name."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no preset file given")
    raw: dict[str, Any] = {}
    for path in paths:
        raw = overlay(raw, _read_yaml(path))
    s2ap = raw.get("grid", {}).get("s2ap") if isinstance(raw.get("grid"), Mapping) else None
    if isinstance(s2ap, list) and any(isinstance(v, bool) for v in s2ap):
        # the strict loader reads off/on as words; a boolean here was written true/false
        raise ConfigError(f"grid.s2ap: {s2ap!r} holds a boolean; write the words off, on, score "
                          "or awp")
    return finish_name(with_defaults(raw), paths[-1].stem)


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a preset and fill in defaults; the preset's name defaults to the file's stem."""
    return load_presets([path])


def _check_sparsity(value: Any) -> str:
    try:
        text = canonical_sparsity(value)
    except ValueError as exc:
        raise ValueError(f"grid.sparsities: {exc}") from None
    if not 0 < float(text) < 100:
        raise ValueError(
            f"grid.sparsities: {value!r} is outside (0, 100); sparsity is the percentage of "
            "weights removed, e.g. 90 keeps 10 % of the weights")
    return text


# ---------------------------------------------------------------------------------- files
def resolve_file(entry: str | Path, search_dirs: Iterable[str | Path] = (), *, field: str) -> str:
    """Absolute path of a file named in a preset: as given, else relative to each search dir."""
    path = Path(entry)
    candidates = [path] if path.is_absolute() else [path, *(Path(d) / path for d in search_dirs)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        where = ", ".join(str(c.resolve()) for c in candidates)
        raise ConfigError(f"{field}: file {str(entry)!r} not found (looked at {where})")
    return str(found.resolve())


def resolve_method_files(files: Iterable[str | Path],
                         search_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Absolute paths of the method files a preset names (``method_files``)."""
    dirs = list(search_dirs)
    return [resolve_file(f, dirs, field=f"method_files[{i}]") for i, f in enumerate(files or ())]


# ---------------------------------------------------------------------------------- methods
def methods_of(cfg: Mapping[str, Any],
               search_dirs: Iterable[str | Path] = ()) -> _registry.MethodRegistry:
    return _registry.method_registry(resolve_method_files(cfg.get("method_files") or [], search_dirs))


def method_traits(name: str, registry: _registry.MethodRegistry) -> dict[str, bool]:
    """learns_scores / needs_pretrain / needs_finetune of a method, as its decorator declares them."""
    return registry.traits(name)


# ---------------------------------------------------------------------------------- validation
def load_schema(registry: _registry.Registry | None = None) -> dict[str, Any]:
    """The schema file, with every list of valid words filled in from the code's own lists."""
    schema = strict_yaml.load_file(SCHEMA_PATH)
    defs = schema["$defs"]
    enums = {
        "dataset": _registry.DATASETS.names(),
        "arch": _registry.ARCHITECTURES.names(),
        "s2ap_value": list(choices.S2AP_GRID_VALUES),
        "s2ap_norm": list(choices.S2AP_NORMS),
        "gamma_status": list(choices.S2AP_GAMMA_STATUS),
        "loss": list(choices.LOSSES),
        "schedule": list(choices.SCHEDULES),
        "autoattack_version": list(choices.AUTOATTACK_VERSIONS),
        "autoattack_attack": list(choices.AUTOATTACK_ATTACKS),
        "paper_table": list(_tables.KINDS),
        "purpose": list(choices.PURPOSES),
        "keep_rule": list(choices.KEEP_RULES),
        "imagenet_test": list(choices.IMAGENET_TESTS),
        "recipe_ledger_mode": list(choices.RECIPE_LEDGER_MODES),
    }
    if registry is not None:
        enums["method"] = registry.names()
    for key, values in enums.items():
        defs[key] = {"enum": values}
    return schema


def _choices_error(kind: str, bad: Iterable[str], valid: Iterable[str], where: str) -> ConfigError:
    bad = ", ".join(repr(b) for b in bad)
    return ConfigError(f"{where}: unknown {kind} {bad}; valid choices: {', '.join(valid)}")


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def validate(cfg: Mapping[str, Any], method_files: Iterable[str | Path] | None = None,
             search_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Raise ConfigError on a preset that cannot run; return the preset with canonical sparsities.

    Three passes, each naming the fields it refuses: the names (their messages list the valid
    choices), the schema (typos, types, ranges, enums), then the rules that span fields. Nothing
    here depends on the machine; ``benchmark.planning.preflight`` checks that.
    """
    import jsonschema  # deferred: jsonschema

    bad = non_finite_fields(cfg)
    if bad:
        raise ConfigError("\n".join(f"{f}: {v!r} is not a finite number; NaN and infinity pass "
                                     "every range check, so none is accepted" for f, v in bad))
    search_dirs = list(search_dirs)
    if method_files is None:
        method_files = cfg.get("method_files") or []
    registry = _registry.method_registry(resolve_method_files(method_files, search_dirs))
    grid = cfg.get("grid") if isinstance(cfg.get("grid"), Mapping) else {}

    for key, kind, reg in (("datasets", "dataset", _registry.DATASETS),
                           ("archs", "architecture", _registry.ARCHITECTURES),
                           ("methods", "method", registry)):
        names = _as_list(grid.get(key))
        bad = [n for n in names if not isinstance(n, str) or n not in reg]
        if bad:
            raise _choices_error(kind, bad, reg.names(), f"grid.{key}")
    for name in (cfg.get("methods") or {}) if isinstance(cfg.get("methods"), Mapping) else {}:
        if name not in registry:
            raise _choices_error("method", [name], registry.names(), "methods (per-method overrides)")
    sparsities = [_check_sparsity(s) for s in _as_list(grid.get("sparsities"))]
    bad = [v for v in _as_list(grid.get("s2ap")) if v not in S2AP_CHOICES]
    if bad:
        raise _choices_error("s2ap value", bad, S2AP_CHOICES, "grid.s2ap")

    validator = jsonschema.Draft202012Validator(load_schema(registry))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<preset>'}: {e.message}"
                 for e in errors[:10]]
        raise ConfigError(f"preset does not match the schema ({SCHEMA_PATH.name}):\n" + "\n".join(lines))

    out = copy.deepcopy(dict(cfg))
    out["grid"] = dict(out["grid"], sparsities=list(dict.fromkeys(sparsities)))
    problems = cross_field_problems(out, registry, search_dirs)
    if problems:
        raise ConfigError("preset cannot run:\n" + "\n".join(f"  {p}" for p in problems))
    return out


def non_finite_fields(obj: Any, where: str = "") -> list[tuple[str, float]]:
    """(dotted field, value) of every NaN or infinity in a preset, however it was read."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [(where or "<preset>", obj)]
    if isinstance(obj, Mapping):
        return [b for k, v in obj.items() for b in non_finite_fields(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, (list, tuple)):
        return [b for i, v in enumerate(obj) for b in non_finite_fields(v, f"{where}[{i}]")]
    return []


def _epochs_field(cfg: Mapping[str, Any], method: str | None, stage: str) -> tuple[int, str]:
    over = _method_overrides(cfg, method).get(stage) or {}
    if "epochs" in over:
        return over["epochs"], f"methods.{method}.{stage}.epochs"
    return cfg[stage]["epochs"], f"{stage}.epochs"


_STAGE_RUNS_BECAUSE = {
    "pretrain": ("needs_pretrain", "trains the dense model it starts from"),
    "prune": ("learns_scores", "learns its scores in the mask search"),
    "finetune": ("needs_finetune", "finetunes its pruned model"),
}


def cross_field_problems(cfg: Mapping[str, Any], registry: _registry.MethodRegistry,
                         search_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Rules that span fields of a schema-valid preset, as "field: problem" lines."""
    problems = []
    grid = cfg["grid"]
    sweep = cfg.get("gamma_sweep") or {}
    traits = {m: registry.traits(m) for m in [*grid["methods"], *(sweep.get("methods") or [])]}

    # every stage that runs trains for at least one epoch: a score-learning search with 0 epochs
    # would silently publish its initialisation
    for method, trait in traits.items():
        for stage, (needed, why) in _STAGE_RUNS_BECAUSE.items():
            epochs, field = _epochs_field(cfg, method, stage)
            if trait[needed] and epochs < 1:
                problems.append(f"{field}: {epochs}, but {method} {why}; set at least 1 epoch")
    if not any(t["needs_pretrain"] for t in traits.values()):  # the dense row still pretrains
        epochs, field = _epochs_field(cfg, None, "pretrain")
        if epochs < 1:
            problems.append(f"{field}: {epochs}, but the dense reference model is trained with "
                            "this recipe; set at least 1 epoch")

    # the validation slice is cut from the training set
    val_size = cfg["data"]["val_size"]
    for dataset in grid["datasets"]:
        n = _registry.DATASETS.get(dataset).train_size
        if val_size >= n:
            problems.append(f"data.val_size: {val_size}, but {dataset} has {n} training images; the "
                            "validation slice is cut from them and must leave some to train on")

    # an evaluation count the test images cannot meet would be clamped at run time, and the
    # leaderboard would show a protocol that never ran
    test_subset = cfg["data"]["test_subset"]
    for dataset in grid["datasets"]:
        n = _registry.DATASETS.get(dataset).test_size
        limit, why = (n, f"{dataset} has {n} test images")
        if test_subset is not None and test_subset < n:
            limit, why = test_subset, f"data.test_subset keeps {test_subset} test images"
        for field, value in (("evaluate.clean_n", cfg["evaluate"]["clean_n"]),
                             ("evaluate.pgd_n", cfg["evaluate"]["pgd_n"]),
                             ("evaluate.autoattack.n_images", cfg["evaluate"]["autoattack"]["n_images"])):
            if value is not None and value > limit:
                problems.append(f"{field}: {value}, but {why}; ask for at most {limit}")
    problems += _train_option_problems(cfg, traits)

    aa = cfg["evaluate"]["autoattack"]
    if aa["attacks"] is not None:
        full = choices.AUTOATTACK_VERSIONS[aa["version"]]
        extra = [a for a in aa["attacks"] if a not in full]
        if extra:
            problems.append(f"evaluate.autoattack.attacks: {extra} are not attacks of version "
                            f"{aa['version']!r}; choose a subset of {list(full)} or null for all")

    if "imagenet" in grid["datasets"] and not cfg["data"].get("imagenet_root") \
            and not cfg["data"].get("synthetic"):
        problems.append("data.imagenet_root: not set, but grid.datasets has imagenet; point it at a "
                        "folder with ImageFolder-style train/ and val/")

    if cfg.get("reference_csv"):
        try:
            resolve_file(cfg["reference_csv"], search_dirs, field="reference_csv")
        except ConfigError as exc:
            problems.append(str(exc))

    problems += _tables.preset_problems(cfg, traits)
    if cfg.get("recipe_ledger", "off") == "strict" and not problems:
        problems += recipes.check_preset(cfg, traits, stage_config)[0]
    problems += _external.entries_problems(cfg)

    for i, method in enumerate(sweep.get("methods") or []):
        if not traits[method]["learns_scores"]:
            problems.append(f"gamma_sweep.methods[{i}]: {method!r} learns no scores; the sweep varies "
                            "the score-space step of S2AP, which only score-learning methods have")
    for i, value in enumerate(sweep.get("sparsities") or []):
        try:
            _check_sparsity(value)
        except ValueError as exc:
            problems.append(str(exc).replace("grid.sparsities", f"gamma_sweep.sparsities[{i}]"))
    return problems


def _train_option_problems(cfg: Mapping[str, Any], traits: Mapping[str, Mapping[str, bool]]) -> list[str]:
    """keep: best_val needs a validation split to select on; free adversarial training needs at
    least one replay (the schema's minimum says so too, this names the stage)."""
    problems = []
    for stage in TRAIN_STAGES:
        for method in [None, *traits]:
            train = deep_merge(cfg[stage], _method_overrides(cfg, method).get(stage))
            where = f"methods.{method}.{stage}" if method and stage in _method_overrides(cfg, method) \
                else stage
            if train.get("keep") == "best_val" and int(cfg["data"]["val_size"]) < 1:
                problems.append(f"{where}.keep: best_val selects the epoch on the validation split, "
                                "but data.val_size is 0; hold out some training images or keep: last")
            if train.get("loss") == "free" and int(train.get("free_replays", 1)) < 1:
                problems.append(f"{where}.free_replays: {train.get('free_replays')}; free adversarial "
                                "training replays each minibatch at least once")
    return list(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------- stage configs
def _normalise(obj: Any) -> Any:
    """Integral floats become ints, so 1 and 1.0 give the same JSON, params and hashes."""
    if isinstance(obj, float) and math.isfinite(obj) and obj.is_integer():
        return int(obj)
    if isinstance(obj, Mapping):
        return {str(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    return obj


def s2ap_uses_awp(s2ap: str) -> bool:
    return s2ap in ("on", "awp")


def stage_config(cfg: Mapping[str, Any], stage: str, *, dataset: str, arch: str,
                 method: str | None = None, s2ap: str | None = None,
                 traits: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """The part of a preset that shapes one stage of one cell, and nothing else.

    ``dataset`` and ``arch`` travel as CLI arguments; they are accepted here so a later per-dataset
    override has one place to go. ``traits`` (from ``method_traits``) only matters for finetune,
    where a method that needs no finetune gets 0 epochs unless the preset asks for some.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid choices: {', '.join(STAGES)}")
    over = _method_overrides(cfg, method)
    base = {"data": cfg["data"], "model": cfg["model"], "runtime": cfg["runtime"]}
    if stage == "evaluate":
        out = dict(base, evaluate=cfg["evaluate"])
        return _normalise(copy.deepcopy(out))
    train = deep_merge(cfg[stage], over.get(stage))
    out = dict(base, train=train)
    if stage == "prune":
        if method is None or s2ap is None:
            raise ValueError("the prune stage config needs a method and an s2ap value")
        out["method"] = {"name": method, "options": dict(over.get("options") or {})}
        on = s2ap_search_value(s2ap) == "on"
        out["s2ap"] = deep_merge(cfg["s2ap"], over.get("s2ap")) if on else None
        # mask stability, sharpness and the Hessian need the learned scores, which only the
        # search holds
        out["diagnostics"] = cfg["diagnostics"]
    elif stage == "finetune":
        if method is None or s2ap is None:
            raise ValueError("the finetune stage config needs a method and an s2ap value")
        out["method"] = {"name": method, "options": dict(over.get("options") or {})}
        out["awp"] = deep_merge(cfg["awp"], over.get("awp")) if s2ap_uses_awp(s2ap) else None
        if traits is not None and not traits.get("needs_finetune", True) \
                and "epochs" not in (over.get("finetune") or {}):
            out["train"]["epochs"] = 0
    return _normalise(copy.deepcopy(out))


def _hash_view(stage_cfg: Mapping[str, Any]) -> dict[str, Any]:
    view = copy.deepcopy(dict(stage_cfg))
    for section, keys in _NOT_IN_HASH.items():
        if isinstance(view.get(section), dict):
            for key in keys:
                view[section].pop(key, None)
    for (section, key), default in _HASHED_UNLESS_DEFAULT.items():
        if isinstance(view.get(section), dict) and view[section].get(key, default) == default:
            view[section].pop(key, None)
    return view


def short_hash(obj: Any, length: int = 10) -> str:
    text = json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stage_key(stage_cfg: Mapping[str, Any]) -> str:
    """Hash of what in a stage config shapes its numbers: a job reruns exactly when it changes
    (not when only a location or a speed setting does)."""
    return short_hash(_hash_view(stage_cfg))


def pretrain_recipe_hash(cfg: Mapping[str, Any], dataset: str, arch: str, method: str | None) -> str:
    """Key of the dense model a method starts from. It covers the pretrain stage config only, so
    methods with the same pretrain recipe, and S2AP on and off, share one dense model. An external
    dense model (``external_dense``) is keyed by its checksum, whatever the method."""
    return short_hash({"dataset": dataset, "arch": arch,
                       "pretrain": pretrain_identity(cfg, dataset, arch, method)})


def pretrain_identity(cfg: Mapping[str, Any], dataset: str, arch: str,
                      method: str | None) -> dict[str, Any]:
    """What made the dense model: the pretrain stage config without speed and location fields,
    or the external model's checksum (benchmark.core.external_dense.recipe)."""
    entry = _external.entry_for(cfg, dataset, arch)
    if entry is not None:
        return _external.recipe(entry)
    return _hash_view(stage_config(cfg, "pretrain", dataset=dataset, arch=arch, method=method))


def cell_config_hash(cfg: Mapping[str, Any], cell: Mapping[str, Any],
                     traits: Mapping[str, bool] | None = None) -> str:
    """Hash of everything that shapes a cell's numbers except its seed: aggregation pools seeds of
    the same hash and nothing else."""
    dataset, arch, method, s2ap = cell["dataset"], cell["arch"], cell["method"], cell["s2ap"]
    parts: dict[str, Any] = {"dataset": dataset, "arch": arch}
    if method == "dense":
        parts["pretrain"] = pretrain_identity(cfg, dataset, arch, cell.get("recipe_method"))
    else:
        traits = traits or _registry.TRAIT_DEFAULTS
        if traits.get("needs_pretrain", True):
            parts["pretrain"] = pretrain_identity(cfg, dataset, arch, method)
        for stage in ("prune", "finetune"):
            parts[stage] = stage_config(cfg, stage, dataset=dataset, arch=arch, method=method,
                                        s2ap=s2ap, traits=traits)
        parts["sparsity"] = canonical_sparsity(cell["sparsity"])
    parts["evaluate"] = stage_config(cfg, "evaluate", dataset=dataset, arch=arch)
    return short_hash({k: _hash_view(v) if isinstance(v, dict) else v for k, v in parts.items()})


# ---------------------------------------------------------------------------------- grid
def grid_cells(cfg: Mapping[str, Any], registry: _registry.Registry | None = None,
               search_dirs: Iterable[str | Path] = ()) -> list[dict[str, Any]]:
    """Every pruned cell of the preset: methods x s2ap x sparsities x seeds x datasets x archs.

    A method that learns no scores gets the single s2ap value "n/a" whatever the grid lists; each
    grid value becomes its ``effective_variant``, so no two cells run the same configuration.
    Each cell carries the method's traits and, when it starts from a dense model, the recipe hash
    of that model.
    """
    if registry is None:
        registry = methods_of(cfg, search_dirs)
    grid = cfg["grid"]
    sparsities = list(dict.fromkeys(canonical_sparsity(s) for s in grid["sparsities"]))
    traits_of = {m: registry.traits(m) for m in grid["methods"]}
    cells, seen = [], set()
    for dataset in grid["datasets"]:
        for arch in grid["archs"]:
            for method in grid["methods"]:
                traits = traits_of[method]
                values = [effective_variant(cfg, method, v, traits) for v in grid["s2ap"]] \
                    if traits["learns_scores"] else [S2AP_NA]
                recipe = (pretrain_recipe_hash(cfg, dataset, arch, method)
                          if traits["needs_pretrain"] else None)
                for s2ap in dict.fromkeys(values):
                    for sparsity in sparsities:
                        for seed in grid["seeds"]:
                            key = (dataset, arch, method, s2ap, sparsity, int(seed))
                            if key in seen:
                                continue
                            seen.add(key)
                            cells.append({"dataset": dataset, "arch": arch, "method": method,
                                          "s2ap": s2ap, "sparsity": sparsity, "seed": int(seed),
                                          "recipe": recipe, "traits": traits})
    return cells


def dense_cells(cfg: Mapping[str, Any], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The dense model evaluated for each (dataset, arch, seed): the one the first grid method that
    needs pretraining starts from, else the preset's own pretrain recipe."""
    out, seen = [], set()
    grid = cfg["grid"]
    for dataset in grid["datasets"]:
        for arch in grid["archs"]:
            first = next((c for c in cells if c["dataset"] == dataset and c["arch"] == arch
                          and c["recipe"] is not None), None)
            method = first["method"] if first else None
            recipe = first["recipe"] if first else pretrain_recipe_hash(cfg, dataset, arch, None)
            # an external dense model is one model whatever the seed: evaluated once
            external = _external.entry_for(cfg, dataset, arch) is not None
            for seed in grid["seeds"][:1] if external else grid["seeds"]:
                key = (dataset, arch, int(seed))
                if key in seen:
                    continue
                seen.add(key)
                out.append({"dataset": dataset, "arch": arch, "method": "dense", "s2ap": S2AP_NA,
                            "sparsity": "0", "seed": int(seed), "recipe": recipe,
                            "recipe_method": method})
    return out


def pretrain_recipes(cfg: Mapping[str, Any], cells: list[dict[str, Any]],
                     dense: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """recipe hash -> the pretrain stage config (and its dataset and arch) it stands for."""
    out: dict[str, dict[str, Any]] = {}
    for cell in list(cells) + list(dense):
        recipe = cell.get("recipe")
        if recipe is None or recipe in out:
            continue
        method = cell.get("recipe_method") if cell["method"] == "dense" else cell["method"]
        entry = _external.entry_for(cfg, cell["dataset"], cell["arch"])
        out[recipe] = {"dataset": cell["dataset"], "arch": cell["arch"], "external": entry,
                       "config": None if entry else stage_config(
                           cfg, "pretrain", dataset=cell["dataset"], arch=cell["arch"],
                           method=method)}
    return out


def cell_json(cfg: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, Any]:
    """The --cell argument of the evaluate command. A preset that follows the recipe ledger adds
    the declared deviations of the recipe the cell trained with (the leaderboard flags the row
    ``recipe-differs``); other presets' cells are as they were."""
    out = {
        "dataset": cell["dataset"], "arch": cell["arch"], "method": cell["method"],
        "s2ap": cell["s2ap"], "sparsity": float(cell["sparsity"]), "seed": int(cell["seed"]),
        "preset": cfg["name"], "pretrain_recipe": cell.get("recipe"),
        "config_hash": cell_config_hash(cfg, cell, cell.get("traits")),
    }
    if cfg.get("recipe_ledger", "off") != "off":
        method = cell.get("recipe_method") if cell["method"] == "dense" else cell["method"]
        devs = recipes.cached_deviations(cfg, stage_config, _grid_traits).get(method) or []
        if cell["method"] == "dense":  # the dense model carries its pretraining's deviations only
            devs = [d for d in devs if "/pretrain: " in d]
        if devs:
            out["recipe_deviations"] = devs
    return out


def dumps(obj: Any) -> str:
    """Compact, key-sorted JSON: the form stage configs take on the command line and in params."""
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"))


def _grid_traits(cfg: Mapping[str, Any]) -> dict[str, dict[str, bool]]:
    registry = methods_of(cfg)
    return {m: registry.traits(m) for m in cfg["grid"]["methods"]}
