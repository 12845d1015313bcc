"""A submission folder from one of our exported models: the way a model of this suite (or a copy
of one downloaded with its manifest) enters another preset's leaderboard, or is checked again.

  python -m benchmark make-submission --manifest results/published/quick/export/models/manifest.json \\
      --model fashion-mnist/small_cnn/hydra/on/sp90/seed0 [--out submissions/NAME] [--name TEXT]

writes ``submissions/<name>/`` (benchmark/publishing/submission.py): the model's safetensors file (its
sha256 checked against the manifest first) and a ``submission.yaml`` whose fields come from the
manifest record and the result that evaluated the model: preset, dataset, architecture, width,
eps, structure, what made it (method, S2AP setting, sparsity, the entry), the claims (measured
sparsity, clean and AutoAttack accuracy, in %), and the paper from the method's registration.
``python -m benchmark submit`` then evaluates it with the preset's protocol, which gives the
entry's numbers again (tests/test_make_submission.py). The folder is written whole or not at all.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from benchmark.core import model_files as mx
from benchmark.core.errors import UserError
from benchmark.core.io import replace_dir
from benchmark.core.papers import PaperMetadataError, method_paper
from benchmark.core.result_file import read_result
from benchmark.publishing.submission import NAME

SUBMISSIONS = Path("submissions")
MODEL_FILE = "model.safetensors"


class MakeSubmissionError(UserError, ValueError):
    """A model that cannot be made into a submission; the message says why."""


def default_name(record: dict[str, Any]) -> str:
    """A folder (entry) name from a manifest record: method, S2AP, sparsity and seed."""
    s2ap = str(record.get("s2ap") or "n/a").replace("/", "-")
    sp = f"{float(record.get('sparsity') or 0):g}"
    return re.sub(r"[^a-z0-9._-]", "-", f"{record['method']}-{s2ap}-sp{sp}-seed{record.get('seed', 0)}".lower())


def _percent(metric: dict[str, Any] | None) -> float | None:
    return None if not metric else round(100.0 * float(metric["acc"]), 2)


def submission_spec(record: dict[str, Any], result: dict[str, Any], *, model_file: Path,
                    sha256: str, name: str | None, method_files=()) -> dict[str, Any]:
    """The submission.yaml of an exported model (``record``: its manifest record; ``result``: the
    result that evaluated it)."""

    cell = result["cell"]
    s2ap = str(cell.get("s2ap"))
    made = (f"{cell['method']}" + ("" if s2ap in ("n/a", "off") else f" with S2AP ({s2ap})")
            + f" at {float(cell['sparsity']):g} % sparsity, seed {cell['seed']}, preset "
            f"{cell.get('preset')}: exported by this suite (entry {record.get('entry')})")
    claims = {"sparsity": round(100.0 * float(result["sparsity"]["measured"]), 2)}
    for key in ("clean", "autoattack"):
        value = _percent(result["metrics"].get(key))
        if value is not None:
            claims[key] = value
    spec: dict[str, Any] = {
        "preset": str(cell.get("preset") or record.get("preset")),
        "dataset": str(cell["dataset"]), "arch": str(cell["arch"]),
        "width": float(record.get("width", 1.0)), "num_classes": int(record["num_classes"]),
        "eps": float(result["eps"]), "structure": str(result.get("structure") or "unstructured"),
        "method": made[:300],
        "model": {"file": model_file.name, "sha256": sha256, "size": model_file.stat().st_size},
        "claims": claims,
    }
    if name:
        spec["name"] = name
    try:
        paper = method_paper(cell["method"], method_files) if cell["method"] != "dense" else None
    except (KeyError, PaperMetadataError):
        paper = None
    if paper:
        spec["paper"] = {k: paper[k] for k in ("key", "name", "authors", "venue", "link")}
    return spec


def make_submission(manifest: str | Path, model: str, *, out: str | Path | None = None,
                    name: str | None = None, method_files=()) -> Path:
    """Writes the submission folder of ``model`` (a model key, or an entry id with one model) of
    ``manifest``; returns the folder."""

    manifest = Path(manifest)
    try:
        record = mx.manifest_record(mx.read_manifest(manifest), model)
    except KeyError as exc:
        raise MakeSubmissionError(str(exc.args[0])) from None
    entry = (record.get("files") or {}).get("safetensors")
    if not entry:
        raise MakeSubmissionError(f"{model!r} has no safetensors file in {manifest} (published "
                                  "manifests whose files are hosted elsewhere list none): download "
                                  "it next to the manifest first")
    src = manifest.parent / entry["path"]
    mx.verify_file(src, entry["sha256"], entry.get("size"))
    result_path = manifest.parent / record["result"]
    if not result_path.is_file():
        raise MakeSubmissionError(f"the result that evaluated {model!r} ({result_path}) is missing: "
                                  "the claims come from it")
    result = read_result(result_path)
    folder = Path(out) if out is not None else SUBMISSIONS / default_name(record)
    if not NAME.match(folder.name):
        raise MakeSubmissionError(f"the folder name {folder.name!r} is the entry's id and must "
                                  f"match {NAME.pattern}")

    def build(tmp: Path) -> None:
        dst = tmp / MODEL_FILE
        shutil.copyfile(src, dst)
        spec = submission_spec(record, result, model_file=dst, sha256=entry["sha256"], name=name,
                               method_files=method_files)
        (tmp / "submission.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    replace_dir(folder, build)
    return folder


__all__ = ["MakeSubmissionError", "make_submission", "submission_spec", "default_name"]
