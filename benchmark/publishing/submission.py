"""External submissions: a model from outside, evaluated with exactly the suite's protocol.

A submission is a folder ``submissions/<name>/`` (the folder's name is the entry's name) holding
``submission.yaml`` and the model file. ``benchmark/schemas/submission.schema.json`` describes the
YAML; in short::

  preset: quick                 # whose protocol evaluates it, and whose leaderboard it joins
  dataset: fashion-mnist        # in that preset's grid
  arch: small_cnn               # a registered architecture; the file must load strictly into it
  width: 1.0                    # optional (default: the preset's model.width)
  num_classes: 10               # optional; must be the dataset's
  eps: 0.1                      # the eps the submitter used: must be the preset's
  structure: unstructured       # optional: unstructured | structured
  name: "HYDRA-95 (Doe et al.)"  # optional: the entry's name on its row (default: the folder's)
  method: "HYDRA, 20 search epochs, then 10 finetune epochs"   # how it was made, in words
  model: {file: model.safetensors, sha256: <64 hex>, size: 358632}   # size optional
  claims: {sparsity: 95, clean: 80.1, autoattack: 41.0}        # in %; clean/autoattack optional
  paper: {key: Doe2025Pruning, name: ..., authors: ..., venue: ..., link: https://...}  # optional

``submit(folder)`` refuses, with a ``SubmissionError`` whose ``reason`` and message say which:
a YAML that breaks the schema (``schema``), a name that is not a valid entry name or is a
method's (``name``), an unknown preset or a dataset outside its grid (``preset``, ``dataset``), an
eps other than the protocol's (``eps``), a class count other than the dataset's (``classes``), a
file whose sha256 differs (``checksum``) or that ends early (``truncated``), a pickle that would
run code when loaded (``pickle``: refused by ``torch.load(weights_only=True)`` before anything in
it runs), a file that is no model at all (``not-a-model``), a state_dict that does not load
strictly into the architecture (``architecture``). Otherwise the model is loaded (safetensors, or
``weights_only=True``; never a pickle), its sparsity measured from its zero weights
(``benchmark.core.masking.measure_sparsity``) and it is evaluated with the preset's evaluate section,
exactly as the evaluate stage evaluates the preset's own models (same images, eps, attacks, batch
sizes and seeds; the resolved protocol is recorded). The result is a normal result JSON written
by ``benchmark.core.result_file.write_result`` (cell: method = the name, s2ap 'n/a', sparsity = the claimed
one, seed 0), with a ``submission`` block of claimed vs measured values; the leaderboard flags it
("submission"), and flags claims our measurement does not confirm ("claim-outside").

Torch is imported inside the functions: the Snakefile lists submissions at parse time.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import time
import zipfile
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core import model_files as mx
from benchmark.core import result_file as results
from benchmark.core import strict_yaml
from benchmark.core.datasets import get_info
from benchmark.core.errors import ConfigError
from benchmark.core.io import sha256_file
from benchmark.core.paths import REPO_ROOT, SCHEMAS_DIR
from benchmark.core.provenance import provenance
from benchmark.core.registry import ARCHITECTURES, DATASETS
from benchmark.publishing import submission_checks as checks

log = logging.getLogger(__name__)

SUBMISSIONS_DIR = Path("submissions")
SUBMISSION_FILE = "submission.yaml"
SCHEMA_FILE = SCHEMAS_DIR / "submission.schema.json"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # matched in full (fullmatch): no trailing newline
REPO = REPO_ROOT
REASONS = ("schema", "name", "preset", "dataset", "eps", "classes", "file", "checksum",
           "truncated", "pickle", "not-a-model", "architecture", "dtype", "non-finite")


class SubmissionError(ConfigError):
    """A submission that is refused: ``reason`` (one of REASONS) and a message naming the folder,
    the field or file, and what is wrong."""

    def __init__(self, reason: str, message: str, folder: str | Path | None = None) -> None:
        self.reason, self.folder = reason, None if folder is None else str(folder)
        shown = str(folder)
        where = "" if folder is None else f"submission {shown if shown.isprintable() else repr(shown)}: "
        super().__init__(f"{where}refused ({reason}): {message}")


# ---------------------------------------------------------------- the YAML
@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def read_submission(folder: str | Path) -> dict[str, Any]:
    """The validated submission.yaml of a folder; SubmissionError('schema'/'file') otherwise."""
    import jsonschema  # deferred: jsonschema

    folder = Path(folder)
    path = folder / SUBMISSION_FILE
    if not os.path.lexists(path):
        raise SubmissionError("file", f"{path} not found: a submission folder holds "
                                      f"{SUBMISSION_FILE} and the model file", folder)
    problem = checks.file_problem(folder, SUBMISSION_FILE)
    if problem is not None:
        raise SubmissionError("file", problem, folder)
    try:
        spec = strict_yaml.load_file(path)
    except strict_yaml.StrictYAMLError as exc:
        raise SubmissionError("schema", str(exc), folder) from None
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(spec))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise SubmissionError("schema", f"{path}: field {where}: {error.message} (the fields are "
                                        f"described in benchmark/schemas/{SCHEMA_FILE.name})", folder)
    return spec


def submissions_for(preset: str, root: str | Path = SUBMISSIONS_DIR,
                    warn: Callable[[str], Any] | None = None) -> list[dict[str, str]]:
    """The submission folders under ``root`` whose submission.yaml names ``preset``:
    [{"name", "dir", "model"}], for the workflow (read leniently: the submit job refuses what is
    wrong, with its message). Folders for other presets are skipped; folders whose YAML cannot be
    read or whose name is not an entry name are skipped with a warning (``warn``, default this
    module's logger)."""
    warn = warn or log.warning
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if (p / SUBMISSION_FILE).is_file()):
        try:
            spec = strict_yaml.load_file(folder / SUBMISSION_FILE) or {}
        except strict_yaml.StrictYAMLError as exc:
            warn(f"warning: {exc}; skipped")
            continue
        if not isinstance(spec, dict) or spec.get("preset") != preset:
            continue
        if not NAME.fullmatch(folder.name):
            warn(f"warning: submission folder {folder}: the name must match {NAME.pattern} (it is "
                 "the entry's name); skipped")
            continue
        model = (spec.get("model") or {}).get("file") if isinstance(spec.get("model"), dict) else None
        out.append({"name": folder.name, "dir": str(folder),
                    "model": str(folder / model) if isinstance(model, str) else str(folder / SUBMISSION_FILE)})
    return out


# ---------------------------------------------------------------- the model file
def _truncated(path: Path) -> bool:
    """Whether a file in a model format ends before its own header says it does."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head[:4] == b"PK\x03\x04":
                return not zipfile.is_zipfile(path)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                size = path.stat().st_size
                if 0 < n < (1 << 27):
                    if n > size - 8:
                        return True
                    header = json.loads(fh.read(n))
                    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                    return 8 + n + max(ends, default=0) > size
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


def load_submitted_state(folder: Path, spec: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """(model file, state_dict) after the checks: the file exists in the folder, its size and
    sha256 are the YAML's, and it reads as safetensors or with weights_only=True."""

    entry = spec["model"]
    path = folder / entry["file"]
    if not os.path.lexists(path):
        raise SubmissionError("file", f"the model file {path} named in {SUBMISSION_FILE} "
                                      "(model.file) does not exist", folder)
    problem = checks.file_problem(folder, entry["file"])
    if problem is not None:
        raise SubmissionError("file", f"model.file: {problem}", folder)
    # before the library parses it: its own refusal of a lying header reads "damaged"
    problems = checks.safetensors_problems(path) if _is_safetensors(path) else []
    if problems:
        raise SubmissionError("truncated" if _truncated(path) else "not-a-model",
                              f"{path} is not a consistent safetensors file: " + "; ".join(problems[:3]),
                              folder)

    try:
        state = mx.load_state_dict_verified(path, entry["sha256"], entry.get("size"))
    except mx.ChecksumMismatchError as exc:
        if _truncated(path) or (entry.get("size") and path.stat().st_size < int(entry["size"])):
            raise SubmissionError("truncated", f"{path} is truncated: it ends before its own "
                                               f"header (or model.size) says it does. {exc}", folder) from exc
        raise SubmissionError("checksum", f"{path} does not match model.sha256 of {SUBMISSION_FILE}: "
                                          f"{exc}", folder) from exc
    except mx.UnsafeCheckpointError as exc:
        raise SubmissionError("pickle", f"{path} is a pickle that would run code when loaded: "
                                        f"{exc}", folder) from exc
    except mx.TruncatedFileError as exc:
        raise SubmissionError("truncated", str(exc), folder) from exc
    except mx.ModelFileError as exc:
        reason = "truncated" if _truncated(path) else "not-a-model"
        raise SubmissionError(reason, str(exc), folder) from exc
    return path, state


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and head[:4] != b"PK\x03\x04"


def _classifier(net: Any) -> str | None:
    """The name of the model's last Linear layer (its outputs are the class scores)."""
    import torch.nn as nn  # deferred: torch

    name = None
    for n, module in net.named_modules():
        if isinstance(module, nn.Linear):
            name = n
    return name


def build_submitted_model(folder: Path, state: dict[str, Any], arch: str, info: Any,
                          width: float) -> Any:
    """The registered architecture with the submitted weights loaded strictly; SubmissionError
    ('classes' or 'architecture') naming the mismatch."""
    from benchmark.core.models import build_model  # deferred: torch

    net = build_model(arch, info, width=width)
    dtypes, non_finite = checks.tensor_problems(state, net.state_dict())
    if dtypes:
        raise SubmissionError("dtype", "the model file's tensors do not have the architecture's "
                                       f"dtypes: {'; '.join(dtypes[:5])}", folder)
    if non_finite:
        raise SubmissionError("non-finite", f"the model file holds non-finite weights: "
                                            f"{'; '.join(non_finite[:5])}", folder)
    head = _classifier(net)
    weight = state.get(f"{head}.weight") if head else None
    if weight is not None and getattr(weight, "dim", lambda: 0)() == 2 \
            and int(weight.shape[0]) != int(info.num_classes):
        raise SubmissionError("classes", f"the model has {int(weight.shape[0])} outputs "
                                         f"({head}.weight {tuple(weight.shape)}); {info.name} has "
                                         f"{info.num_classes} classes", folder)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state)
                    if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatches " + ", ".join(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes[:5]))
        raise SubmissionError("architecture", f"the model file does not load strictly into "
                                              f"architecture {arch!r} (width {width:g}) for "
                                              f"{info.name}: {'; '.join(parts)}", folder)
    net.load_state_dict(state, strict=True)
    return net


# ---------------------------------------------------------------- the protocol
def resolve_preset(name: str, preset_file: str | Path | None = None,
                   search_dirs: Iterable[str | Path] = ()) -> tuple[Path, dict[str, Any]]:
    """(preset file, validated preset) of the preset a submission names."""

    dirs = [Path.cwd(), *map(Path, search_dirs), REPO]
    if preset_file is None:
        candidates = [d / "presets" / f"{name}.yaml" for d in dirs]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise SubmissionError("preset", f"preset {name!r} not found (looked for "
                                            f"{', '.join(map(str, candidates))})")
        preset_file = found
    preset_file = Path(preset_file)
    cfg = apcfg.validate(apcfg.load_preset(preset_file), search_dirs=[preset_file.parent.parent, *dirs])
    if cfg["name"] != name:
        raise SubmissionError("preset", f"{preset_file} is preset {cfg['name']!r}, the submission "
                                        f"names preset {name!r}")
    return preset_file, cfg


def default_output(preset: str, name: str) -> Path:
    return Path("results") / preset / "submissions" / f"{name}.json"


def submit(folder: str | Path, *, preset_file: str | Path | None = None,
           out: str | Path | None = None, state_dir: str | Path | None = None,
           search_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Checks, loads and evaluates a submission; writes and returns its result record."""
    from benchmark.core import masking  # deferred: torch

    # deferred: pyautoattack, torch
    from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval, stage_config
    from benchmark.training.stages import apply_runtime, load_splits  # deferred: pyautoattack, torch, tqdm

    t0 = time.perf_counter()
    folder = Path(folder)
    spec = read_submission(folder)
    name = folder.resolve().name
    if not NAME.fullmatch(name):
        raise SubmissionError("name", f"the folder name {name!r} is the entry's name and must match "
                                      f"{NAME.pattern}", folder)
    preset_path, cfg = resolve_preset(spec["preset"], preset_file, search_dirs)
    if name == "dense" or name in apcfg.methods_of(cfg, [preset_path.parent.parent, REPO]):
        raise SubmissionError("name", f"{name!r} is the name of a method of the suite; name the "
                                      "folder after the submission (it becomes the entry's name)",
                              folder)
    dataset, arch = spec["dataset"], spec["arch"]
    if dataset not in DATASETS:
        raise SubmissionError("dataset", f"unknown dataset {dataset!r}; valid: "
                                         f"{', '.join(DATASETS.names())}", folder)
    if dataset not in cfg["grid"]["datasets"]:
        raise SubmissionError("dataset", f"dataset {dataset!r} is not in preset {cfg['name']!r}, "
                                         f"whose entries are on {', '.join(cfg['grid']['datasets'])}",
                              folder)
    if arch not in ARCHITECTURES:
        raise SubmissionError("architecture", f"unknown architecture {arch!r}; valid: "
                                              f"{', '.join(ARCHITECTURES.names())}", folder)
    info = get_info(dataset)
    if spec.get("num_classes") is not None and int(spec["num_classes"]) != int(info.num_classes):
        raise SubmissionError("classes", f"num_classes {spec['num_classes']} in {SUBMISSION_FILE}; "
                                         f"{dataset} has {info.num_classes} classes", folder)
    stage = apcfg.stage_config(cfg, "evaluate", dataset=dataset, arch=arch)
    eps = float(info.eps if stage["evaluate"].get("eps") is None else stage["evaluate"]["eps"])
    if not math.isclose(float(spec["eps"]), eps, rel_tol=1e-9, abs_tol=0.0):
        raise SubmissionError("eps", f"the submission claims eps {spec['eps']:g}; the protocol of "
                                     f"preset {cfg['name']!r} evaluates {dataset} at eps {eps:g} "
                                     "(a robust accuracy at another eps is another number)", folder)
    width = float(spec.get("width") or stage["model"].get("width", 1.0))
    stage["model"] = dict(stage["model"], width=width)

    path, state = load_submitted_state(folder, spec)
    model = build_submitted_model(folder, state, arch, info, width)
    device = apply_runtime(stage.get("runtime"))
    sparsity = masking.measure_sparsity(model)
    model = prepare_for_eval(model.to(device))
    _, _, test_set = load_splits(dataset, stage.get("data", {}), augment=False)
    ecfg = stage_config(stage["evaluate"], info.eps,
                        Path(state_dir) / "autoattack" if state_dir else None)
    evaluation = evaluate_model(model, test_set, ecfg, device)
    sha = sha256_file(path)
    claims = {k: float(v) for k, v in spec["claims"].items()}
    configs = {"evaluate": stage,
               "submission": {"name": name, "method": spec["method"], "model_sha256": sha,
                              "structure": spec.get("structure", "unstructured")}}
    cell = {"dataset": dataset, "arch": arch, "method": name, "s2ap": "n/a",
            "sparsity": claims["sparsity"], "seed": 0, "preset": cfg["name"],
            "pretrain_recipe": None, "config_hash": None}
    record = results.build_record(
        cell=cell, structure=spec.get("structure", "unstructured"), configs=configs,
        evaluation=evaluation, sparsity=sparsity,
        timing={**evaluation["timing"], "evaluate_s": time.perf_counter() - t0},
        diagnostics={}, history={}, provenance=provenance(),
        model={"path": str(path), "sha256": sha},
        submission={"name": name, "title": spec.get("name"), "method": spec["method"],
                    "directory": str(folder),
                    "claims": claims, "paper": spec.get("paper")})
    results.write_result(out or default_output(cfg["name"], name), record)
    return record


__all__ = ["SubmissionError", "REASONS", "SUBMISSIONS_DIR", "SUBMISSION_FILE", "read_submission",
           "submissions_for", "load_submitted_state", "build_submitted_model", "resolve_preset",
           "default_output", "submit"]
