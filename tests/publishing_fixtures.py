"""Result files for the publishing tests (site, RobustBench export, model export), shaped like
the records benchmark.stages.evaluate writes. The test files import it from its path (pytest runs
with --import-mode=importlib and tests/ is not a package, so it is not on sys.path)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]


def flags(correct: int, n: int) -> str:
    return "1" * correct + "0" * (n - correct)


def result_record(*, dataset: str = "cifar10", arch: str = "resnet18", method: str = "hydra",
                  s2ap: str = "off", sparsity: float = 90, seed: int = 0, clean: int = 8512,
                  clean_n: int = 10_000, aa: int = 4100, aa_n: int = 10_000, pgd: int = 450,
                  pgd_n: int = 1000, eps: float = 0.031, version: str = "standard",
                  attacks: list | None = None, warnings: list | None = None,
                  lowered_by: list | None = None, config_hash: str | None = None,
                  preset: str = "fixture", revision: str = "0123456789abcdef0123456789abcdef01234567",
                  dirty: bool = False, loss: str = "pgd_at", diagnostics: dict | None = None,
                  no_autoattack: bool = False) -> dict[str, Any]:
    attacks = list(STANDARD if attacks is None else attacks)
    lowered_by = list(lowered_by or [])
    chash = config_hash or hashlib.sha256(
        repr((dataset, arch, method, s2ap, float(sparsity), eps, aa_n, version)).encode()).hexdigest()[:10]
    train = {"epochs": 2, "lr": 0.1, "loss": loss, "batch_size": 128, "schedule": "cosine",
             "weight_decay": 5e-4, "attack": {"eps": eps, "steps": 10, "step_size": eps / 4}}
    data = {"train_subset": None, "val_size": 1000, "batch_size": 128}
    config = {
        "pretrain": {"data": data, "model": {"width": 1.0}, "train": train, "runtime": {}},
        "evaluate": {"data": data, "model": {"width": 1.0}, "runtime": {},
                     "evaluate": {"eps": eps, "pgd_steps": 50, "pgd_n": pgd_n,
                                  "autoattack": {"version": version, "n_images": aa_n, "seed": 0}}},
    }
    if method != "dense":
        config["prune"] = {"data": data, "model": {"width": 1.0}, "train": train,
                           "method": {"name": method, "options": {}}, "runtime": {},
                           "s2ap": {"gamma": 0.01} if s2ap in ("on", "score") else None}
        config["finetune"] = {"data": data, "model": {"width": 1.0}, "train": train,
                              "method": {"name": method, "options": {}}, "runtime": {},
                              "awp": {"gamma": 0.01} if s2ap in ("on", "awp") else None}
    aa_acc = aa / aa_n
    robust_after = {a: aa_acc for a in attacks}
    if lowered_by:
        robust_after["apgd-ce"] = robust_after["apgd-t"] = aa_acc + 0.01
    metrics = {
        "clean": {"acc": clean / clean_n, "correct": clean, "n": clean_n},
        "pgd": {"acc": pgd / pgd_n, "correct": pgd, "n": pgd_n, "steps": 50, "eps": eps},
        "autoattack": {"acc": aa_acc, "correct": aa, "n": aa_n, "eps": eps, "norm": "Linf",
                       "version": version, "attacks": attacks,
                       "standard": version == "standard" and attacks == STANDARD,
                       "warnings": list(warnings or []), "lowered_by": lowered_by,
                       "lowered_after_apgd": bool(lowered_by), "robust_after": robust_after,
                       "clean_acc": clean / clean_n, "seconds": 12.0, "seed": 0},
    }
    record_flags = {"clean": flags(clean, clean_n), "pgd": flags(pgd, pgd_n),
                    "autoattack": flags(aa, aa_n)}
    if no_autoattack:
        metrics["autoattack"] = None
        record_flags.pop("autoattack")
    cell = {"dataset": dataset, "arch": arch, "method": method,
            "s2ap": "n/a" if method == "dense" else s2ap, "sparsity": sparsity, "seed": seed,
            "preset": preset, "config_hash": chash, "pretrain_recipe": "abcdef0123"}
    return {
        "schema_version": 1, "cell": cell, "config": config, "config_hash": chash, "eps": eps,
        "sparsity": {"nominal": sparsity / 100, "measured": sparsity / 100, "kept": 10, "total": 100,
                     "layers": {"conv1": sparsity / 100}},
        "metrics": metrics, "flags": record_flags,
        "timing": {"pretrain_s": 1.0, "prune_s": 2.0, "finetune_s": 3.0, "evaluate_s": 4.0},
        "diagnostics": dict(diagnostics or {}),
        "history": {"train": [], "search": []},
        "provenance": {"packages": {"torch": "2.14.1", "pyautoattack": "0.2.0"}, "python": "3.11.7",
                       "git": {"revision": revision, "dirty": dirty}, "platform": "Linux",
                       "device": {"cuda_available": False}, "time_utc": "2026-01-01T00:00:00+00:00"},
    }


def result_path(root: Path, record: dict) -> Path:
    c = record["cell"]
    s2ap = "n-a" if c["s2ap"] == "n/a" else c["s2ap"]
    return Path(root) / c["dataset"] / c["arch"] / c["method"] / s2ap / f"sp{c['sparsity']:g}" / f"seed{c['seed']}.json"


def write_result(root: Path, **kw) -> Path:
    record = result_record(**kw)
    path = result_path(root, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return path

