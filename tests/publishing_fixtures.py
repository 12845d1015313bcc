"""Result files for the publishing tests (site, RobustBench export, model export, publish),
built by the suite's own writer (benchmark.core.result_file.build_record / write_result) from a real
evaluate_model run, as tests/test_aggregate.py builds its fixtures: the model gets every image
wrong, so no attack runs and it takes milliseconds, and the counts and per-image flags are then
set to the values a test asks for (consistently: every image robust to an attack is clean-correct,
and PGD keeps every image AutoAttack keeps unless a test asks otherwise). The test files import
it from its path (pytest runs with --import-mode=importlib and tests/ is not a package)."""
from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from benchmark.core import masking
from benchmark.core import result_file as results
from benchmark.core.provenance import code_scope, provenance, stage_code_digest
from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval

STANDARD = ["apgd-ce", "apgd-t", "fab-t", "square"]
REVISION = "0123456789abcdef0123456789abcdef01234567"


class AlwaysWrong(nn.Module):
    """Predicts class 0 for labels that are all 1: nothing to attack, so evaluation is instant."""

    def forward(self, x):
        # logits, not probabilities: AutoAttack's output check would warn
        return 5.0 * torch.nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 10) - 2.0


@functools.cache
def _evaluation(clean_n: int, pgd_n: int, aa_n: int | None, eps: float, attacks: tuple | None,
                version: str) -> tuple[dict, dict]:
    """(the evaluate config, evaluate_model's output) for these image counts."""
    total = max(clean_n, pgd_n, aa_n or 0)
    x = torch.rand(total, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.ones(total, dtype=torch.long)
    aa = None if aa_n is None else {"n_images": aa_n, "version": version,
                                    "attacks": None if attacks is None else list(attacks),
                                    "batch_size": 250, "shard_size": None, "seed": 0}
    ecfg = {"eps": eps, "pgd_steps": 50, "pgd_step_size": None, "pgd_seed": 0,
            "clean_n": clean_n, "pgd_n": pgd_n, "batch_size": 256, "autoattack": aa}
    return ecfg, evaluate_model(prepare_for_eval(AlwaysWrong()), (x, y), ecfg, progress=False)


@functools.cache
def _sparsity(percent: float) -> dict:
    """measure_sparsity of a layer pruned by magnitude to ``percent`` (no mask for 0)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(100, 10))
    if not percent:
        return masking.measure_sparsity(net)
    mask = masking.topk_mask(net[0].weight, 1 - percent / 100).bool()
    net[0].weight.data *= mask
    return masking.measure_sparsity(net, {"0": mask}, "weight")


@functools.lru_cache(maxsize=16)
def _provenance(method: str | None = None, s2ap: str | None = None) -> dict:
    return provenance(method=method, s2ap=s2ap)


@functools.lru_cache(maxsize=16)
def _digest(method: str | None, s2ap: str | None) -> str:
    return stage_code_digest(method=method, s2ap=s2ap)


def stage_records(method: str, s2ap: str, revision: str, dirty: bool | None,
                  stage_code: str | None = None) -> dict[str, dict]:
    """Per-stage provenance as benchmark.training.stages records it: pretrain in the shared scope, the
    others in the row's; ``stage_code`` (a stale evaluation) replaces the evaluate stage's."""
    names = ["pretrain", "evaluate"] if method == "dense" else ["pretrain", "prune", "finetune",
                                                                "evaluate"]
    out = {}
    for stage in names:
        scope = (None, None) if stage == "pretrain" else (method, s2ap)
        out[stage] = {"revision": revision, "dirty": dirty, "dirty_files": [],
                      "stage_code": _digest(*scope), "scope": code_scope(*scope)}
    if stage_code is not None:
        out["evaluate"]["stage_code"] = stage_code
    return out


def flags(correct: int, n: int) -> str:
    return "1" * correct + "0" * (n - correct)


def _consistent_flags(clean: int, clean_n: int, pgd: int, pgd_n: int, aa: int | None,
                      aa_n: int | None, broken: int = 0) -> dict[str, str | None]:
    """Flags with the requested counts where AutoAttack's robust images are PGD-robust on the
    images both attacked (as far as the counts allow; ``broken`` of them are not) and every
    robust image is clean-correct."""
    pgd_f = ["1"] * pgd + ["0"] * (pgd_n - pgd)
    aa_f = None
    if aa is not None:
        aa_f = ["0"] * aa_n
        overlap = min(pgd_n, aa_n)
        inside = min(aa, pgd, overlap)
        for i in range(inside):
            aa_f[i] = "1"
        left = aa - inside
        # the rest beyond PGD's images first, then (only if the counts force it) on images PGD broke
        for i in list(range(overlap, aa_n)) + list(range(inside, overlap)):
            if not left:
                break
            if aa_f[i] == "0":
                aa_f[i], left = "1", left - 1
        if broken:
            # move `broken` of AutoAttack's robust images onto images PGD broke
            targets = [i for i in range(overlap) if pgd_f[i] == "0" and aa_f[i] == "0"][:broken]
            donors = [i for i in reversed(range(aa_n)) if aa_f[i] == "1"][:broken]
            assert len(targets) == len(donors) == broken, "the counts leave no room for that"
            for i, j in zip(targets, donors):
                aa_f[j], aa_f[i] = "0", "1"
    clean_f = ["0"] * clean_n
    for f in (pgd_f, aa_f or []):
        for i, c in enumerate(f):
            if c == "1":
                clean_f[i] = "1"
    need = clean - clean_f.count("1")
    assert need >= 0, "the fixture asks for more robust images than clean-correct ones"
    for i, c in enumerate(clean_f):
        if need and c == "0":
            clean_f[i], need = "1", need - 1
    return {"clean": "".join(clean_f), "pgd": "".join(pgd_f),
            "autoattack": None if aa_f is None else "".join(aa_f)}


def result_record(*, dataset: str = "cifar10", arch: str = "resnet18", method: str = "hydra",
                  s2ap: str = "off", sparsity: float = 90, seed: int = 0, clean: int = 8512,
                  clean_n: int = 10_000, aa: int = 4100, aa_n: int = 10_000, pgd: int = 450,
                  pgd_n: int = 1000, eps: float = 0.031, version: str = "standard",
                  attacks: list | None = None, warnings: list | None = None,
                  lowered_by: list | None = None, config_hash: str | None = None,
                  preset: str = "fixture", revision: str = REVISION, dirty: bool | None = False,
                  loss: str = "pgd_at", diagnostics: dict | None = None,
                  no_autoattack: bool = False, stage_code: str | None = None,
                  model_file: str | Path | None = None, pgd_broke: int = 0,
                  stage_configs: dict[str, Any] | None = None,
                  stages: dict[str, dict] | None = None) -> dict[str, Any]:
    """A validated result record (benchmark.core.result_file.build_record) with these numbers."""
    if attacks is not None and list(attacks) == STANDARD:
        attacks = None
    aa_n_eff = None if no_autoattack else aa_n
    ecfg, ev = copy.deepcopy(_evaluation(clean_n, pgd_n, aa_n_eff, eps,
                                         None if attacks is None else tuple(attacks), version))
    f = _consistent_flags(clean, clean_n, pgd, pgd_n, None if no_autoattack else aa, aa_n_eff,
                          pgd_broke)
    for name, value in f.items():
        if value is None:
            continue
        m = ev["metrics"][name]
        m["correct"], m["acc"] = value.count("1"), value.count("1") / len(value)
        ev["flags"][name] = value
    if not no_autoattack:
        m = ev["metrics"]["autoattack"]
        lowered_by = list(lowered_by or [])
        robust_after = {a: m["acc"] for a in m["attacks"]}
        for a in robust_after:
            if lowered_by and a.startswith("apgd"):
                robust_after[a] = min(1.0, m["acc"] + 0.01)
        m.update(warnings=list(warnings or []), lowered_by=lowered_by,
                 lowered_after_apgd=bool(lowered_by), robust_after=robust_after,
                 clean_acc=f["clean"][:aa_n].count("1") / aa_n, seconds=12.0)
    chash = config_hash or hashlib.sha256(
        repr((dataset, arch, method, s2ap, float(sparsity), eps, aa_n, version, preset)).encode()
    ).hexdigest()[:10]
    train = {"epochs": 2, "lr": 0.1, "loss": loss, "batch_size": 128, "schedule": "cosine",
             "weight_decay": 5e-4, "attack": {"eps": eps, "steps": 10, "step_size": eps / 4}}
    data = {"train_subset": None, "val_size": 1000, "batch_size": 128}
    configs: dict[str, Any] = {
        "pretrain": {"data": data, "model": {"width": 1.0}, "train": train, "runtime": {}},
        "evaluate": {"data": data, "model": {"width": 1.0}, "runtime": {}, "evaluate": ecfg},
    }
    if method != "dense":
        configs["prune"] = {"data": data, "model": {"width": 1.0}, "train": train,
                            "method": {"name": method, "options": {}}, "runtime": {},
                            "s2ap": {"gamma": 0.01} if s2ap in ("on", "score") else None}
        configs["finetune"] = {"data": data, "model": {"width": 1.0}, "train": train,
                               "method": {"name": method, "options": {}}, "runtime": {},
                               "awp": {"gamma": 0.01} if s2ap in ("on", "awp") else None}
    if method != "dense" and stage_configs:  # the configs a preset gives this cell's stages
        configs.update(stage_configs)
    cell = {"dataset": dataset, "arch": arch, "method": method,
            "s2ap": "n/a" if method == "dense" else s2ap,
            "sparsity": 0.0 if method == "dense" else float(sparsity), "seed": seed,
            "preset": preset, "config_hash": chash, "pretrain_recipe": "abcdef0123"}
    prov = copy.deepcopy(_provenance(cell["method"], cell["s2ap"]))
    prov["git"] = {"revision": revision, "dirty": dirty, "dirty_files": ["x.py"] if dirty else []}
    if stage_code is not None:
        prov["stage_code"] = stage_code
    prov["stages"] = stages if stages is not None else stage_records(
        cell["method"], cell["s2ap"], revision, dirty, stage_code)
    model = None
    if model_file is not None:
        model = {"path": str(model_file), "sha256": results_sha256(model_file)}
    record = results.build_record(
        cell=cell, structure="unstructured", configs=configs, evaluation=ev,
        sparsity=_sparsity(0.0 if method == "dense" else float(sparsity)),
        timing={"pretrain_s": 1.0, "prune_s": 2.0, "finetune_s": 3.0, "evaluate_s": 4.0},
        diagnostics=dict(diagnostics or {}), history={"train": [], "search": []},
        provenance=prov, config_hash=chash, model=model)
    return results.validate_record(record)


def results_sha256(path: str | Path) -> str:
    from benchmark.core.io import sha256_file

    return sha256_file(path)


def result_path(root: Path, record: dict) -> Path:
    c = record["cell"]
    s2ap = "n-a" if c["s2ap"] == "n/a" else c["s2ap"]
    return Path(root) / c["dataset"] / c["arch"] / c["method"] / s2ap / f"sp{c['sparsity']:g}" / f"seed{c['seed']}.json"


def write_result(root: Path, **kw) -> Path:
    record = result_record(**kw)
    path = result_path(root, record)
    results.write_result(path, record)
    return path
