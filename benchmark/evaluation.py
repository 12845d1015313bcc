"""Clean, PGD-50 and AutoAttack accuracy with per-image correctness flags.

Every function takes the first N test images in test order (never shuffled), so that flags of
two models line up image by image for paired tests, and refuses a model that is not ready for
evaluation: AutoAttack on a BatchNorm model in training mode gives wrong numbers without any
warning, so a forgotten ``model.eval()`` must be an error, not a silent bias.

``evaluate_model`` config (all accuracies come back as fractions in [0, 1]):

    {"eps": float,                       # L-inf radius, inputs in [0, 1]
     "pgd_steps": 50,
     "pgd_step_size": float | None,      # None -> 2.5 * eps / steps (Madry et al.'s rule: the
                                         #   iterates can cross the ball 2.5 times; 0.05 * eps at 50)
     "pgd_seed": int (default 0),        # random start of PGD
     "clean_n": int | None,              # None -> the whole test set
     "pgd_n": int | None,                # None -> the whole test set
     "batch_size": int,                  # clean and PGD batches
     "autoattack": None | {"n_images": int | None, "version": "standard",
                   "attacks": None | [...], "batch_size": int, "shard_size": int | None,
                   "seed": int, "state_dir": path | None}}
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset, TensorDataset

from benchmark.attacks import AttackConfig, pgd_linf
from benchmark.stats import flags_to_str

TOP_KEYS = {"eps", "pgd_steps", "pgd_step_size", "pgd_seed", "clean_n", "pgd_n", "batch_size",
            "autoattack"}
AA_KEYS = {"n_images", "version", "attacks", "batch_size", "shard_size", "seed", "state_dir"}


# ---------------------------------------------------------------- readiness
def assert_eval_ready(model: nn.Module) -> None:
    """Raises RuntimeError naming the first offending module or parameter.

    Checked: no module in training mode; no parameter requiring grad (the attacks' backward
    passes would otherwise compute and accumulate weight gradients: slower, and a model that
    changes between calls); floating parameters and buffers in float32 (the bf16 training
    option must never reach the evaluation).
    """
    for name, module in model.named_modules():
        if module.training:
            raise RuntimeError(
                f"module {name or '<root>'} ({type(module).__name__}) is in training mode; "
                f"evaluation refuses it (BatchNorm would use batch statistics). Call "
                f"benchmark.evaluation.prepare_for_eval(model) first.")
    for name, p in model.named_parameters():
        if p.requires_grad:
            raise RuntimeError(f"parameter {name} requires grad; call prepare_for_eval(model)")
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and t.dtype != torch.float32:
                raise RuntimeError(f"{kind} {name} is {t.dtype}; evaluation runs in float32, "
                                   f"call prepare_for_eval(model)")


def prepare_for_eval(model: nn.Module) -> nn.Module:
    """eval(), float32, requires_grad off, then the readiness check. Returns the same model."""
    model.eval()
    model.float()
    model.requires_grad_(False)
    assert_eval_ready(model)
    return model


# ---------------------------------------------------------------- data
def _length(data: Any) -> int:
    if isinstance(data, (tuple, list)):
        return int(data[0].shape[0])
    if isinstance(data, DataLoader):
        return len(data.dataset)
    return len(data)


def iter_batches(data: Any, n: int | None = None, batch_size: int = 256):
    """Yields (x, y) batches covering the first n items in test order (all when n is None).

    Accepts an (x, y) pair of tensors, a Dataset or a DataLoader; a shuffling loader is refused,
    since flags must line up with test indices. Streaming keeps a full ImageNet validation set
    out of memory.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        x, y = data
        y = torch.as_tensor(y)
        n = x.shape[0] if n is None else min(int(n), x.shape[0])
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            yield x[s:e], y[s:e].long()
        return
    if isinstance(data, DataLoader):
        if not isinstance(data.sampler, SequentialSampler):
            raise ValueError("evaluation needs the test images in order: pass a DataLoader with "
                             "shuffle=False (a SequentialSampler), or the dataset itself")
        total = len(data.dataset)
        n = total if n is None else min(int(n), total)
        seen = 0
        for xb, yb in data:
            if seen >= n:
                break
            take = min(xb.shape[0], n - seen)
            yield xb[:take], torch.as_tensor(yb)[:take].long()
            seen += take
        return
    if not isinstance(data, Dataset):
        raise TypeError(f"expected (x, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}")
    total = len(data)
    n = total if n is None else min(int(n), total)
    if isinstance(data, TensorDataset):
        yield from iter_batches((data.tensors[0], data.tensors[1]), n, batch_size)
        return
    loader = DataLoader(Subset(data, range(n)), batch_size=batch_size, shuffle=False, num_workers=0)
    for xb, yb in loader:
        yield xb, torch.as_tensor(yb).long()


def first_n(data: Any, n: int | None = None, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors of the first n items in order (AutoAttack needs them as one tensor)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        n = data[0].shape[0] if n is None else min(int(n), data[0].shape[0])
        return data[0][:n], torch.as_tensor(data[1])[:n].long()
    xs, ys = [], []
    for xb, yb in iter_batches(data, n, batch_size):
        xs.append(xb)
        ys.append(yb)
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _fork_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# ---------------------------------------------------------------- clean and PGD
def clean_flags(model: nn.Module, data: Any, device: str | torch.device | None = None,
                batch_size: int = 256, n: int | None = None) -> torch.Tensor:
    """Per-image correctness on the first n test items (all when n is None), in test order."""
    assert_eval_ready(model)
    dev = _device_of(model, device)
    out = []
    with torch.no_grad():
        for xb, yb in iter_batches(data, n, batch_size):
            out.append(model(xb.to(dev)).argmax(dim=1).cpu() == yb)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def default_step_size(eps: float, steps: int) -> float:
    """2.5 * eps / steps (Madry et al. 2018): enough travel to cross the ball from the random
    start and back, small enough to converge within the step budget."""
    return 2.5 * eps / max(steps, 1)


def pgd_flags(model: nn.Module, data: Any, eps: float, steps: int = 50,
              step_size: float | None = None, device: str | torch.device | None = None,
              batch_size: int = 256, seed: int = 0, n: int | None = None,
              clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image robustness to L-inf PGD with one uniform random start, first n test items.

    An image counts as robust only if it is classified correctly both clean and at the last PGD
    iterate (as AutoAttack counts), so PGD accuracy never exceeds clean accuracy. Only clean-
    correct images are attacked (``clean`` may pass flags already computed). The run is
    reproducible: it happens inside fork_rng after torch.manual_seed(seed), and the caller's RNG
    stream is left as it was. Batches follow the data batches, so results depend on batch_size.
    """
    assert_eval_ready(model)
    dev = _device_of(model, device)
    cfg = AttackConfig(eps=float(eps), steps=int(steps),
                       step_size=float(default_step_size(eps, steps) if step_size is None else step_size),
                       random_start=True)
    out = []
    seen = 0
    with torch.random.fork_rng(devices=_fork_devices(dev)):
        torch.manual_seed(seed)
        for xb, yb in iter_batches(data, n, batch_size):
            xb, yb = xb.to(dev), yb.to(dev)
            if clean is not None:
                if clean.shape[0] < seen + xb.shape[0]:
                    raise ValueError(f"clean flags cover {clean.shape[0]} images, PGD needs more")
                ok = clean[seen:seen + xb.shape[0]].bool().to(dev)
            else:
                with torch.no_grad():
                    ok = model(xb).argmax(dim=1) == yb
            seen += xb.shape[0]
            robust = ok.clone()
            sel = ok.nonzero().flatten()
            if sel.numel():
                x_adv = pgd_linf(model, xb[sel], yb[sel], cfg)
                with torch.no_grad():
                    robust[sel] = model(x_adv).argmax(dim=1) == yb[sel]
            out.append(robust.cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


# ---------------------------------------------------------------- the whole evaluation
def _check_cfg(cfg: dict) -> None:
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise ValueError(f"unknown evaluation config keys {sorted(unknown)}; valid: {sorted(TOP_KEYS)}")
    if "eps" not in cfg or cfg["eps"] is None or float(cfg["eps"]) <= 0:
        raise ValueError(f"evaluation config needs a positive eps, got {cfg.get('eps')!r}")
    aa = cfg.get("autoattack")
    if aa is not None:
        if not isinstance(aa, dict):
            raise ValueError(f"autoattack config must be a mapping or null, got {aa!r}")
        unknown = set(aa) - AA_KEYS
        if unknown:
            raise ValueError(f"unknown autoattack config keys {sorted(unknown)}; valid: {sorted(AA_KEYS)}")
        if aa.get("seed", 0) is None:
            raise ValueError("autoattack.seed must be an integer (None seeds from the clock)")


def _metric(flags: torch.Tensor, **extra: Any) -> dict[str, Any]:
    n = int(flags.numel())
    correct = int(flags.sum())
    return {"correct": correct, "n": n, "acc": correct / n if n else float("nan"), **extra}


def evaluate_model(model: nn.Module, test_set: Any, cfg: dict, device: str | torch.device | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Clean, PGD and AutoAttack on the first N test images; see the module docstring for cfg.

    Returns {"metrics": {"clean", "pgd", "autoattack"}, "flags": {...: '0'/'1' string},
    "timing": {"clean_s", "pgd_s", "autoattack_s"}}. AutoAttack is skipped (metrics and flags
    None) when cfg["autoattack"] is null or its n_images is 0.
    """
    from benchmark.autoattack_eval import run_autoattack

    _check_cfg(cfg)
    assert_eval_ready(model)
    dev = _device_of(model, device)
    eps = float(cfg["eps"])
    bs = int(cfg.get("batch_size") or 256)
    total = _length(test_set)

    def _n(v):
        return total if v is None else min(int(v), total)

    clean_n, pgd_n = _n(cfg.get("clean_n")), _n(cfg.get("pgd_n"))
    aa_cfg = cfg.get("autoattack")
    aa_n = 0 if aa_cfg is None else _n(aa_cfg.get("n_images"))

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    clean_all = clean_flags(model, test_set, dev, bs, max(clean_n, pgd_n))
    timing["clean_s"] = time.perf_counter() - t0

    steps = int(cfg.get("pgd_steps", 50))
    step_size = cfg.get("pgd_step_size")
    step_size = default_step_size(eps, steps) if step_size is None else float(step_size)
    seed = int(cfg.get("pgd_seed", 0))
    t0 = time.perf_counter()
    pgd = pgd_flags(model, test_set, eps, steps, step_size, dev, bs, seed, n=pgd_n,
                    clean=clean_all[:pgd_n])
    timing["pgd_s"] = time.perf_counter() - t0

    clean = clean_all[:clean_n]
    metrics: dict[str, Any] = {
        "clean": _metric(clean),
        "pgd": _metric(pgd, steps=steps, step_size=step_size, eps=eps, seed=seed,
                       restarts=1, random_start=True),
    }
    flags = {"clean": flags_to_str(clean), "pgd": flags_to_str(pgd)}
    if aa_n > 0:
        t0 = time.perf_counter()
        x, y = first_n(test_set, aa_n, bs)
        aa = run_autoattack(model, x, y, eps=eps,
                            version=aa_cfg.get("version", "standard"),
                            attacks=aa_cfg.get("attacks"), seed=int(aa_cfg.get("seed", 0)),
                            batch_size=int(aa_cfg.get("batch_size") or 250),
                            shard_size=aa_cfg.get("shard_size"), state_dir=aa_cfg.get("state_dir"),
                            device=dev, progress=progress)
        timing["autoattack_s"] = time.perf_counter() - t0
        aa_flags = aa.pop("flags")
        metrics["autoattack"] = aa
        flags["autoattack"] = flags_to_str(aa_flags)
    else:
        metrics["autoattack"] = None
        flags["autoattack"] = None
        timing["autoattack_s"] = 0.0
    return {"metrics": metrics, "flags": flags, "timing": timing}
