"""The four stages of a grid cell, each a function of its own stage config (docs/design.md).

Long because the four stages share their set-up (device, data, StageTraining, metadata), and each
stage is a short function of it.

pretrain  dense robust training                          -> dense.pt  (plain state_dict + meta)
prune     mask search with learned scores (or a fixed rule) -> search.pt (masked state_dict, masks)
finetune  robust training of the kept weights               -> model.pt  (plain state_dict, masks)
evaluate  clean / PGD / AutoAttack of the exported model    -> result JSON
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from benchmark.core import masking
from benchmark.core import result_file as results
from benchmark.core.datasets import build_splits, get_info, majority_share
from benchmark.core.errors import CheckpointError, ConfigError, MachineError
from benchmark.core.io import (
    atomic_torch_save,
    atomic_write_json,
    load_checkpoint,
    load_state_dict_checked,
    read_json,
    sha256_file,
)
from benchmark.core.models import build_model
from benchmark.core.paths import REPO_ROOT
from benchmark.core.provenance import provenance, stage_record
from benchmark.core.registry import method_registry
from benchmark.evaluation.attacks import AttackConfig
from benchmark.evaluation.protocol import autoattack_shards, evaluate_model, prepare_for_eval, stage_config
from benchmark.runtime.threads import job_threads
from benchmark.training.diagnostics import mask_agreement, search_diagnostics
from benchmark.training.loop import TrainConfig, Trainer, TrainHook, validate
from benchmark.training.losses import RobustLoss
from benchmark.training.score_init import ScoreInitContext, TrainBatches

S2AP_SEARCH = ("on", "score")
S2AP_FINETUNE = ("on", "awp")
S2AP_VALUES = ("off", "on", "score", "awp", "n/a")


# ---------------------------------------------------------------- shared set-up
_CODE_DIGEST: str | None = None


def code_digest() -> str:
    """Hash of the library's and the methods' source. Part of every resume fingerprint: a
    checkpoint written by other code is not continued (it would mix two versions in one result)."""
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        root = REPO_ROOT
        h = hashlib.sha256()
        for path in sorted([*root.glob("benchmark/**/*.py"), *root.glob("methods/*.py")]):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        _CODE_DIGEST = h.hexdigest()[:16]
    return _CODE_DIGEST


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([code_digest(), *parts], sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def resolve_device(runtime: dict) -> torch.device:
    name = (runtime or {}).get("device", "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MachineError(f"runtime.device is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


def apply_runtime(runtime: dict) -> torch.device:
    # the preset's thread count, whatever the scheduler granted: it is part of the arithmetic
    # (benchmark/runtime/threads.py)

    threads = job_threads(runtime)
    if threads:
        torch.set_num_threads(threads)
    return resolve_device(runtime)


def dataset_info(name: str):

    return get_info(name)


def load_splits(dataset: str, data: dict, *, augment: bool | None = None):

    return build_splits(
        dataset, data.get("root", "data"),
        val_size=int(data.get("val_size", 1000)),
        train_subset=data.get("train_subset"),
        test_subset=data.get("test_subset"),
        seed=int(data.get("split_seed", 0)),
        augment=data.get("augment", True) if augment is None else augment,
        download=bool(data.get("download", False)),
        imagenet_root=data.get("imagenet_root"),
        imagenet_test=data.get("imagenet_test", "robustbench"),
        synthetic=bool(data.get("synthetic", False)),
    )


def build_plain_model(arch: str, info, model_cfg: dict) -> nn.Module:

    return build_model(arch, info, width=float((model_cfg or {}).get("width", 1.0)))


def default_attack(info) -> AttackConfig:
    return AttackConfig(eps=info.eps, steps=info.steps, step_size=info.step_size)


def train_config(cfg: dict, info) -> TrainConfig:
    return TrainConfig.from_dict(cfg["train"], default_attack(info))


def load_method(name: str, sparsity: float, method_cfg: dict, method_files=()):
    cls = method_registry(method_files).get(name)
    return cls(sparsity / 100.0, (method_cfg or {}).get("options"))


@dataclass(frozen=True)
class StageTraining:
    """What a stage's training loop needs besides the model, its parameters and hooks; built once
    per stage (``for_stage``), so the search's score initialisation and its Trainer see the same
    data, seed and device."""

    name: str  # pretrain | prune | finetune: the log prefix and the resume checkpoint's file name
    train: TrainConfig
    train_set: Dataset
    val_set: Dataset | None
    device: torch.device
    seed: int
    fingerprint: str  # a resume checkpoint is continued only when it carries the same one
    state_dir: Path | None = None
    num_workers: int = 0
    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def for_stage(cls, name: str, cfg: dict, *, train: TrainConfig, splits: Sequence[Dataset],
                  device: torch.device, seed: int, fingerprint: str,
                  state_dir: str | Path | None) -> StageTraining:
        data, runtime = cfg.get("data", {}), cfg.get("runtime", {}) or {}
        return cls(name=name, train=train, train_set=splits[0], val_set=splits[1], device=device,
                   seed=seed, fingerprint=fingerprint, state_dir=Path(state_dir) if state_dir else None,
                   num_workers=int(data.get("num_workers", 0)), bf16=bool(runtime.get("bf16", False)),
                   channels_last=bool(runtime.get("channels_last", False)))

    def layout(self, model: nn.Module) -> nn.Module:
        """The model in the memory layout of the trainer's inputs: channels-last on CUDA when
        runtime.channels_last is set. Every training stage needs it, not the pretraining alone: a
        convolution whose weight is laid out otherwise than its input converts the weight on every
        call (a mask search's folded weight included: 373 extra copies in a ResNet18 bf16 step,
        docs/gpu_speed.md). The values are the same either way."""
        if self.channels_last and self.device.type == "cuda":
            return model.to(memory_format=torch.channels_last)
        return model

    def trainer(self, model: nn.Module, params, hooks: Sequence[TrainHook] = ()) -> Trainer:
        return Trainer(model, params, self.train, train_set=self.train_set, val_set=self.val_set,
                       device=self.device, seed=self.seed,
                       state_path=self.state_dir / f"{self.name}.pt" if self.state_dir else None,
                       hooks=hooks, num_workers=self.num_workers, bf16=self.bf16,
                       channels_last=self.channels_last, desc=self.name, fingerprint=self.fingerprint)

    def score_init_context(self, generator: torch.Generator) -> ScoreInitContext:
        """The search's data for ``init_scores``: training batches in the order of this stage's
        seed, the robust loss the search trains with, the device."""
        t = self.train
        return ScoreInitContext(
            generator=generator, device=self.device,
            batches=TrainBatches(self.train_set, t.batch_size, self.seed, self.device),
            robust_loss=RobustLoss(t.loss, t.attack, trades_beta=t.trades_beta, adv_eval_mode=t.adv_eval_mode))


def _meta(cfg: dict, stage: str, upstream: dict | None = None, *, method_files=(), **extra) -> dict:
    """Stage metadata; ``configs`` accumulates every upstream stage's config, so the final result
    records the whole recipe that produced it; ``threads`` the CPU threads each stage ran on (a
    thread count changes the last bits of a CPU run, never its hash); ``stage_provenance`` the
    revision and stage code of each stage (publishing refuses a model an older stage made)."""

    configs = dict((upstream or {}).get("configs", {}))
    configs[stage] = cfg
    threads = {**(upstream or {}).get("threads", {}), stage: torch.get_num_threads()}
    method_files = [str(f) for f in method_files]  # as the workflow names them (no machine paths)
    prov = {**(upstream or {}).get("stage_provenance", {}),
            stage: stage_record(extra.get("method"), extra.get("s2ap"), method_files)}
    return {"stage": stage, "configs": configs, "threads": threads, "stage_provenance": prov,
            "method_files": method_files or (upstream or {}).get("method_files", []), **extra}


# ---------------------------------------------------------------- stages
def pretrain(cfg: dict, *, dataset: str, arch: str, seed: int, out: str | Path,
             state_dir: str | Path | None = None) -> dict:
    t0 = time.perf_counter()
    device = apply_runtime(cfg.get("runtime"))
    info = dataset_info(dataset)
    tcfg = train_config(cfg, info)
    splits = load_splits(dataset, cfg.get("data", {}))
    torch.manual_seed(seed)
    model = build_plain_model(arch, info, cfg.get("model")).to(device)
    run = StageTraining.for_stage("pretrain", cfg, train=tcfg, splits=splits, device=device, seed=seed,
                                  fingerprint=fingerprint("pretrain", cfg, dataset, arch, seed),
                                  state_dir=state_dir)
    model = run.layout(model)
    history = run.trainer(model, list(model.parameters())).fit()
    meta = _meta(cfg, "pretrain", None, dataset=dataset, arch=arch, seed=seed,
                 width=float(cfg.get("model", {}).get("width", 1.0)), history=history,
                 timing={"pretrain_s": time.perf_counter() - t0})
    _save_artifact({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "masks": None}, meta, out)
    return meta


# What the clock says (stage seconds, seconds per epoch) lives beside a model file, not in it:
# the same training twice gives byte-identical model files, so a model's sha256 names its weights
# and recipe, not the moment it ran. _read_artifact puts it back, so every reader sees one meta.
CLOCK_SUFFIX = ".timing.json"
_HISTORIES = (("history",), ("search", "history"))


def _history(meta: dict, where: tuple) -> list | None:
    node: Any = meta
    for key in where:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, list) else None


def _save_artifact(ckpt: dict, meta: dict, out: str | Path) -> None:
    meta = json.loads(json.dumps(meta))
    clock = {"timing": meta.pop("timing", {}), "time_s": {}}
    for where in _HISTORIES:
        hist = _history(meta, where)
        if hist is not None:
            clock["time_s"][".".join(where)] = [e.pop("time_s", None) if isinstance(e, dict) else None
                                                for e in hist]
    atomic_write_json(f"{out}{CLOCK_SUFFIX}", clock)
    atomic_torch_save({**ckpt, "meta": json.dumps(meta, sort_keys=True)}, out)


def _read_artifact(path: str | Path) -> tuple[dict, dict]:
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "meta" not in ckpt:
        raise CheckpointError(f"{path} is not a model file of this suite (no state_dict/meta)")
    meta = json.loads(ckpt["meta"])
    side = Path(f"{path}{CLOCK_SUFFIX}")
    if side.is_file():  # absent for a model made elsewhere: no timings then
        clock = json.loads(side.read_text())
        meta["timing"] = {**clock.get("timing", {}), **meta.get("timing", {})}
        for where in _HISTORIES:
            hist, times = _history(meta, where), clock.get("time_s", {}).get(".".join(where))
            if hist is not None and times is not None and len(times) == len(hist):
                for entry, t in zip(hist, times):
                    if isinstance(entry, dict) and t is not None:
                        entry["time_s"] = t
    return ckpt, meta


def _masked_model(arch, info, cfg, method, device) -> nn.Module:
    model = build_plain_model(arch, info, cfg.get("model"))
    masking.to_masked(model, method.granularity)
    method.setup_layers(model)
    return model.to(device)


def prune(cfg: dict, *, dataset: str, arch: str, method: str, s2ap: str, sparsity: float, seed: int,
          dense: str | Path | None, out: str | Path, state_dir: str | Path | None = None,
          method_files=(), search_seed: int | None = None) -> dict:
    """``seed`` names the dense model; ``search_seed`` (default: the same) drives the search, so
    two searches on one dense model measure seed stability."""
    t0 = time.perf_counter()
    dense_seed, seed = seed, seed if search_seed is None else search_seed
    device = apply_runtime(cfg.get("runtime"))
    info = dataset_info(dataset)
    tcfg = train_config(cfg, info)
    m = load_method(method, sparsity, cfg.get("method"), method_files)
    _check_s2ap(m, s2ap)
    splits = load_splits(dataset, cfg.get("data", {}))
    run = StageTraining.for_stage(
        "prune", cfg, train=tcfg, splits=splits, device=device, seed=seed, state_dir=state_dir,
        fingerprint=fingerprint("prune", cfg, dataset, arch, method, s2ap, sparsity, dense_seed, seed))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    upstream_timing: dict = {}
    dmeta: dict = {}
    model = build_plain_model(arch, info, cfg.get("model"))
    if m.needs_pretrain:
        if not dense or str(dense) == "none":
            raise ConfigError(f"method {method!r} prunes a pretrained model: pass --dense PATH")
        ckpt, dmeta = _read_artifact(dense)
        load_state_dict_checked(model, ckpt["state_dict"], dense, f"{arch} model of {dataset}")
        upstream_timing = dmeta.get("timing", {})
    m.prepare_search_model(model, run.score_init_context(gen),
                           weights_generator=torch.Generator().manual_seed(dense_seed))
    masking.set_mode(model, "search", train_bn=tcfg.train_bn)
    model = run.layout(model)
    history: list = []
    hooks: list[TrainHook] = []
    if m.learns_scores and tcfg.epochs > 0:
        hooks = m.search_hooks(model, tcfg)
        if s2ap in S2AP_SEARCH:
            hooks.append(m.s2ap_search_hook(cfg.get("s2ap") or {}, tcfg.epochs))
        history = run.trainer(model, m.search_params(model, tcfg), hooks).fit()
    m.finalize_search(model)
    # what the method says about its search (HARP: the budget, and whether the rates were
    # projected onto it); a learned mask is judged on the validation slice, a fixed rule is not
    search_report = {"learns_scores": bool(m.learns_scores), **m.search_report()}
    # "mask robust accuracy": the searched mask on the frozen weights, before any finetune
    attack = AttackConfig(tcfg.attack.eps, max(tcfg.val_attack_steps, 1), tcfg.attack.step_size)
    val_loader = torch.utils.data.DataLoader(splits[1], batch_size=256)
    mask_val = validate(model, val_loader, attack, device) if len(splits[1]) else {}
    t_diag = time.perf_counter()
    diag = {}
    for hook in hooks:  # what the hooks measured during the search (S2AP: the flips it caused)
        diag.update(hook.summary(history))
    if cfg.get("diagnostics") is not None:

        diag.update(search_diagnostics(model, splits[1], cfg["diagnostics"], attack, device, seed))
    diag_s = time.perf_counter() - t_diag
    masks = masking.get_masks(model)
    meta = _meta(cfg, "prune", dmeta, method_files=method_files, dataset=dataset, arch=arch,
                 method=method, s2ap=s2ap,
                 sparsity=sparsity, seed=dense_seed, search_seed=seed, history=history, mask_val=mask_val,
                 search_report=search_report, val_majority_share=_majority_share(splits[1]),
                 sparsity_report=masking.sparsity_report(masks), diagnostics=diag,
                 timing={**upstream_timing, "prune_s": time.perf_counter() - t0 - diag_s,
                         "diagnostics_s": diag_s})
    _save_artifact({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "masks": masks}, meta, out)
    return meta


def _check_s2ap(m, s2ap: str) -> None:
    if s2ap not in S2AP_VALUES:
        raise ConfigError(f"s2ap must be one of {S2AP_VALUES}, got {s2ap!r}")
    if not m.learns_scores and s2ap not in ("n/a", "off", "awp"):
        raise ConfigError(f"method {m.name!r} learns no scores: S2AP's score step does not apply "
                         f"(use s2ap 'n/a')")


def finetune(cfg: dict, *, dataset: str, arch: str, method: str, s2ap: str, sparsity: float, seed: int,
             search: str | Path, out: str | Path, state_dir: str | Path | None = None,
             method_files=()) -> dict:
    t0 = time.perf_counter()
    device = apply_runtime(cfg.get("runtime"))
    info = dataset_info(dataset)
    tcfg = train_config(cfg, info)
    m = load_method(method, sparsity, cfg.get("method"), method_files)
    _check_s2ap(m, s2ap)
    ckpt, smeta = _read_artifact(search)
    model = _masked_model(arch, info, cfg, m, device)
    load_state_dict_checked(model, ckpt["state_dict"], search, f"masked {arch} model of {info.name}")
    masking.load_masks(model, ckpt["masks"])
    masking.set_mode(model, "finetune")
    masking.apply_masks_to_weights(model)
    history: list = []
    if m.needs_finetune and tcfg.epochs > 0:
        splits = load_splits(dataset, cfg.get("data", {}))
        torch.manual_seed(seed)
        run = StageTraining.for_stage(
            "finetune", cfg, train=tcfg, splits=splits, device=device, seed=seed, state_dir=state_dir,
            fingerprint=fingerprint("finetune", cfg, dataset, arch, method, s2ap, sparsity, seed))
        model = run.layout(model)
        hooks = m.finetune_hooks(model, tcfg)
        if s2ap in S2AP_FINETUNE:
            hooks.append(m.s2ap_finetune_hook(cfg.get("awp") or {}))
        params = [p for p in model.parameters() if p.requires_grad]
        history = run.trainer(model, params, hooks).fit()
    masks = masking.get_masks(model)
    meta = _meta(cfg, "finetune", smeta, method_files=method_files, dataset=dataset, arch=arch,
                 method=method, s2ap=s2ap,
                 sparsity=sparsity, seed=seed, granularity=m.granularity,
                 width=float(cfg.get("model", {}).get("width", 1.0)),
                 history=history, search=dict(mask_val=smeta.get("mask_val"), history=smeta.get("history"),
                                              report=smeta.get("search_report"),
                                              val_majority_share=smeta.get("val_majority_share")),
                 diagnostics=smeta.get("diagnostics") or {},
                 timing={**smeta.get("timing", {}), "finetune_s": time.perf_counter() - t0})
    _save_artifact({"state_dict": masking.export_state_dict(model), "masks": masks}, meta, out)
    return meta


def load_exported(path: str | Path, arch: str, info, model_cfg: dict) -> tuple[nn.Module, dict | None, dict]:
    """The exported model in its plain architecture (strict load), its masks and meta.

    A pruned model's meta must name its mask granularity (the finetune stage records it): the
    result's "structured" label comes from it, never from a guess.
    """
    ckpt, meta = _read_artifact(path)
    model = build_plain_model(arch, info, model_cfg)
    load_state_dict_checked(model, ckpt["state_dict"], path, f"{arch} model of {info.name}")
    masks = ckpt.get("masks")
    if masks is not None and meta.get("granularity") is None:
        raise CheckpointError(f"{path} holds masks but its meta names no mask granularity: it was "
                              f"written by an older finetune stage; rerun that stage")
    return model, masks, meta


def seed_stability(search_a: str | Path, search_b: str | Path, out: str | Path) -> dict:
    """Flip fraction and Jaccard index between the masks of two search seeds on one dense model."""

    (a, meta_a), (b, meta_b) = _read_artifact(search_a), _read_artifact(search_b)
    if a.get("masks") is None or b.get("masks") is None:
        raise ValueError("seed stability needs the masks of two mask searches")
    result = mask_agreement(a["masks"], b["masks"])
    record = {"seed_flip_fraction": result["flip_fraction"], "seed_jaccard": result["jaccard"],
              "seed_pair": [meta_a.get("search_seed"), meta_b.get("search_seed")]}
    atomic_write_json(out, record)
    return record


def evaluate(cfg: dict, *, model_path: str | Path, cell: dict, out: str | Path,
             state_dir: str | Path | None = None, extra_diagnostics=()) -> dict:
    """Clean / PGD / AutoAttack of an exported model -> a result JSON (benchmark.core.result_file), with
    the sparsity measured on the weights that are attacked."""

    t0 = time.perf_counter()
    device = apply_runtime(cfg.get("runtime"))
    dataset, arch = cell["dataset"], cell["arch"]
    info = dataset_info(dataset)
    model, masks, meta = load_exported(model_path, arch, info, cfg.get("model"))
    granularity = meta.get("granularity") if masks is not None else None
    sparsity = masking.measure_sparsity(model, masks, granularity)
    model = prepare_for_eval(model.to(device))
    _, _, test_set = load_splits(dataset, cfg.get("data", {}), augment=False)
    ecfg = stage_config(cfg["evaluate"], info.eps,
                        Path(state_dir) / "autoattack" if state_dir else None)
    evaluation = evaluate_model(model, test_set, ecfg, device)
    search = meta.get("search") or {}
    record = results.build_record(
        cell=cell, structure=results.structure_of(granularity),
        configs={**meta.get("configs", {}), "evaluate": cfg}, evaluation=evaluation,
        sparsity=sparsity,
        timing={**meta.get("timing", {}), **evaluation["timing"],
                "evaluate_s": time.perf_counter() - t0},
        diagnostics=_diagnostics(meta, extra_diagnostics),
        history={"train": meta.get("history"), "search": search.get("history")},
        provenance=_result_provenance(provenance, stage_record, cell, meta),
        search=search.get("report"),
        class_balance=_class_balance(search.get("val_majority_share"), test_set, evaluation),
        # the exports publish this file: they check it is still the one evaluated
        model={"path": str(model_path), "sha256": sha256_file(model_path)})
    results.write_result(out, record)
    return record


def _result_provenance(provenance, stage_record, cell: dict, meta: dict) -> dict:
    """The result's provenance: its row's code scope (the cell's method and S2AP setting, the
    method file the prune stage named) and the record of every stage that made the model."""
    scope = dict(method=cell.get("method"), s2ap=cell.get("s2ap"),
                 method_files=meta.get("method_files") or ())
    return {**provenance(**scope),
            "threads": {**meta.get("threads", {}), "evaluate": torch.get_num_threads()},
            "stages": {**meta.get("stage_provenance", {}), "evaluate": stage_record(**scope)}}


def _majority_share(ds) -> float | None:

    return majority_share(ds) if ds is not None and len(ds) else None


def _class_balance(val_share: float | None, test_set, evaluation: dict) -> dict:
    """The majority class's share of the validation slice (where the mask was judged) and of the
    test images the clean accuracy was measured on: what a model that learned nothing scores."""

    n = evaluation["metrics"]["clean"]["n"]
    clean_set = test_set if n >= len(test_set) else Subset(test_set, range(n))
    return {"val_majority_share": val_share, "test_majority_share": _majority_share(clean_set)}


def autoattack_shard(cfg: dict, *, model_path: str | Path, cell: dict, shard: int, out: str | Path,
                     state_dir: str | Path) -> dict:
    """One AutoAttack shard of ``evaluate`` (same config, model and state_dir), written where
    ``evaluate`` finds it done; ``out`` receives a receipt for the workflow. A shard index past
    the last image writes a receipt with no shard."""

    t0 = time.perf_counter()
    device = apply_runtime(cfg.get("runtime"))
    info = dataset_info(cell["dataset"])
    model, _, _ = load_exported(model_path, cell["arch"], info, cfg.get("model"))
    model = prepare_for_eval(model.to(device))
    _, _, test_set = load_splits(cell["dataset"], cfg.get("data", {}), augment=False)
    ecfg = stage_config(cfg["evaluate"], info.eps, Path(state_dir) / "autoattack")
    done = autoattack_shards(model, test_set, ecfg, [int(shard)], device)
    receipt = {**done, "shard": int(shard), "model": str(model_path),
               "seconds": time.perf_counter() - t0}
    atomic_write_json(out, receipt)
    return receipt


def _diagnostics(meta: dict, extra_files=()) -> dict:

    out: dict = {}
    search = meta.get("search") or {}
    mask_val = search.get("mask_val") or {}
    if "val_pgd" in mask_val:
        out["mask_robust_acc"] = mask_val["val_pgd"]
        out["mask_clean_acc"] = mask_val["val_clean"]
    out.update(meta.get("diagnostics") or {})
    for path in extra_files:
        out.update({k: v for k, v in read_json(path).items() if isinstance(v, (int, float))})
    return out
