"""Clean, PGD-50 and AutoAttack accuracy with per-image correctness flags.

Long because the clean, PGD and AutoAttack passes share the batching and the per-image flag
conventions that keep two models' flags paired.

Every function takes the first N test images in test order (never shuffled), so that flags of
two models line up image by image for paired tests, and refuses a model that is not ready for
evaluation (benchmark.evaluation.readiness).

``evaluate_model`` config (all accuracies come back as fractions in [0, 1]):

    {"eps": float,                       # L-inf radius, inputs in [0, 1]
     "pgd_steps": 50,
     "pgd_step_size": float | None,      # None -> 2.5 * eps / steps (Madry et al.'s rule: the
                                         #   iterates can cross the ball 2.5 times; 0.05 * eps at 50)
     "pgd_seed": int (default 0),        # random start of PGD
     "clean_n": int | None,              # None -> the whole test set
     "pgd_n": int | None,                # None -> the whole test set
     "batch_size": int | None,           # clean and PGD batches; None: from free memory
     "autoattack": None | {"n_images": int | None, "version": "standard",
                   "attacks": None | [...], "batch_size": int | None (from free memory),
                   "shard_size": int | None,
                   "seed": int, "state_dir": path | None}}

Besides the numbers, the evaluation returns its ``protocol`` (the configuration with every
default resolved: the image counts, the step size, the attack list) and, per metric, what the
attack actually did: the parameters it ran with, the largest L-inf distance of an adversarial
image from its original, and a digest of the images it saw (``images_digest``: labels and
per-image pixel sums of the first n images), so that a result can be checked against its preset
and two results can be checked to cover the same images.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler, Subset, TensorDataset

from benchmark.core.stats import flags_to_str
from benchmark.evaluation.attacks import AttackConfig, pgd_linf
from benchmark.evaluation.autoattack import resolve_attacks, run_autoattack
from benchmark.evaluation.batching import SOURCE_MEMORY, SOURCE_PRESET, choose_batch_size
from benchmark.evaluation.readiness import assert_eval_ready, fork_devices, prepare_for_eval

TOP_KEYS = {"eps", "pgd_steps", "pgd_step_size", "pgd_seed", "clean_n", "pgd_n", "batch_size",
            "autoattack"}
AA_KEYS = {"n_images", "version", "attacks", "batch_size", "shard_size", "seed", "state_dir"}

log = logging.getLogger(__name__)

__all__ = ["assert_eval_ready", "prepare_for_eval", "iter_batches", "first_n", "clean_flags",
           "pgd_flags", "default_step_size", "images_digest", "stage_config", "evaluate_model"]


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


def image_sums(x: torch.Tensor) -> torch.Tensor:
    """Per-image pixel sums in float64 on the CPU: the cheap fingerprint of an image that
    ``images_digest`` hashes (hashing every pixel of a full ImageNet validation set would cost
    more than its clean evaluation)."""
    return x.detach().cpu().double().flatten(1).sum(1)


def images_digest(sums: torch.Tensor, y: torch.Tensor) -> str:
    """16 hex digits over the labels and per-image sums of a run of images, in order."""
    h = hashlib.sha256()
    h.update(str(int(sums.numel())).encode())
    h.update(sums.contiguous().numpy().tobytes())
    h.update(torch.as_tensor(y).detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


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
    return _pgd(model, data, eps, steps, step_size, device, batch_size, seed, n, clean)[0]


def _pgd(model: nn.Module, data: Any, eps: float, steps: int, step_size: float | None,
         device: str | torch.device | None, batch_size: int, seed: int, n: int | None,
         clean: torch.Tensor | None) -> tuple[torch.Tensor, float]:
    """pgd_flags and the largest L-inf distance of an adversarial image from its original."""
    assert_eval_ready(model)
    dev = _device_of(model, device)
    cfg = AttackConfig(eps=float(eps), steps=int(steps),
                       step_size=float(default_step_size(eps, steps) if step_size is None else step_size),
                       random_start=True)
    out = []
    seen = 0
    moved = 0.0
    with torch.random.fork_rng(devices=fork_devices(dev)):
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
                moved = max(moved, float((x_adv - xb[sel]).abs().max()))
                with torch.no_grad():
                    robust[sel] = model(x_adv).argmax(dim=1) == yb[sel]
            out.append(robust.cpu())
    return (torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)), moved


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


def stage_config(evaluate_cfg: dict, default_eps: float, state_dir: str | None = None) -> dict:
    """The evaluate_model config of the evaluation stage: the preset's ``evaluate`` section with
    eps defaulting to the dataset's, AutoAttack off when its n_images is 0, and the shard files
    under state_dir."""
    cfg = dict(evaluate_cfg)
    cfg["eps"] = float(default_eps) if cfg.get("eps") is None else float(cfg["eps"])
    aa = cfg.get("autoattack")
    if aa and (aa.get("n_images") is None or int(aa["n_images"]) > 0):
        aa = dict(aa)
        if state_dir:
            aa["state_dir"] = str(state_dir)
        cfg["autoattack"] = aa
    else:
        cfg["autoattack"] = None
    return cfg


def _protocol(cfg: dict, total: int) -> dict[str, Any]:
    """cfg with every default resolved: what the evaluation will run."""
    def _n(v):
        return total if v is None else min(int(v), total)

    eps = float(cfg["eps"])
    steps = int(cfg.get("pgd_steps", 50))
    step_size = cfg.get("pgd_step_size")
    protocol: dict[str, Any] = {
        "eps": eps, "test_images": total,
        "clean_n": _n(cfg.get("clean_n")), "pgd_n": _n(cfg.get("pgd_n")),
        "pgd_steps": steps,
        "pgd_step_size": default_step_size(eps, steps) if step_size is None else float(step_size),
        "pgd_seed": int(cfg.get("pgd_seed", 0)),
        # a key left out takes the old default; an explicit null is chosen from free memory
        "batch_size": _batch_size(cfg, "batch_size", 256),
        "batch_size_source": SOURCE_PRESET,
        "autoattack": None,
    }
    aa = cfg.get("autoattack")
    if aa is not None and _n(aa.get("n_images")) > 0:
        version = aa.get("version", "standard")
        attacks, standard = resolve_attacks(version, aa.get("attacks"))
        protocol["autoattack"] = {
            "n_images": _n(aa.get("n_images")), "version": version, "attacks": attacks,
            "standard": standard, "seed": int(aa.get("seed", 0)),
            "batch_size": _batch_size(aa, "batch_size", 250), "batch_size_source": SOURCE_PRESET,
            "shard_size": aa.get("shard_size")}
    return protocol


def _batch_size(cfg: dict, key: str, default: int) -> int | None:
    if key not in cfg:
        return default
    return None if cfg[key] is None else int(cfg[key])


def _resolve_batch_sizes(protocol: dict, model: nn.Module, test_set: Any, dev: torch.device) -> None:
    """Fills the batch sizes the preset left null from the free memory (benchmark.evaluation.batching)."""
    aa = protocol["autoattack"]
    if protocol["batch_size"] is not None and (aa is None or aa["batch_size"] is not None):
        return
    x, _ = first_n(test_set, 1)
    example = x.to(dev)
    if protocol["batch_size"] is None:
        n = max(protocol["clean_n"], protocol["pgd_n"])
        protocol["batch_size"] = choose_batch_size(model, example, n, backward=True)
        protocol["batch_size_source"] = SOURCE_MEMORY
    if aa is not None and aa["batch_size"] is None:
        aa["batch_size"] = choose_batch_size(model, example, aa["n_images"], backward=True)
        aa["batch_size_source"] = SOURCE_MEMORY


def _clean_pass(model: nn.Module, data: Any, dev: torch.device, batch_size: int, n: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean flags, per-image sums and labels of the first n images, in one pass."""
    flags, sums, labels = [], [], []
    with torch.no_grad():
        for xb, yb in iter_batches(data, n, batch_size):
            sums.append(image_sums(xb))
            labels.append(yb)
            flags.append(model(xb.to(dev)).argmax(dim=1).cpu() == yb)
    if not flags:
        return (torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.float64),
                torch.zeros(0, dtype=torch.long))
    return torch.cat(flags), torch.cat(sums), torch.cat(labels)


def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, protocol: dict, aa_cfg: dict,
                dev: torch.device, progress: bool, shards=None) -> dict[str, Any]:
    aa = protocol["autoattack"]
    return run_autoattack(model, x, y, eps=protocol["eps"], version=aa["version"],
                          attacks=aa_cfg.get("attacks"), seed=aa["seed"], batch_size=aa["batch_size"],
                          shard_size=aa["shard_size"], state_dir=aa_cfg.get("state_dir"), device=dev,
                          progress=progress, shards=shards)


def autoattack_shard_count(cfg: dict, total: int) -> int:
    """How many AutoAttack shards evaluate_model runs on a test set of ``total`` images."""
    aa = _protocol(cfg, total)["autoattack"]
    if aa is None:
        return 0
    shard = aa["shard_size"] or aa["n_images"]
    return -(-aa["n_images"] // int(shard))


def autoattack_shards(model: nn.Module, test_set: Any, cfg: dict, shards, device=None,
                      progress: bool = True) -> dict[str, Any]:
    """Only the AutoAttack shards ``shards`` (indices) of what evaluate_model(model, test_set, cfg)
    attacks (the same images, batches, seed), written into cfg's autoattack.state_dir, where
    evaluate_model then finds them done: the work of one shard job on a multi-GPU machine."""
    _check_cfg(cfg)
    assert_eval_ready(model)
    dev = _device_of(model, device)
    protocol = _protocol(cfg, _length(test_set))
    if protocol["autoattack"] is None:
        raise ValueError("the evaluation config runs no AutoAttack: there are no shards to run")
    aa_cfg = cfg.get("autoattack") or {}
    if not aa_cfg.get("state_dir"):
        raise ValueError("AutoAttack shards are written into autoattack.state_dir: set it")
    _resolve_batch_sizes(protocol, model, test_set, dev)
    x, y = first_n(test_set, protocol["autoattack"]["n_images"], protocol["batch_size"])
    return _autoattack(model, x, y, protocol, aa_cfg, dev, progress, shards=list(shards))


def evaluate_model(model: nn.Module, test_set: Any, cfg: dict, device: str | torch.device | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Clean, PGD and AutoAttack on the first N test images; see the module docstring for cfg.

    Returns {"metrics": {"clean", "pgd", "autoattack"}, "flags": {...: '0'/'1' string},
    "timing": {"clean_s", "pgd_s", "autoattack_s"}, "protocol": cfg with defaults resolved}.
    AutoAttack is skipped (metrics and flags None) when cfg["autoattack"] is null or its n_images
    is 0. Progress goes to this module's logger (INFO; DEBUG with progress=False).
    """
    _check_cfg(cfg)
    assert_eval_ready(model)
    dev = _device_of(model, device)
    level = logging.INFO if progress else logging.DEBUG
    protocol = _protocol(cfg, _length(test_set))
    _resolve_batch_sizes(protocol, model, test_set, dev)
    eps, bs = protocol["eps"], protocol["batch_size"]
    clean_n, pgd_n = protocol["clean_n"], protocol["pgd_n"]
    aa_proto = protocol["autoattack"]
    aa_cfg = cfg.get("autoattack") or {}

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    clean_all, sums, labels = _clean_pass(model, test_set, dev, bs, max(clean_n, pgd_n))
    timing["clean_s"] = time.perf_counter() - t0
    clean = clean_all[:clean_n]
    log.log(level, "clean: %d/%d correct (%.2f s)", int(clean.sum()), clean_n, timing["clean_s"])

    steps, step_size, seed = protocol["pgd_steps"], protocol["pgd_step_size"], protocol["pgd_seed"]
    t0 = time.perf_counter()
    pgd, moved = _pgd(model, test_set, eps, steps, step_size, dev, bs, seed, pgd_n,
                      clean_all[:pgd_n])
    timing["pgd_s"] = time.perf_counter() - t0
    log.log(level, "PGD-%d at eps %g: %d/%d robust (%.2f s)", steps, eps, int(pgd.sum()), pgd_n,
            timing["pgd_s"])

    metrics: dict[str, Any] = {
        "clean": _metric(clean, images_digest=images_digest(sums[:clean_n], labels[:clean_n])),
        "pgd": _metric(pgd, images_digest=images_digest(sums[:pgd_n], labels[:pgd_n]),
                       steps=steps, step_size=step_size, eps=eps, seed=seed, restarts=1,
                       random_start=True, batch_size=bs, max_perturbation=moved),
    }
    flags = {"clean": flags_to_str(clean), "pgd": flags_to_str(pgd)}
    if aa_proto is not None:
        t0 = time.perf_counter()
        x, y = first_n(test_set, aa_proto["n_images"], bs)
        aa = _autoattack(model, x, y, protocol, aa_cfg, dev, progress)
        timing["autoattack_s"] = time.perf_counter() - t0
        aa_flags = aa.pop("flags")
        aa["images_digest"] = images_digest(image_sums(x), y)
        metrics["autoattack"] = aa
        flags["autoattack"] = flags_to_str(aa_flags)
    else:
        metrics["autoattack"] = None
        flags["autoattack"] = None
        timing["autoattack_s"] = 0.0
    return {"metrics": metrics, "flags": flags, "timing": timing, "protocol": protocol}
