"""The calibration file: measured seconds per training step and per evaluated image, per
architecture, input shape, width, device and precision. ``python -m benchmark estimate`` turns a
preset into compute time with it; ``speed/calibrate.py`` measures the CPU entries, the GPU speed
script the CUDA ones. The file ships with the package (``calibration/calibration.json``).

Format (version 1)::

    {"format": "apbench-calibration", "version": 1, "entries": [
      {"device": "cpu" | "cuda", "device_name": "...", "threads": int | null,
       "arch": "resnet18", "input_shape": [3, 32, 32], "num_classes": 10, "width": 1.0,
       "batch_size": 128, "precision": "fp32" | "bf16",
       "seconds": {"pretrain_step": s, "search_step": s, "search_step_s2ap": s,
                   "finetune_step": s, "finetune_step_awp": s,
                   "pgd_image": s, "clean_image": s, "autoattack_image": s},
       "measured": "YYYY-MM-DD", "command": "..."}]}

- steps are PGD-AT training steps with a 10-step L-inf attack at the entry's ``batch_size``
  (TRADES costs the same order: one more forward/backward per step, which the estimate adds);
  ``search_step`` is a HYDRA mask-search step, ``search_step_s2ap`` the same with S2AP's
  score-space step, ``finetune_step`` a masked finetune step, ``finetune_step_awp`` with AWP;
- ``pgd_image``: PGD-50 per image; ``clean_image``: one forward pass per image;
- ``autoattack_image``: AutoAttack standard per image on an image no attack breaks, i.e. every
  attack spends its whole budget, as on an image of a robust model that stays robust (an upper
  bound per image: images broken early cost less); ``autoattack_image_apgd_ce`` (optional) the
  part of it APGD-CE, the first attack, spends: what an image it breaks costs;
- ``job_start`` (optional): a job's start-up (imports in a fresh process).

A calibration is looked up for exactly the job's architecture, input shape, device and precision;
a width that was not measured is scaled from two measured widths of the same architecture
(``Calibration.find``: per-image cost a + b * width^2, convolutions' cost growing with the square
of the width, fitted through the two nearest measurements).

Torch-free; reading validates the file and names what is wrong.
"""
from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from benchmark.core.errors import CorruptFileError
from benchmark.core.io import atomic_write_text
from benchmark.core.paths import PACKAGE_DIR

FORMAT = "apbench-calibration"
VERSION = 1
CALIBRATION_FILE = PACKAGE_DIR / "calibration" / "calibration.json"
SECONDS = ("pretrain_step", "search_step", "search_step_s2ap", "finetune_step",
           "finetune_step_awp", "pgd_image", "clean_image", "autoattack_image")
# figures newer measurements add (older entries lack them; the estimate then falls back):
#   autoattack_image_apgd_ce  APGD-CE's share of autoattack_image: what an image the first attack
#                             breaks costs (the later attacks run on the images still robust only)
#   job_start                 seconds a job spends before its first step: interpreter, torch and
#                             the suite's imports, reading the dataset (a fresh process)
OPTIONAL_SECONDS = ("autoattack_image_apgd_ce", "job_start")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
ENTRY_KEYS = ("device", "device_name", "threads", "arch", "input_shape", "num_classes", "width",
              "batch_size", "precision", "seconds", "measured", "command")
# the calibration's attack: 10 PGD steps per training step
STEP_ATTACK_STEPS = 10
# pgd_image's attack
PGD_IMAGE_STEPS = 50


class CalibrationError(CorruptFileError):
    """A calibration file that breaks the format; the message names the entry and the field."""


def entry_problems(entry: Any, where: str = "entry") -> list[str]:
    if not isinstance(entry, Mapping):
        return [f"{where}: not an object"]
    problems = []
    missing = [k for k in ENTRY_KEYS if k not in entry]
    extra = [k for k in entry if k not in ENTRY_KEYS]
    if missing:
        problems.append(f"{where}: missing {missing}")
    if extra:
        problems.append(f"{where}: unknown field(s) {extra}")
    if missing:
        return problems
    if entry["device"] not in DEVICES:
        problems.append(f"{where}.device: {entry['device']!r}, expected one of {DEVICES}")
    if entry["precision"] not in PRECISIONS:
        problems.append(f"{where}.precision: {entry['precision']!r}, expected one of {PRECISIONS}")
    if entry["threads"] is not None and (not isinstance(entry["threads"], int) or entry["threads"] < 1):
        problems.append(f"{where}.threads: {entry['threads']!r}, expected a positive integer or null")
    shape = entry["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        problems.append(f"{where}.input_shape: {shape!r}, expected [channels, height, width]")
    for key in ("num_classes", "batch_size"):
        if not isinstance(entry[key], int) or entry[key] < 1:
            problems.append(f"{where}.{key}: {entry[key]!r}, expected a positive integer")
    if not isinstance(entry["width"], (int, float)) or entry["width"] <= 0:
        problems.append(f"{where}.width: {entry['width']!r}, expected a positive number")
    secs = entry["seconds"]
    if not isinstance(secs, Mapping):
        problems.append(f"{where}.seconds: not an object")
    else:
        absent = [k for k in SECONDS if k not in secs]
        unknown = [k for k in secs if k not in SECONDS + OPTIONAL_SECONDS]
        if absent:
            problems.append(f"{where}.seconds: missing {absent}")
        if unknown:
            problems.append(f"{where}.seconds: unknown {unknown}")
        bad = [k for k in SECONDS + OPTIONAL_SECONDS if k in secs and not (isinstance(secs[k], (int, float))
                                                        and math.isfinite(secs[k]) and secs[k] >= 0)]
        if bad:
            problems.append(f"{where}.seconds: {bad} are not non-negative numbers")
    for key in ("device_name", "measured", "command", "arch"):
        if not isinstance(entry[key], str) or not entry[key]:
            problems.append(f"{where}.{key}: expected a non-empty string")
    return problems


def problems(obj: Any) -> list[str]:
    """Every way ``obj`` breaks the format (empty: a valid calibration)."""
    if not isinstance(obj, Mapping):
        return ["the calibration is not a JSON object"]
    out = []
    if obj.get("format") != FORMAT:
        out.append(f"format: {obj.get('format')!r}, expected {FORMAT!r}")
    if obj.get("version") != VERSION:
        out.append(f"version: {obj.get('version')!r}, this suite reads version {VERSION}")
    entries = obj.get("entries")
    if not isinstance(entries, list):
        return out + ["entries: expected a list"]
    for i, entry in enumerate(entries):
        out += entry_problems(entry, f"entries[{i}]")
    return out


def cpu_name() -> str:
    """A CPU entry's ``device_name``: the processor's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def key(entry: Mapping[str, Any]) -> tuple:
    """What one entry measures: a newer measurement of the same key replaces it."""
    return (entry["device"], entry["device_name"], entry["arch"], tuple(entry["input_shape"]),
            entry["num_classes"], float(entry["width"]), entry["batch_size"], entry["precision"])


class Calibration:
    """The entries of a calibration file, looked up by what a job runs."""

    def __init__(self, entries: Iterable[Mapping[str, Any]], source: str | Path = "<memory>"):
        self.entries = [dict(e) for e in entries]
        self.source = str(source)

    def find(self, *, device: str, arch: str, input_shape: Iterable[int], num_classes: int,
             width: float, precision: str = "fp32") -> dict[str, Any] | None:
        """The newest entry for exactly this architecture, input shape, width, device and
        precision; for a width not measured, one scaled from two measured widths of the same
        architecture (``scale_width``); None when fewer were measured (never another
        architecture's or device's figure)."""
        shape = list(input_shape)
        same = [e for e in self.entries
                if e["device"] == device and e["arch"] == arch and list(e["input_shape"]) == shape
                and e["num_classes"] == num_classes and precision == e["precision"]]
        found = [e for e in same if math.isclose(float(e["width"]), float(width), rel_tol=1e-9)]
        if found:
            return max(found, key=lambda e: e["measured"])
        newest: dict[float, dict[str, Any]] = {}
        for e in sorted(same, key=lambda e: e["measured"]):
            newest[float(e["width"])] = e
        if len(newest) < 2:
            return None
        near = sorted(newest, key=lambda w: abs(math.log(w / float(width))))[:2]
        return scale_width(newest[near[0]], newest[near[1]], float(width))

    def devices(self) -> list[str]:
        return sorted({e["device"] for e in self.entries})


def scale_width(a: Mapping[str, Any], b: Mapping[str, Any], width: float) -> dict[str, Any]:
    """An entry for ``width`` from measurements at two other widths of one architecture: every
    figure per image (steps divided by their batch size) fitted as c + k * width^2 (c, k >= 0),
    steps given back at the batch size of the nearer entry. ``scaled_from`` names the widths."""
    near = a
    wa, wb = float(a["width"]), float(b["width"])
    out = dict(near)
    secs = {}
    for name in set(a["seconds"]) & set(b["seconds"]):
        per_batch = name.endswith("_step")
        ya = a["seconds"][name] / (a["batch_size"] if per_batch else 1)
        yb = b["seconds"][name] / (b["batch_size"] if per_batch else 1)
        if name == "job_start":
            y = max(ya, yb)  # start-up does not grow with the model
        else:
            k = max((yb - ya) / (wb ** 2 - wa ** 2), 0.0)
            c = max(ya - k * wa ** 2, 0.0)
            y = c + k * width ** 2
        secs[name] = y * (near["batch_size"] if per_batch else 1)
    out.update(width=float(width), seconds=secs, scaled_from=sorted([wa, wb]))
    return out


def read(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else CALIBRATION_FILE
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"calibration file {path} cannot be read: {exc}") from exc
    found = problems(obj)
    if found:
        raise CalibrationError(f"calibration file {path} breaks the format:\n"
                               + "\n".join(f"  {p}" for p in found))
    return obj


def load(path: str | Path | None = None) -> Calibration:
    """The calibration shipped with the package, or the file given."""
    path = Path(path) if path is not None else CALIBRATION_FILE
    return Calibration(read(path)["entries"], path)


def merge(path: str | Path, new_entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Writes ``new_entries`` into the file (created if absent), each replacing an entry of the
    same key; atomically, and only a valid result."""

    path = Path(path)
    obj = read(path) if path.is_file() else {"format": FORMAT, "version": VERSION, "entries": []}
    new = [dict(e) for e in new_entries]
    found = [p for i, e in enumerate(new) for p in entry_problems(e, f"new entry {i}")]
    if found:
        raise CalibrationError("refusing to write a calibration that breaks the format:\n"
                               + "\n".join(f"  {p}" for p in found))
    keys = {key(e) for e in new}
    entries = [e for e in obj["entries"] if key(e) not in keys] + new
    entries.sort(key=lambda e: (e["device"], e["arch"], tuple(e["input_shape"]), float(e["width"]),
                                e["precision"], e["batch_size"]))
    out = {"format": FORMAT, "version": VERSION, "entries": entries}
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return out


__all__ = ["CALIBRATION_FILE", "Calibration", "CalibrationError", "FORMAT", "SECONDS",
           "OPTIONAL_SECONDS", "VERSION", "scale_width",
           "cpu_name", "entry_problems", "key", "load", "merge", "problems", "read"]
