"""Dense models trained elsewhere, in place of our own pretraining (preset ``external_dense``).

ImageNet's ResNet-50 at eps 4/255 starts from a robust dense model. Training one is days of GPU
time, so a preset may name a robust checkpoint instead, per (dataset, architecture)::

    external_dense:
      - {dataset: imagenet, arch: resnet50, path: models/r50_linf4.safetensors, sha256: <64 hex>}
      - {dataset: imagenet, arch: resnet50, sha256: <64 hex>,
         robustbench: {name: Salman2020Do_R50, model_dir: models}}

``path`` is a local file: safetensors, or a torch file read with ``weights_only=True``. A
``robustbench`` entry names a RobustBench zoo model already in ``model_dir`` (RobustBench's layout:
``<model_dir>/<dataset>/<threat_model>/<name>.pt``); it is built by RobustBench's own code
(``benchmark.core.robustbench_compat.import_robustbench()``, the optional extra ``.[robustbench]``).
Nothing downloads at run time: a missing file is an error that says where to put it.

Either way the file's sha256 is checked before anything reads it, and its weights are copied into
our architecture (``adapt_state_dict``: the network's keys, found under a wrapper prefix such as
``module.``, ``model.`` or RobustBench's normaliser-first ``1.``; a normalisation the checkpoint
carries must equal the dataset's, which our model applies itself). The result is a ``dense.pt``
like the pretrain stage's, recording the entry (with the checksum) as its pretrain recipe, so
every result downstream names the dense model it started from, and changing the file's checksum
reruns every search that used it.

Torch-free at import: ``benchmark.core.config`` reads the entries while the Snakefile is parsed.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core.datasets import get_info
from benchmark.core.errors import CheckpointError, ConfigError, MissingFileError
from benchmark.core.io import atomic_torch_save, load_state_dict_checked
from benchmark.core.model_files import ModelFileError, sniff_format
from benchmark.core.robustbench_compat import import_robustbench

log = logging.getLogger(__name__)

THREAT_MODEL = "Linf"
# where a wrapper may have put the network's own keys (DataParallel, RobustBench's
# Sequential(normaliser, net), our own Normalized)
KEY_PREFIXES = ("net.", "", "module.", "model.", "1.", "module.1.", "model.1.", "module.model.",
                "module.net.")
_NORMALISER_KEYS = {"mean": ("mean", "mu", "0.mean", "0.mu", "module.mean", "model.mean",
                             "normalize.mean"),
                    "std": ("std", "sigma", "0.std", "0.sigma", "module.std", "model.std",
                            "normalize.std")}


# ---------------------------------------------------------------- preset entries (no torch)
def entry_for(cfg: Mapping[str, Any], dataset: str, arch: str) -> dict[str, Any] | None:
    """The preset's external dense model for (dataset, arch), or None."""
    for entry in cfg.get("external_dense") or []:
        if entry["dataset"] == dataset and entry["arch"] == arch:
            return dict(entry)
    return None


def recipe(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the dense model in hashes and results: the checksum, and where it came from
    (a location that moves does not change it)."""
    source = ({"robustbench": entry["robustbench"]["name"]} if entry.get("robustbench")
              else {"file": Path(str(entry["path"])).name})
    return {"external": {"sha256": entry["sha256"], **source}}


def entries_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Rules across fields: one entry per (dataset, arch), each a cell of the grid."""
    problems, seen = [], set()
    grid = cfg["grid"]
    for i, entry in enumerate(cfg.get("external_dense") or []):
        key = (entry["dataset"], entry["arch"])
        if key in seen:
            problems.append(f"external_dense[{i}]: a second entry for {key[0]}/{key[1]}; keep one")
        seen.add(key)
        if key[0] not in grid["datasets"] or key[1] not in grid["archs"]:
            problems.append(f"external_dense[{i}]: {key[0]}/{key[1]} is not in the grid "
                            f"(datasets {grid['datasets']}, archs {grid['archs']}); remove it or "
                            "add them to the grid")
    return problems


def _first_existing(rel: Path, search_dirs: Iterable[str | Path], is_dir: bool = False) -> Path:
    if rel.is_absolute():
        return rel
    for base in [Path.cwd(), *map(Path, search_dirs)]:
        if (base / rel).is_dir() if is_dir else (base / rel).is_file():
            return base / rel
    return rel


def source_path(entry: Mapping[str, Any], search_dirs: Iterable[str | Path] = ()) -> Path:
    """The file an entry names: relative paths are looked up in the working directory, then in
    each search directory (not checked for existence here)."""
    if entry.get("robustbench"):
        rb = entry["robustbench"]
        model_dir = _first_existing(Path(rb["model_dir"]), search_dirs, is_dir=True)
        return model_dir / entry["dataset"] / rb.get("threat_model", THREAT_MODEL) / f"{rb['name']}.pt"
    return _first_existing(Path(str(entry["path"])), search_dirs)


def resolved(entry: Mapping[str, Any], search_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The entry with its file (or RobustBench's model_dir) as found on this machine, for a job
    that runs in another working directory."""
    out = dict(entry)
    path = source_path(entry, search_dirs)
    if entry.get("robustbench"):
        out["robustbench"] = {**entry["robustbench"], "model_dir": str(path.parents[2])}
    else:
        out["path"] = str(path)
    return out


def missing_problems(cfg: Mapping[str, Any], search_dirs: Iterable[str | Path] = ()) -> list[str]:
    """Entries whose file is not on this machine (a machine check: preflight)."""
    problems = []
    for i, entry in enumerate(cfg.get("external_dense") or []):
        path = source_path(entry, search_dirs)
        if not path.is_file():
            problems.append(f"external_dense[{i}]: {path} not found; {_remedy(entry)}")
    return problems


def _remedy(entry: Mapping[str, Any]) -> str:
    if entry.get("robustbench"):
        rb = entry["robustbench"]
        return (f"nothing downloads at run time: fetch it once on a machine with internet access "
                f"(robustbench.utils.load_model(model_name={rb['name']!r}, "
                f"model_dir={rb['model_dir']!r}, dataset={entry['dataset']!r}, "
                f"threat_model={rb.get('threat_model', THREAT_MODEL)!r})) and copy model_dir here")
    return "place the checkpoint there, or correct external_dense.path"


# ---------------------------------------------------------------- checking and loading
def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify(path: Path, entry: Mapping[str, Any]) -> None:
    """The checksum before anything reads the file."""
    if not path.is_file():
        raise MissingFileError(f"external dense model not found: {path}; {_remedy(entry)}")
    actual = sha256_file(path)
    if actual != str(entry["sha256"]).lower():
        raise CheckpointError(
            f"{path} has sha256 {actual}, the preset's external_dense entry for "
            f"{entry['dataset']}/{entry['arch']} expects {entry['sha256']}: the file is truncated, "
            "corrupted or another model. Replace it (or, if it is the model you mean, put its "
            "checksum in the preset); nothing was loaded")


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state_dict of a verified file: safetensors, or torch with weights_only=True (also
    inside a {"state_dict" | "model_state_dict" | "model" | "net": ...} wrapper)."""
    import torch  # deferred: torch


    try:
        kind = sniff_format(path)
    except ModelFileError as exc:
        raise CheckpointError(str(exc)) from exc
    if kind == "safetensors":
        from safetensors.torch import load_file  # deferred: optional safetensors

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise CheckpointError(f"{path} cannot be loaded safely (torch.load weights_only=True): "
                              f"{str(exc).splitlines()[0][:300]}") from exc
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict (a dict of tensors, possibly under "
                              "'state_dict' or 'model')")
    return obj


def _robustbench_state_dict(path: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """RobustBench's own model for the entry, built by its code from the verified local file."""


    rb = entry["robustbench"]
    import_robustbench()  # the extra, with its `import autoattack` resolved
    utils = importlib.import_module("robustbench.utils")
    # the file is in place and verified, so load_model reads it and downloads nothing
    model = utils.load_model(model_name=rb["name"], model_dir=rb["model_dir"],
                             dataset=entry["dataset"], threat_model=rb.get("threat_model", THREAT_MODEL))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _normaliser(sd: Mapping[str, Any], name: str):
    for key in _NORMALISER_KEYS[name]:
        if key in sd:
            return sd[key]
    return None


def adapt_state_dict(sd: Mapping[str, Any], model: Any, source: Path) -> dict[str, Any]:
    """``sd`` as the state_dict of our ``Normalized`` model: the network's keys found under one
    wrapper prefix, our normalisation kept (a different one in the checkpoint is an error)."""
    import torch  # deferred: torch

    ours = model.state_dict()
    net_keys = [k[len("net."):] for k in ours if k.startswith("net.")]
    prefix = next((p for p in KEY_PREFIXES if all(p + k in sd for k in net_keys)), None)
    if prefix is None:
        best = max(KEY_PREFIXES, key=lambda p: sum(p + k in sd for k in net_keys))
        absent = [best + k for k in net_keys if best + k not in sd][:5]
        raise CheckpointError(
            f"{source} does not hold this architecture's weights: {len(absent)}+ of its "
            f"{len(net_keys)} keys are missing (e.g. {absent}; looked under the prefixes "
            f"{[p or '<none>' for p in KEY_PREFIXES]}); a checkpoint of another architecture?")
    for name in ("mean", "std"):
        theirs = _normaliser(sd, name)
        if theirs is not None and not torch.allclose(theirs.flatten().float(),
                                                     ours[name].flatten(), atol=1e-4):
            raise CheckpointError(
                f"{source} was trained with input {name} {theirs.flatten().tolist()}, the dataset's "
                f"is {ours[name].flatten().tolist()}: the model would see other inputs than it was "
                "trained on")
    out = {f"net.{k}": sd[prefix + k] for k in net_keys}
    out["mean"], out["std"] = ours["mean"], ours["std"]
    return out


def import_dense(entry: Mapping[str, Any], *, dataset: str, arch: str, model_cfg: Mapping[str, Any],
                 out: str | Path, search_dirs: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Checks and converts an external dense model into a ``dense.pt`` of the suite."""
    from benchmark.core.models import build_model  # deferred: torch

    t0 = time.perf_counter()
    if (entry["dataset"], entry["arch"]) != (dataset, arch):
        raise ConfigError(f"external_dense entry for {entry['dataset']}/{entry['arch']} given for "
                          f"{dataset}/{arch}")
    path = source_path(entry, search_dirs)
    verify(path, entry)
    sd = _robustbench_state_dict(path, entry) if entry.get("robustbench") else read_state_dict(path)
    info = get_info(dataset)
    width = float((model_cfg or {}).get("width", 1.0))
    model = build_model(arch, info, width=width)
    state = adapt_state_dict(sd, model, path)
    load_state_dict_checked(model, state, path, f"{arch} model of {dataset} at width {width:g}")
    config = recipe(entry)
    meta = {"stage": "pretrain", "configs": {"pretrain": config}, "dataset": dataset, "arch": arch,
            "seed": None, "width": width, "history": [], "external": config["external"],
            "timing": {"pretrain_s": 0.0, "import_s": time.perf_counter() - t0}}
    atomic_torch_save({"state_dict": {k: v.detach().cpu().contiguous()
                                      for k, v in model.state_dict().items()},
                       "masks": None, "meta": json.dumps(meta)}, out)
    log.info("imported %s (sha256 %s) as the dense %s of %s", path, entry["sha256"][:12], arch,
             dataset)
    return meta


__all__ = ["THREAT_MODEL", "adapt_state_dict", "entries_problems", "entry_for", "import_dense",
           "missing_problems", "read_state_dict", "recipe", "resolved", "sha256_file", "source_path",
           "verify"]
