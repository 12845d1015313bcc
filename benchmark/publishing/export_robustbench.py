"""Result files as RobustBench model-info JSONs (``model_info/<dataset>/Linf/<key>.json``).

One JSON per model (per result file: RobustBench lists models, and each seed is one), written to
``<out>/<dataset>/Linf/<key>.json`` so that ``<out>`` can be used as RobustBench's ``model_info``
folder. The fields are those of RobustBench's own files:

  link, name, authors, venue        the paper (``paper`` of the method class; S2AP's paper for
                                    entries with S2AP's score step; the adversarial-training paper
                                    for the dense model), see benchmark.core.papers
  additional_data                   false: the suite trains on the dataset's training split only
  number_forward_passes             1
  dataset, architecture             RobustBench's dataset name; a readable architecture name
  eps                               a string: "8/255" when eps is k/255, else as written ("0.031",
                                    with a footnote saying it is not 8/255)
  clean_acc, autoattack_acc         "%.2f" strings, in %
  reported                          the published AP benchmark's AutoAttack accuracy of this method
                                    at this sparsity ("%.2f"), null when there is none
  external                          the lowest robust accuracy of any evaluation we ran on these
                                    images: AutoAttack's (RobustBench sorts on it when present)
  footnote                          what the entry is (method, sparsity, seed, S2AP, eps caveat,
                                    why it is unreliable)
  unreliable                        true when AutoAttack warned or an attack after APGD lowered
                                    APGD's robust accuracy

Only standard AutoAttack on RobustBench's full test set (``RB_TEST_IMAGES``) yields an entry;
anything else raises ``NotExportable`` with the reason, which the site shows. Torch-free.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core.config import canonical_sparsity
from benchmark.core.entries import canon_s2ap, expand_runs, preset_of, result_entry_id, result_key, row_key, slug
from benchmark.core.io import atomic_write_text, replace_dir
from benchmark.core.papers import method_paper, s2ap_paper, training_paper
from benchmark.core.result_file import read_result

THREAT_MODEL = "Linf"
# Our dataset name -> RobustBench's (BenchmarkDataset values), and the images its AutoAttack
# numbers are computed on (the first n of the test set; ImageNet: 5,000 validation images).
RB_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}
RB_TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "imagenet": 5_000}
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
ARCH_NAMES = {"resnet18": "ResNet-18", "resnet50": "ResNet-50", "vgg16_bn": "VGG-16-BN",
              "wrn28_4": "WideResNet-28-4", "vit": "ViT", "small_cnn": "Small CNN"}
S2AP_KEY_TOKENS = {"on": "S2AP", "score": "S2AP-score", "awp": "AWP"}


class NotExportable(ValueError):
    """A result that has no RobustBench entry; ``str(exc)`` is the reason shown to readers."""


def eps_text(eps: float) -> tuple[str, str | None]:
    """(RobustBench's eps string, footnote or None). 8/255 -> "8/255"; 0.031 -> "0.031" with a
    footnote, because it is not 8/255 (0.0314) and must not be mistaken for it."""
    k = eps * 255
    if round(k) > 0 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255", None
    text = f"{eps:g}"
    nearest = round(k)
    note = f"Uses eps = {text} (about {k:.1f}/255)" + (f" instead of {nearest}/255." if nearest else ".")
    return text, note


def _pct(fraction: float) -> str:
    return f"{100.0 * float(fraction):.2f}"


def _aa_problem(result: Mapping[str, Any]) -> str | None:
    dataset = str(result["cell"]["dataset"])
    if dataset not in RB_DATASETS:
        return (f"RobustBench has no leaderboard for dataset {dataset!r} "
                f"(it has {', '.join(sorted(RB_DATASETS))})")
    aa = (result.get("metrics") or {}).get("autoattack")
    if not aa:
        return "no AutoAttack evaluation in this result"
    if str(aa.get("norm", THREAT_MODEL)) != THREAT_MODEL:
        return f"threat model {aa.get('norm')!r}; this export writes L-inf entries only"
    attacks = tuple(aa.get("attacks") or ())
    if aa.get("version") != "standard" or not aa.get("standard", False) or attacks != STANDARD_ATTACKS:
        return (f"AutoAttack was not the standard version (version {aa.get('version')!r}, attacks "
                f"{', '.join(attacks) or 'unknown'}); RobustBench entries need standard AutoAttack")
    need = RB_TEST_IMAGES[dataset]
    if int(aa.get("n", 0)) < need:
        return (f"AutoAttack ran on {int(aa.get('n', 0)):,} of the {need:,} test images RobustBench "
                "evaluates; an entry needs the full test set")
    return None


def _paper(result: Mapping[str, Any], method_files: Iterable[str | Path]) -> tuple[dict, str | None]:
    """(paper, the method paper when the entry's paper is S2AP's: named in the footnote)."""
    cell = result["cell"]
    method, s2ap = str(cell["method"]), canon_s2ap(cell.get("s2ap"))
    submission = result.get("submission")
    if submission:
        paper = submission.get("paper") or {}
        missing = [k for k in ("key", "name", "authors", "venue", "link") if not paper.get(k)]
        if missing:
            raise NotExportable(f"submission {submission['name']!r} states no paper "
                                f"(submission.yaml: paper.{', paper.'.join(missing)})")
        return dict(paper), None
    if method == "dense":
        loss = (((result.get("config") or {}).get("pretrain") or {}).get("train") or {}).get("loss")
        paper = training_paper(loss)
        if paper is None:
            raise NotExportable(f"no paper is known for dense training with loss {loss!r}")
        return paper, None
    try:
        paper = method_paper(method, method_files)
    except KeyError:
        raise NotExportable(f"method {method!r} is not registered here (pass its method file)") from None
    if paper is None:
        raise NotExportable(f"method {method!r} states no paper (class attribute `paper` with "
                            "key, name, authors, venue, link), so its entry has no name")
    if s2ap in ("on", "score"):
        sp = s2ap_paper()
        if sp is None:
            raise NotExportable("the S2AP plug-in states no paper")
        return sp, paper
    return paper, None


def rb_key(result: Mapping[str, Any], paper: Mapping[str, str]) -> str:
    """RobustBench model name: <paper key>_<arch>_sp<sparsity>[_S2AP]_seed<seed>; the part before
    the first '_' is the paper key, as RobustBench's bibtex helper expects."""
    cell = result["cell"]
    parts = [paper["key"], str(cell["arch"])]
    if cell["method"] == "dense":
        parts.append("dense")
    else:
        parts += [str(cell["method"]), f"sp{canonical_sparsity(cell['sparsity'])}"]
        token = S2AP_KEY_TOKENS.get(canon_s2ap(cell.get("s2ap")))
        if token:
            parts.append(token)
    parts.append(f"seed{cell.get('seed')}")
    return "_".join(slug(p).replace("_", "-") for p in parts)


def _unreliable(aa: Mapping[str, Any]) -> list[str]:
    reasons = []
    warnings = [str(w) for w in aa.get("warnings") or []]
    if warnings:
        first_lines = "; ".join(w.strip().splitlines()[0] for w in warnings if w.strip())
        reasons.append("AutoAttack warned: " + first_lines[:300])
    lowered = list(aa.get("lowered_by") or [])
    if lowered or aa.get("lowered_after_apgd"):
        after = aa.get("robust_after") or {}
        apgd = min((v for k, v in after.items() if k.startswith("apgd")), default=None)
        detail = (f" (APGD {100 * apgd:.2f} % -> final {100 * float(aa['acc']):.2f} %)"
                  if apgd is not None and "acc" in aa else "")
        reasons.append(f"{'+'.join(lowered) or 'an attack after APGD'} lowered APGD's robust "
                       f"accuracy{detail}")
    return reasons


def robustbench_entry(result: Mapping[str, Any], *, method_files: Iterable[str | Path] = (),
                      reported: float | None = None) -> tuple[str, dict[str, Any]]:
    """(key, model-info dict) of one result; NotExportable with the reason otherwise.
    ``reported``: the published AutoAttack accuracy (%) of this method and sparsity, if any."""
    problem = _aa_problem(result)
    if problem:
        raise NotExportable(problem)
    cell, metrics = result["cell"], result["metrics"]
    aa = metrics["autoattack"]
    dataset = str(cell["dataset"])
    paper, base_paper = _paper(result, method_files)
    eps = float(result.get("eps", aa.get("eps")))
    eps_str, eps_note = eps_text(eps)
    clean = metrics.get("clean") or {}
    if clean and int(clean.get("n", 0)) >= RB_TEST_IMAGES[dataset]:
        clean_acc = float(clean["acc"])
    elif aa.get("clean_acc") is not None:  # on the AutoAttack images: the full test set here
        clean_acc = float(aa["clean_acc"])
    else:
        flags = result["flags"]["clean"][:int(aa["n"])]
        clean_acc = flags.count("1") / len(flags)
    arch = str(cell["arch"])
    width = float((((result.get("config") or {}).get("evaluate") or {}).get("model") or {}).get("width", 1.0))
    architecture = ARCH_NAMES.get(arch, arch) + ("" if width == 1.0 else f" (width x{width:g})")
    s2ap = canon_s2ap(cell.get("s2ap"))
    notes = []
    sp = result.get("sparsity") or {}
    if result.get("submission"):
        sub = result["submission"]
        notes.append(f"External submission {sub['name']!r} ({sub['method']}) evaluated with the "
                     f"adversarial pruning benchmark's protocol; measured sparsity "
                     f"{sub['measured']['sparsity']:.2f} % (claimed {sub['claims']['sparsity']:g} %).")
    elif cell["method"] == "dense":
        notes.append(f"Dense robustly pretrained {architecture} of the adversarial pruning "
                     f"benchmark (seed {cell.get('seed')}).")
    else:
        measured = sp.get("measured")
        method_name = (base_paper or paper)["name"].split(":")[0]
        notes.append(f"{cell['method']} ({method_name}) pruned to {float(cell['sparsity']):g} % "
                     "sparsity" + (f" (measured {100 * float(measured):.2f} %)" if measured is not None else "")
                     + f", adversarial pruning benchmark entry {result_entry_id(result)}, "
                     f"seed {cell.get('seed')}.")
        if base_paper is not None:
            notes.append(f"S2AP plug-in ({'score step and AWP finetune' if s2ap == 'on' else 'score step only'}) "
                         f"on {base_paper['name']} ({base_paper['link']}).")
        elif s2ap == "awp":
            notes.append("Finetuned with adversarial weight perturbation (AWP) on the kept weights.")
    if eps_note:
        notes.append(eps_note)
    if reported is not None and math.isfinite(float(reported)):
        reported = f"{float(reported):.2f}"
        notes.append("'reported': the published adversarial pruning benchmark's AutoAttack "
                     "accuracy for this method, architecture and sparsity.")
    else:
        reported = None
    unreliable = _unreliable(aa)
    if unreliable:
        notes.append("Unreliable: " + "; ".join(unreliable) + ".")
    aa_acc = _pct(aa["acc"])
    info = {
        "link": paper["link"],
        "name": paper["name"],
        "authors": paper["authors"],
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": RB_DATASETS[dataset],
        "venue": paper["venue"],
        "architecture": architecture,
        "eps": eps_str,
        "clean_acc": _pct(clean_acc),
        "reported": reported,
        "autoattack_acc": aa_acc,
        "external": aa_acc,
        "footnote": " ".join(notes),
        "unreliable": bool(unreliable),
    }
    return rb_key(result, paper), info


def robustbench_status(result: Mapping[str, Any], method_files: Iterable[str | Path] = ()) -> tuple[bool, str]:
    """(exportable?, key or reason) for the site."""
    try:
        key, _ = robustbench_entry(result, method_files=method_files)
    except NotExportable as exc:
        return False, str(exc)
    return True, key


def entry_path(result: Mapping[str, Any], key: str) -> str:
    """Where ``export_robustbench`` writes an entry, relative to its output folder."""
    return f"{RB_DATASETS[str(result['cell']['dataset'])]}/{THREAT_MODEL}/{key}.json"


def reported_lookup(files: list[Path], reference_csv: str | Path | None) -> dict[tuple, float]:
    """Published AutoAttack accuracy per leaderboard row (``row_key``), matched by the
    aggregation's own rule (original methods only: no dense model, no S2AP)."""
    if reference_csv is None or not files:
        return {}
    from benchmark.results.aggregate import build_tables  # deferred: pandas

    # one leaderboard per preset: the aggregation never pools results of different protocols
    by_preset: dict[str | None, list[Path]] = {}
    for path in files:
        by_preset.setdefault(preset_of(read_result(path)), []).append(path)
    out: dict[tuple, float] = {}
    for group in by_preset.values():
        table, _, _ = build_tables(group, reference_csv)
        if "ref_autoattack" not in table.columns:
            continue
        out.update({row_key(r): float(r["ref_autoattack"]) for r in table.to_dict("records")
                    if r.get("ref_autoattack") is not None and math.isfinite(float(r["ref_autoattack"]))})
    return out


@dataclass
class ExportSummary:
    written: list[tuple[Path, Path]] = field(default_factory=list)   # (result file, entry file)
    skipped: list[tuple[Path, str]] = field(default_factory=list)    # (result file, reason)


def export_robustbench(runs: Any, out_dir: str | Path, *, method_files: Iterable[str | Path] = (),
                       reference_csv: str | Path | None = None) -> ExportSummary:
    """Writes one model-info JSON per exportable result under ``out_dir/<dataset>/Linf/``; the
    folder is replaced as a whole, so an entry that is no longer exportable disappears."""
    out_dir = Path(out_dir)
    files = expand_runs(runs)
    reported = reported_lookup(files, reference_csv)
    method_files = list(method_files)
    summary = ExportSummary()
    entries: dict[str, tuple[Path, dict]] = {}
    for path in files:
        result = read_result(path)
        try:
            key, info = robustbench_entry(result, method_files=method_files,
                                          reported=reported.get(result_key(result)))
        except NotExportable as exc:
            summary.skipped.append((path, str(exc)))
            continue
        rel = entry_path(result, key)
        if rel in entries:
            raise ValueError(f"two results export to the same RobustBench entry {rel}: "
                             f"{entries[rel][0]} and {path}")
        entries[rel] = (path, info)

    def build(tmp: Path) -> None:
        for rel, (path, info) in sorted(entries.items()):
            atomic_write_text(tmp / rel, json.dumps(info, indent=2) + "\n")
            summary.written.append((path, out_dir / rel))

    replace_dir(out_dir, build)
    return summary


__all__ = ["NotExportable", "RB_DATASETS", "RB_TEST_IMAGES", "eps_text", "robustbench_entry",
           "robustbench_status", "entry_path", "export_robustbench", "ExportSummary", "rb_key",
           "reported_lookup"]
