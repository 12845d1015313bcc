"""Models others can download and verify: safetensors + plain state_dict, a manifest of checksums,
and a loader that checks before it loads.

Export (``export_models``): for every result file, the model it evaluated (``model.pt`` of the
finetune stage, ``dense.pt`` for the dense model, found by ``model_source``) is written as

  <out>/<model key>/model.safetensors   the state_dict of the plain architecture (pruned weights
                                        are exact zeros), with string metadata (arch, dataset, ...)
  <out>/<model key>/model.pt            the same state_dict, torch.save'd (a dict of tensors only)

and listed in ``<out>/manifest.json`` (``MANIFEST_FORMAT``)::

  {"format": "apbench-model-manifest", "version": 1,
   "models": [{"model": "cifar10/resnet18/hydra/on/sp95/seed0",     # model_key: one seed
               "entry": "cifar10/resnet18/hydra/on/sp95/3fa2c0d1e4",  # entry_id: its leaderboard row
               "preset": "paper",
               "result": "../../runs/cifar10/.../seed0.json",        # relative to the manifest
               "dataset": "cifar10", "arch": "resnet18", "width": 1.0, "num_classes": 10,
               "method": "hydra", "s2ap": "on", "sparsity": 95, "seed": 0,
               "config_hash": "3fa2c0d1e4", "sparsity_measured": 0.95,
               "files": {"safetensors": {"path": "cifar10/.../model.safetensors",
                                         "sha256": "<64 hex>", "size": 44784392},
                         "state_dict": {"path": "cifar10/.../model.pt", "sha256": ..., "size": ...}}}]}

Loading (``load_state_dict_verified``, ``load_model_from_manifest``): the size and sha256 are
checked first; a file that starts like an HTML page (a login or "virus scan" page saved by a
browser or ``wget`` instead of the checkpoint: RobustBench users' most frequent complaint) is
named as such; only then is the file read, with safetensors or ``torch.load(weights_only=True)``,
never with a pickle that could run code.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core import safe_json
from benchmark.core.datasets import get_info
from benchmark.core.entries import canon_s2ap, expand_runs, model_key, preset_of, result_entry_id, result_key
from benchmark.core.errors import CorruptFileError, MissingFileError
from benchmark.core.io import atomic_write_text, load_checkpoint, replace_dir, sha256_file
from benchmark.core.result_file import read_result

MANIFEST_FORMAT = "apbench-model-manifest"
MANIFEST_VERSION = 1
FORMATS = ("safetensors", "state_dict")
FILE_NAMES = {"safetensors": "model.safetensors", "state_dict": "model.pt"}


class ModelFileError(CorruptFileError):
    """A model file that must not be loaded; the message names the file and the remedy."""


class ChecksumMismatchError(ModelFileError):
    """The file's size or sha256 differs from the manifest's."""


class NotACheckpointError(ModelFileError):
    """The file is not a model file at all (an HTML page, a JSON error, an unknown format)."""


class UnsafeCheckpointError(ModelFileError):
    """A pickle that would run code (or build objects other than tensors) when loaded: refused by
    ``torch.load(weights_only=True)`` before anything in it ran."""


class TruncatedFileError(ModelFileError):
    """A file in a model format whose content ends early (a broken download or copy)."""


# ------------------------------------------------------------------------------ checksums
def file_record(path: str | Path, relative_to: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": os.path.relpath(path, relative_to).replace(os.sep, "/"),
            "sha256": sha256_file(path), "size": path.stat().st_size}


# ------------------------------------------------------------------------------ sniffing
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<!--", b"<?xml", b"<meta", b"<script",
                b"<title", b"<div", b"<p>", b"<a ", b"<h1")


def _read_head(path: Path, n: int = 1024) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def refuse_web_page(path: str | Path) -> None:
    """NotACheckpointError when the file is an HTML page or a JSON/text error message."""
    path = Path(path)
    head = _read_head(path)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if any(text.startswith(s) for s in _HTML_STARTS) or b"<html" in text[:512]:
        first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:60].decode("utf-8", "replace")
        raise NotACheckpointError(
            f"{path} is an HTML page, not a model file (it starts with {first!r}): the download "
            "saved a web page (a login, quota or 'virus scan' page of the file host) instead of "
            "the checkpoint. Download the file again from the link in the manifest (a direct "
            "download link, not the preview page) and check its sha256 against the manifest.")
    if text.startswith((b"{", b"[")):
        raise NotACheckpointError(f"{path} is a JSON or text file, not a model file (it starts "
                                  f"with {head[:60]!r}); the download probably returned an error "
                                  "message. Download it again and check its sha256.")


def sniff_format(path: str | Path) -> str:
    """'safetensors', 'torch-zip' or 'torch-pickle'; NotACheckpointError for an HTML page, JSON
    or text, or anything else."""
    path = Path(path)
    refuse_web_page(path)
    head = _read_head(path)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= path.stat().st_size - 8 and head[8:9] == b"{":
            return "safetensors"
    raise NotACheckpointError(f"{path} is not a safetensors or PyTorch file (first bytes "
                              f"{head[:16]!r}); it may be truncated or of another format. "
                              "Download it again and check its sha256 against the manifest.")


def verify_file(path: str | Path, sha256: str, size: int | None = None) -> None:
    """Raises NotACheckpointError for an HTML page (the likelier story behind a wrong checksum),
    ChecksumMismatchError for a wrong size or sha256; returns None when the file is the one
    the manifest lists."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    actual_size = path.stat().st_size
    actual = None
    if size is None or actual_size == int(size):
        actual = sha256_file(path)
        if actual == str(sha256).lower():
            return
    refuse_web_page(path)  # an HTML page gets its own message
    what = (f"size {actual_size:,} bytes, expected {int(size):,}" if actual is None
            else f"sha256 {actual}, expected {str(sha256).lower()}")
    raise ChecksumMismatchError(
        f"{path} does not match the manifest ({what}): the file is truncated, corrupted or a "
        "different model. Download it again; do not load it.")


# ------------------------------------------------------------------------------ loading
def _load_tensors(path: Path, kind: str) -> dict[str, Any]:
    if kind == "safetensors":
        from safetensors.torch import load_file  # deferred: optional safetensors

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            raise TruncatedFileError(f"{path} is a damaged safetensors file ({exc}): truncated or "
                                     "corrupted. Download it again and check its sha256.") from exc
    import torch  # deferred: torch

    if kind == "torch-zip" and not zipfile.is_zipfile(path):
        raise TruncatedFileError(f"{path} is a truncated PyTorch file (its zip archive has no end "
                                 "record): the download or copy stopped early. Get it again and "
                                 "check its sha256.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded safely (torch.load weights_only=True): it is a pickle that "
            f"would run code or build objects other than tensors when loaded ({first}). It was not "
            "loaded; nothing in it ran. Export the plain state_dict (a dict of tensors) or "
            "safetensors instead.") from exc
    except Exception as exc:  # a damaged archive fails in torch's reader
        raise ModelFileError(f"{path} cannot be loaded safely (torch.load weights_only=True): "
                             f"{exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # the suite's own model.pt (state_dict, masks, meta)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path} holds no state_dict (a dict of tensors)")
    return obj


def load_state_dict_verified(path: str | Path, sha256: str, size: int | None = None) -> dict[str, Any]:
    """The state_dict in ``path`` after its checksum matched; safetensors or weights_only torch."""
    path = Path(path)
    verify_file(path, sha256, size)
    kind = sniff_format(path)
    return _load_tensors(path, "safetensors" if kind == "safetensors" else "torch")


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = safe_json.read_json_file(path)
    except safe_json.JSONFileError as exc:
        raise ModelFileError(f"cannot read model manifest {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelFileError(f"{path} is not a model manifest (format {MANIFEST_FORMAT!r} expected)")
    if int(manifest.get("version", 0)) > MANIFEST_VERSION:
        raise ModelFileError(f"{path} has manifest version {manifest.get('version')}; this suite "
                             f"reads up to {MANIFEST_VERSION}: update the suite")
    return manifest


def manifest_record(manifest: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The record of ``model`` (a model key, or an entry id when that entry has one model)."""
    records = manifest.get("models") or []
    hits = [r for r in records if r.get("model") == model] or [r for r in records if r.get("entry") == model]
    if len(hits) != 1:
        known = ", ".join(sorted(r.get("model", "?") for r in records)[:20])
        what = "is not in" if not hits else f"names {len(hits)} models (give a model key) in"
        raise KeyError(f"{model!r} {what} the manifest; models: {known}")
    return hits[0]


def load_from_manifest(manifest_path: str | Path, model: str, fmt: str = "safetensors",
                       build: bool = True) -> Any:
    """The verified model ``model`` of a manifest: an nn.Module of its architecture with the
    weights loaded strictly (``build=True``), or the bare state_dict."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    manifest_path = Path(manifest_path)
    record = manifest_record(read_manifest(manifest_path), model)
    entry = (record.get("files") or {}).get(fmt)
    if not entry:
        raise ModelFileError(f"{model!r} has no {fmt} file in {manifest_path}")
    state = load_state_dict_verified(manifest_path.parent / entry["path"], entry["sha256"], entry.get("size"))
    if not build:
        return state
    from benchmark.core.models import build_model  # deferred: torch

    net = build_model(record["arch"], get_info(record["dataset"]), width=float(record.get("width", 1.0)))
    net.load_state_dict(state, strict=True)
    return net.eval()


def verify_manifest(manifest_path: str | Path) -> list[str]:
    """Every file of a manifest checked; the problems found, one line each (empty: all good)."""
    manifest_path = Path(manifest_path)
    problems = []
    for record in read_manifest(manifest_path).get("models") or []:
        for fmt, entry in sorted((record.get("files") or {}).items()):
            try:
                verify_file(manifest_path.parent / entry["path"], entry["sha256"], entry.get("size"))
            except (ModelFileError, FileNotFoundError) as exc:
                problems.append(f"{record.get('model')} [{fmt}]: {exc}")
    return problems


# ------------------------------------------------------------------------------ export
def model_source(result: Mapping[str, Any], work_dir: str | Path) -> Path:
    """The model file a result evaluated: the file the result records (``model.path``, relative
    to the workflow's directory), else where the workflow writes it under ``work/<preset>``
    (workflows/rules/common.smk: dense_path / model_path), for results of older versions."""
    recorded = (result.get("model") or {}).get("path")
    if recorded:
        return Path(recorded)
    cell = result["cell"]
    work_dir = Path(work_dir)
    if cell["method"] == "dense":
        recipe = cell.get("pretrain_recipe")
        if not recipe:
            raise ModelFileError(f"the dense result of {model_key(cell)} names no pretrain recipe; "
                                 "pass the model file explicitly")
        return work_dir / "pretrain" / cell["dataset"] / cell["arch"] / recipe / f"seed{cell['seed']}" / "dense.pt"
    return work_dir / "finetune" / model_key(cell) / "model.pt"


def check_source(result: Mapping[str, Any], src: Path, result_path: str | Path) -> None:
    """ChecksumMismatchError when the model file is no longer the one the result evaluated."""
    want = (result.get("model") or {}).get("sha256")
    if want and sha256_file(src) != want:
        raise ChecksumMismatchError(
            f"{src} is not the model {result_path} evaluated (its sha256 differs from the one the "
            "result records): the file was replaced or retrained since. Rerun the evaluation "
            "(the workflow does so when the model is newer) before exporting it.")


def _plain_state_dict(path: Path) -> dict[str, Any]:

    if sniff_format(path) == "safetensors":  # a submission's file
        return {k: v.contiguous().clone() for k, v in _load_tensors(path, "safetensors").items()}
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} is not a model file of this suite (no state_dict)")
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _write_model(state: dict[str, Any], meta: dict[str, str], folder: Path) -> dict[str, Path]:

    import torch  # deferred: torch
    from safetensors.torch import save_file  # deferred: optional safetensors

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt, name in FILE_NAMES.items():
        final = folder / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            if fmt == "safetensors":
                save_file(state, tmp, metadata=meta)
            else:
                torch.save(state, tmp)
            os.replace(tmp, final)
        finally:
            Path(tmp).unlink(missing_ok=True)
        out[fmt] = final
    return out


def export_models(runs: Any, out_dir: str | Path, *, work_dir: str | Path | None = None,
                  sources: Mapping[str, str | Path] | None = None) -> dict[str, Any]:
    """Exports the model of every result file and writes ``out_dir/manifest.json``; returns the
    manifest. ``sources`` maps a result file to its model file; otherwise ``model_source`` finds
    it under ``work_dir`` (default ``work/<preset>``). A missing model file is an error naming
    the result: a manifest without it would publish an entry nobody can download."""

    out_dir = Path(out_dir)
    sources = {str(Path(k)): Path(v) for k, v in (sources or {}).items()}
    jobs = []
    for path in expand_runs(runs):
        result = read_result(path)
        src = sources.get(str(path)) or model_source(result, work_dir or f"work/{preset_of(result)}")
        if not src.is_file():
            raise MissingFileError(f"model file of {path} not found: {src}; run the workflow "
                                    "for this preset first (its work/ folder holds the models)")
        check_source(result, src, path)
        jobs.append((path, result, src))
    manifest: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        records = []
        for path, result, src in jobs:
            cell = result["cell"]
            key = model_key(cell)
            width = float((((result.get("config") or {}).get("evaluate") or {}).get("model") or {})
                          .get("width", 1.0))
            info = get_info(cell["dataset"])
            meta = {"format": "apbench-model", "model": key, "entry": result_entry_id(result),
                    "dataset": str(cell["dataset"]), "arch": str(cell["arch"]),
                    "width": f"{width:g}", "num_classes": str(info.num_classes)}
            files = _write_model(_plain_state_dict(src), meta, tmp / key)
            records.append({
                "model": key, "entry": result_entry_id(result), "preset": preset_of(result),
                "result": os.path.relpath(path, out_dir).replace(os.sep, "/"),
                "dataset": cell["dataset"], "arch": cell["arch"], "width": width,
                "num_classes": info.num_classes, "method": cell["method"],
                "s2ap": canon_s2ap(cell.get("s2ap")), "sparsity": cell.get("sparsity"),
                "seed": cell.get("seed"), "config_hash": result_key(result)[5],
                "sparsity_measured": (result.get("sparsity") or {}).get("measured"),
                "files": {fmt: file_record(p, tmp) for fmt, p in files.items()},
            })
        manifest.update({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                         "models": sorted(records, key=lambda r: r["model"])})
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2) + "\n")

    replace_dir(out_dir, build)
    return manifest


def manifest_by_model(manifests: str | Path | Iterable[str | Path] | None) -> dict[tuple, dict[str, Any]]:
    """(preset, model key) -> manifest record, from one manifest or several (one per preset), with
    file paths made relative to the current folder."""
    if manifests is None:
        return {}
    paths = [manifests] if isinstance(manifests, (str, Path)) else list(manifests)
    out: dict[tuple, dict[str, Any]] = {}
    for manifest_path in map(Path, paths):
        for record in read_manifest(manifest_path).get("models") or []:
            files = {fmt: {**e, "path": str(manifest_path.parent / e["path"])}
                     for fmt, e in (record.get("files") or {}).items()}
            out[(record.get("preset"), record["model"])] = {**record, "files": files,
                                                            "manifest": str(manifest_path)}
    return out


__all__ = ["MANIFEST_FORMAT", "ModelFileError", "ChecksumMismatchError", "NotACheckpointError",
           "UnsafeCheckpointError", "TruncatedFileError", "check_source",
           "sha256_file", "sniff_format", "verify_file", "load_state_dict_verified", "read_manifest",
           "manifest_record", "load_from_manifest", "verify_manifest", "model_source",
           "export_models", "manifest_by_model"]
