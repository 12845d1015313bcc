"""What a published entry is: the identities the site, the exports and the manifest share.

Two identities travel between the site, the RobustBench export and the model manifest:

- an **entry** is one leaderboard row: the seeds of one (dataset, arch, method, s2ap, sparsity)
  cell under one configuration hash, pooled. ``entry_id`` spells it as a path,
  ``fashion-mnist/small_cnn/hydra/on/sp95/9f88c3d2b0``; ``entry_slug`` is the same as a file name.
- a **model** is one result file (one seed of an entry): ``model_key`` mirrors the result's place
  under ``runs/``, ``fashion-mnist/small_cnn/hydra/on/sp95/seed0``.

The publishing modules read result files only through ``benchmark.core.result_file.read_result``, the
suite's one reader, so they see only records that passed the schema and its rules. Torch-free.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core.cells import canonical_sparsity, s2ap_to_path
from benchmark.core.provenance import config_hash

S2AP_NA = "n/a"


def canon_s2ap(value: Any) -> str:
    """The s2ap spelling of the leaderboard ('n/a', 'off', 'on', ...), as benchmark.results.aggregate."""
    if value is None:
        return S2AP_NA
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    return {"true": "on", "false": "off", "none": S2AP_NA, "na": S2AP_NA, "n-a": S2AP_NA}.get(text, text)


def _sparsity_text(value: Any) -> str:
    return canonical_sparsity(value if value is not None else 0)


def entry_id(row: Mapping[str, Any]) -> str:
    """A leaderboard row's identity: dataset/arch/method/s2ap/sp<sparsity>/<config hash>."""
    return "/".join([str(row["dataset"]), str(row["arch"]), str(row["method"]),
                     s2ap_to_path(canon_s2ap(row.get("s2ap"))),
                     f"sp{_sparsity_text(row.get('sparsity'))}", str(row.get("config_hash") or "none")])


def model_key(cell: Mapping[str, Any]) -> str:
    """One seed's identity, the result file's place under runs/ without '.json'."""
    return "/".join([str(cell["dataset"]), str(cell["arch"]), str(cell["method"]),
                     s2ap_to_path(canon_s2ap(cell.get("s2ap"))),
                     f"sp{_sparsity_text(cell.get('sparsity'))}", f"seed{cell.get('seed')}"])


def slug(text: str) -> str:
    """A file name for an id: anything outside [A-Za-z0-9._-] becomes '-' (ids never hold '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "_")).strip("-.") or "entry"


def entry_slug(row: Mapping[str, Any], preset: str | None = None) -> str:
    """The file name of an entry's page; the preset goes first, so one site over several presets
    never gives two entries one page."""
    return slug(f"{preset}/{entry_id(row)}" if preset else entry_id(row))


def row_key(row: Mapping[str, Any]) -> tuple:
    """The pooling key of benchmark.results.aggregate, from a leaderboard row or a result record."""
    return (str(row["dataset"]), str(row["arch"]), str(row["method"]), canon_s2ap(row.get("s2ap")),
            float(row.get("sparsity") or 0.0), str(row.get("config_hash") or "none"))


def result_key(result: Mapping[str, Any]) -> tuple:
    """``row_key`` of the leaderboard row a result file is pooled into."""
    cell = result["cell"]
    chash = result.get("config_hash") or cell.get("config_hash")
    if not chash:

        chash = config_hash(result.get("config")) if result.get("config") is not None else "none"
    return row_key({**cell, "config_hash": chash})


def result_entry_id(result: Mapping[str, Any]) -> str:
    """``entry_id`` of the leaderboard row a result file is pooled into."""
    dataset, arch, method, s2ap, sparsity, chash = result_key(result)
    return entry_id({"dataset": dataset, "arch": arch, "method": method, "s2ap": s2ap,
                     "sparsity": sparsity, "config_hash": chash})


def preset_of(result: Mapping[str, Any]) -> str | None:
    cell = result.get("cell") or {}
    cfg = result.get("config") if isinstance(result.get("config"), dict) else {}
    return cell.get("preset") or cfg.get("preset")


def run_relpath(result: Mapping[str, Any]) -> str:
    """Where the workflow writes this result, relative to the repository root."""
    preset = preset_of(result) or "<preset>"
    if result.get("submission"):
        return f"results/{preset}/submissions/{result['submission']['name']}.json"
    return f"results/{preset}/runs/{model_key(result['cell'])}.json"


def reproduce_command(result: Mapping[str, Any]) -> str:
    """The command that recomputes this result from scratch, every upstream stage included (for
    a submission: its evaluation, from the submitted model file)."""
    preset = preset_of(result) or "<preset>"
    git = ((result.get("provenance") or {}).get("git") or {})
    lines = []
    rev = git.get("revision")
    if rev and rev != "unknown":
        lines.append(f"git checkout {rev}")
    sub = result.get("submission")
    if sub:
        lines.append(f"python -m benchmark submit {sub.get('directory') or 'submissions/' + sub['name']}"
                     f" --preset presets/{preset}.yaml")
    else:
        lines.append("snakemake --profile workflows/profiles/local --configfile "
                     f"presets/{preset}.yaml --forceall {run_relpath(result)}")
    return "\n".join(lines)


def expand_runs(runs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Result files from folders and files (folders searched recursively), sorted, no duplicates;
    hidden files (atomic-write leftovers) skipped."""
    items = [runs] if isinstance(runs, (str, Path)) else list(runs)
    files: set[Path] = set()
    for item in items:
        p = Path(item)
        if p.is_dir():
            files.update(f for f in p.rglob("*.json") if not f.name.startswith("."))
        elif p.is_file():
            files.add(p)
        else:
            raise FileNotFoundError(f"runs: {p} is neither a result file nor a folder")
    return sorted(files)


__all__ = ["canon_s2ap", "entry_id", "entry_slug", "model_key",
           "slug", "row_key", "result_key", "result_entry_id", "preset_of", "run_relpath", "reproduce_command",
           "expand_runs"]
