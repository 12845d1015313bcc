"""AutoAttack through pyautoattack 0.2.0, with the traps of that wrapper handled here.

Long because each trap of pyautoattack 0.2.0 is handled beside the call that meets it (shards, log
capture, attack subsets).

What the wrapper does and what we do about it:

- ``AutoAttack(attacks=[...], version='standard')`` raises, and ``version='custom'`` runs APGD-CE
  with 5 restarts instead of the standard 1. A subset is therefore run by building the standard
  version and then narrowing ``attacks_to_run``; the result is labelled non-standard.
- ``state_path`` resume is broken (the saved attack set fails to compare on restore). We shard
  the images ourselves and write each shard's per-image flags atomically into ``state_dir``;
  a killed evaluation reruns only the shards without a file.
- It returns ``(x_adv, y_adv)`` and no accuracy: robust flags are ``y_adv == y`` (images the
  model already misclassifies keep their clean prediction, so they count as not robust).
- Progress lines ("robust accuracy after APGD-CE: ...", "k out of m successfully perturbed") and
  its checks' warnings go to ``logging.getLogger('auto-attack')``, progress at DEBUG. We attach a
  handler for the duration of the run that re-logs them through this module's logger as they
  arrive (a job log shows each attack's progress while it runs, not after the shard) and keeps
  them: per-attack accuracy progression, and whether an attack run after APGD (FAB-T, Square)
  still broke images -- a sign that APGD alone was not enough, which the wrapper only checks for
  Square.
- ``seed=None`` seeds from the clock and every APGD/FAB/Square call reseeds the global RNG: the
  seed is mandatory here and the run happens inside ``torch.random.fork_rng``, so the caller's
  RNG stream is untouched.
- What ran is read back from the attack objects after each shard (``attack_params``: the eps,
  norm, iterations, restarts, target classes and queries each attack object held) together with
  the largest L-inf distance between an adversarial image and its original: the result records
  what the attack did, not what it was asked to do.

Shards are independent (each reseeds), so a resumed evaluation gives the same flags as an
uninterrupted one with the same shard_size. Different shard sizes group the images into
different attack batches and may differ in a few images, so shard_size is part of the
fingerprint; ``shard_size=None`` is one shard and reproduces a bare pyautoattack call exactly.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from pyautoattack import AutoAttack

from benchmark.core.io import atomic_write_json, read_json
from benchmark.core.result_file import AUTOATTACK_VERSIONS as VERSION_ATTACKS
from benchmark.core.stats import flags_to_str, str_to_flags
from benchmark.evaluation.readiness import assert_eval_ready, fork_devices

LOGGER_NAME = "auto-attack"
log = logging.getLogger(__name__)

APGD_ATTACKS = frozenset({"apgd-ce", "apgd-dlr", "apgd-t"})
# the attribute of pyautoattack.AutoAttack that runs each attack
ATTACK_OBJECTS = {"apgd-ce": "apgd", "apgd-dlr": "apgd", "apgd-t": "apgd_targeted",
                  "fab": "fab", "fab-t": "fab", "square": "square"}
_ATTACK_SETTINGS = ("n_iter", "n_restarts", "n_target_classes", "n_queries")

_RE_AFTER = re.compile(r"robust accuracy after (\S+): ([0-9.]+)%")
_RE_PERTURBED = re.compile(r"^(\S+) - \d+/\d+ - (\d+) out of (\d+) successfully perturbed")
_RE_INITIAL = re.compile(r"^initial accuracy: ([0-9.]+)%")
# the wrapper's lines worth a place in a job log: one per attack and batch, not its set-up chatter
_RE_PROGRESS = re.compile(r"^(initial accuracy|running |robust accuracy after |\S+ - \d+/\d+ - )")

SHARD_FORMAT = 2


class _Capture(logging.Handler):
    """Keeps every record of the 'auto-attack' logger while installed and hands each one to
    ``forward`` as it arrives; formats nothing else until read."""

    def __init__(self, forward: Callable[[logging.LogRecord], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.forward = forward

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.forward is not None:
            self.forward(record)


@contextlib.contextmanager
def capture_autoattack_log(forward: Callable[[logging.LogRecord], None] | None = None):
    """Installs a capturing handler on the 'auto-attack' logger at DEBUG and restores the logger's
    level, propagation and handlers afterwards.

    Propagation is switched off meanwhile: otherwise raising the level to DEBUG would flood any
    root handler (a job log, pytest) with the wrapper's set-up lines; ``forward`` re-logs the
    useful ones through this module's logger as they arrive.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = _Capture(forward)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def parse_log(messages: Sequence[str]) -> dict[str, Any]:
    """Reads AutoAttack's debug lines of one run (one shard).

    Returns perturbed counts per attack (exact integers from "k out of m successfully perturbed"),
    the logged "robust accuracy after X" percentages (lower-case attack names, in %) and the
    logged initial accuracy in %.
    """
    perturbed: dict[str, int] = {}
    after: dict[str, float] = {}
    initial = None
    for msg in messages:
        m = _RE_PERTURBED.match(msg)
        if m:
            perturbed[m.group(1)] = perturbed.get(m.group(1), 0) + int(m.group(2))
            continue
        m = _RE_AFTER.search(msg)
        if m:
            after[m.group(1).lower()] = float(m.group(2))
            continue
        m = _RE_INITIAL.match(msg)
        if m:
            initial = float(m.group(1))
    return {"perturbed": perturbed, "robust_after_logged": after, "initial_logged": initial}


def resolve_attacks(version: str, attacks: Sequence[str] | None) -> tuple[list[str], bool]:
    """(attacks to run in the version's order, standard?)."""
    if version not in VERSION_ATTACKS:
        hint = (" ('custom' runs APGD-CE with 5 restarts in pyautoattack 0.2.0; pass "
                "version='standard' with attacks=[...] for a subset)" if version == "custom" else "")
        raise ValueError(f"AutoAttack version must be one of {sorted(VERSION_ATTACKS)}, "
                         f"got {version!r}{hint}")
    full = VERSION_ATTACKS[version]
    if attacks is None:
        return list(full), version == "standard"
    attacks = [str(a).lower() for a in attacks]
    unknown = [a for a in attacks if a not in full]
    if unknown or not attacks:
        raise ValueError(f"attacks {unknown or attacks} are not part of AutoAttack version "
                         f"{version!r}; choose a non-empty subset of {list(full)}")
    # the version's order, so that 'attacks after APGD' keeps its meaning whatever the caller wrote
    chosen = [a for a in full if a in attacks]
    return chosen, version == "standard" and chosen == list(full)


def _tensor_digest(h: hashlib._Hash, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(str((t.dtype, tuple(t.shape))).encode())
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16; the float32 copy is exact
        t = t.float()
    h.update(t.numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """Hash of the state_dict: a shard file written for other weights must not be reused."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        _tensor_digest(h, value)
    return h.hexdigest()[:16]


def data_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    _tensor_digest(h, x)
    _tensor_digest(h, y)
    return h.hexdigest()[:16]


def attack_params(adversary: Any, attacks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What each attack object of a pyautoattack.AutoAttack holds: eps, norm and the settings
    that shape its strength (iterations, restarts, target classes, queries)."""
    out: dict[str, dict[str, Any]] = {}
    for name in attacks:
        obj = getattr(adversary, ATTACK_OBJECTS[name])
        params: dict[str, Any] = {"eps": float(obj.eps), "norm": str(obj.norm)}
        for attr in _ATTACK_SETTINGS:
            if getattr(obj, attr, None) is not None:
                params[attr] = int(getattr(obj, attr))
        out[name] = params
    return out


def _run_shard(adversary: Any, x: torch.Tensor, y: torch.Tensor, batch_size: int,
               seed: int, device: str | torch.device,
               forward: Callable[[logging.LogRecord], None] | None = None) -> dict[str, Any]:
    """One bare run_standard_evaluation with log and warning capture. Module-level so tests can
    count calls to it."""
    attacks = list(adversary.attacks_to_run)
    with torch.random.fork_rng(devices=fork_devices(device)), \
            warnings.catch_warnings(record=True) as caught, \
            capture_autoattack_log(forward) as cap:
        # 'default' records each distinct warning once per location instead of once per call,
        # so a warning raised inside an attack loop cannot grow the list without bound.
        warnings.simplefilter("default")
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        seconds = time.perf_counter() - t0
    flags = (y_adv.detach().cpu() == y.detach().cpu())
    moved = (x_adv.detach().cpu() - x.detach().cpu()).abs()
    messages = [r.getMessage() for r in cap.records]
    python_warnings = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    warn_msgs = [r.getMessage() for r in cap.records if r.levelno >= logging.WARNING]
    parsed = parse_log(messages)
    return {"flags": flags, "seconds": seconds, "python_warnings": python_warnings,
            "warnings": list(dict.fromkeys(warn_msgs + python_warnings)),
            "log": [m for m in messages if "robust accuracy" in m or "initial accuracy" in m],
            "attack_params": attack_params(adversary, attacks),
            "eps": float(adversary.epsilon), "attacks_run": attacks,
            "max_perturbation": float(moved.max()) if moved.numel() else 0.0,
            **parsed}


def _shard_path(state_dir: Path, start: int, end: int) -> Path:
    return state_dir / f"shard_{start:07d}_{end:07d}.json"


def _forwarder(prefix: str, level: int) -> Callable[[logging.LogRecord], None]:
    def forward(record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            log.warning("%s: %s", prefix, msg)
        elif _RE_PROGRESS.match(msg):
            log.log(level, "%s: %s", prefix, msg)
    return forward


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                   norm: str = "Linf", version: str = "standard",
                   attacks: Sequence[str] | None = None, seed: int = 0, batch_size: int = 250,
                   shard_size: int | None = None, state_dir: str | Path | None = None,
                   device: str | torch.device = "cpu", progress: bool = True,
                   shards: Sequence[int] | None = None) -> dict[str, Any]:
    """AutoAttack on the images x (in [0, 1], test order) with labels y.

    Returns {flags (BoolTensor, per image), correct, n, acc (fraction), version, attacks,
    standard, warnings, robust_after ({attack: acc after it, fraction}), clean_acc,
    lowered_after_apgd, lowered_by, perturbed ({attack: images it broke}), eps, norm, seed,
    batch_size, shard_size, n_shards, resumed_shards, attack_params ({attack: what its object
    held}), max_perturbation (largest L-inf distance of an adversarial image from its original),
    seconds (the whole call), attack_seconds (inside pyautoattack's run_standard_evaluation;
    seconds - attack_seconds is our overhead)}.

    ``shards`` (indices) runs only those shards and writes their files into ``state_dir``: a shard
    job of a multi-GPU run; it returns {shards, n_shards, resumed_shards, seconds}, and the
    evaluation that follows finds every shard done.

    Progress (per shard, and per attack and batch as pyautoattack reports it) goes to this
    module's logger at INFO (DEBUG with progress=False). The model must already be on
    ``device`` and ready for evaluation (see benchmark.evaluation.readiness.prepare_for_eval); a model with
    a module in training mode is refused.
    """

    assert_eval_ready(model)
    if seed is None:
        raise ValueError("AutoAttack needs an explicit seed: seed=None seeds from the clock")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y hold different numbers of images: {x.shape[0]} vs {y.shape[0]}")
    attacks_run, standard = resolve_attacks(version, attacks)
    n = int(x.shape[0])
    shard = n if shard_size is None else int(shard_size)
    if shard <= 0 and n > 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    y = y.long()
    bounds = [(s, min(s + shard, n)) for s in range(0, n, shard)] if n else []
    level = logging.INFO if progress else logging.DEBUG

    state = Path(state_dir) if state_dir is not None else None
    if shards is not None and state is None:
        raise ValueError("running only some shards needs a state_dir to write them into")
    fingerprint = None
    if state is not None:
        state.mkdir(parents=True, exist_ok=True)
        # a batch larger than the shard attacks the whole shard at once, as the shard's size
        # does: only the effective batch shapes the draws (a shard job and the evaluation may
        # choose different batch sizes from their free memory)
        fingerprint = {"format": SHARD_FORMAT, "eps": float(eps), "norm": norm, "version": version,
                       "attacks": attacks_run, "seed": int(seed),
                       "batch_size": min(int(batch_size), shard), "shard_size": shard, "n": n,
                       "model": model_digest(model)}

    flags = torch.zeros(n, dtype=torch.bool)
    perturbed = {a: 0 for a in attacks_run}
    logged_after: dict[str, list[float]] = {a: [] for a in attacks_run}
    warn_list: list[str] = []
    params: dict[str, dict[str, Any]] | None = None
    max_perturbation = 0.0
    resumed = 0
    attack_seconds = 0.0
    t_start = time.perf_counter()
    log.log(level, "AutoAttack %s (%s), eps %g, %d images in %d shard(s)", version,
            ", ".join(attacks_run), eps, n, len(bounds))
    for i, (start, end) in enumerate(bounds):
        if shards is not None and i not in shards:
            continue
        xs, ys = x[start:end], y[start:end]
        label = f"AutoAttack shard {i + 1}/{len(bounds)} (images {start}-{end})"
        path = _shard_path(state, start, end) if state is not None else None
        rec = None
        if path is not None and path.exists():
            rec = _load_shard(path, {**fingerprint, "data": data_digest(xs, ys)}, end - start)
            if rec is not None:
                resumed += 1
                log.log(level, "%s: resumed from %s", label, path)
        if rec is None:
            digest = data_digest(xs, ys) if path is not None else None
            log.log(level, "%s: started", label)
            # a fresh wrapper per shard: a resumed shard then runs exactly as it would have in
            # the uninterrupted evaluation, whatever state the attack objects keep between calls
            adversary = AutoAttack(model, eps=eps, norm=norm, seed=seed, version=version,
                                   device=device)
            adversary.attacks_to_run = list(attacks_run)
            out = _run_shard(adversary, xs, ys, batch_size, seed, device, _forwarder(label, level))
            attack_seconds += out["seconds"]
            rec = {"format": SHARD_FORMAT, "start": start, "end": end,
                   "flags": flags_to_str(out["flags"]), "perturbed": out["perturbed"],
                   "robust_after_logged": out["robust_after_logged"],
                   "initial_logged": out["initial_logged"], "warnings": out["warnings"],
                   "log": out["log"], "seconds": out["seconds"],
                   "eps": out["eps"], "attacks_run": out["attacks_run"],
                   "attack_params": out["attack_params"],
                   "max_perturbation": out["max_perturbation"]}
            if path is not None:
                rec["fingerprint"] = {**fingerprint, "data": digest}
                atomic_write_json(path, rec)
            for msg in out["python_warnings"]:  # the wrapper's own were logged as they came
                log.warning("%s: %s", label, msg)
        if rec["attacks_run"] != attacks_run or rec["eps"] != float(eps):
            raise RuntimeError(f"{label} ran attacks {rec['attacks_run']} at eps {rec['eps']}, "
                               f"not the requested {attacks_run} at eps {float(eps)}")
        if params is None:
            params = rec["attack_params"]
        elif rec["attack_params"] != params:
            raise RuntimeError(f"{label} ran with attack settings {rec['attack_params']}, the "
                               f"earlier shards with {params}")
        max_perturbation = max(max_perturbation, float(rec["max_perturbation"]))
        flags[start:end] = str_to_flags(rec["flags"], as_tensor=True)
        for a, k in rec["perturbed"].items():
            perturbed[a] = perturbed.get(a, 0) + int(k)
        for a, pct in rec["robust_after_logged"].items():
            logged_after.setdefault(a, []).append(pct)
        warn_list.extend(m for m in rec["warnings"] if m not in warn_list)
        done, elapsed = i + 1, time.perf_counter() - t_start
        eta = elapsed / done * (len(bounds) - done)
        log.log(level, "%s: %d/%d robust; %d/%d shards done, %.0f s elapsed, ETA %.0f s", label,
                int(flags[start:end].sum()), end - start, done, len(bounds), elapsed, eta)

    if shards is not None:
        return {"shards": sorted(i for i in shards if 0 <= i < len(bounds)), "n_shards": len(bounds),
                "resumed_shards": resumed, "seconds": time.perf_counter() - t_start}

    correct = int(flags.sum())
    robust_after, remaining = {}, correct
    # accuracy after attack k = final correct + images broken by the attacks that ran after k;
    # exact counts, unlike the logged percentages (2 decimals, per shard)
    for a in reversed(attacks_run):
        robust_after[a] = remaining / n if n else float("nan")
        remaining += perturbed.get(a, 0)
    robust_after = {a: robust_after[a] for a in attacks_run}
    clean_correct = remaining
    lowered_by = [a for a in attacks_run if a not in APGD_ATTACKS and perturbed.get(a, 0) > 0
                  and any(b in APGD_ATTACKS for b in attacks_run[:attacks_run.index(a)])]
    if len(bounds) == 1:
        # cross-check the exact counts against the log on the single-shard path: a mismatch
        # means the wrapper's log format changed and robust_after can no longer be trusted
        for a, pcts in logged_after.items():
            if pcts and a in robust_after and abs(pcts[-1] - 100 * robust_after[a]) > 0.006:
                warn_list.append(f"log parse mismatch for {a}: logged {pcts[-1]}%, counted "
                                 f"{100 * robust_after[a]:.2f}%")
    if not standard:
        log.info("AutoAttack run is non-standard: version %s, attacks %s", version, attacks_run)
    return {
        "flags": flags, "correct": correct, "n": n, "acc": correct / n if n else float("nan"),
        "version": version, "attacks": attacks_run, "standard": standard, "warnings": warn_list,
        "robust_after": robust_after, "clean_acc": clean_correct / n if n else float("nan"),
        "lowered_after_apgd": bool(lowered_by), "lowered_by": lowered_by,
        "perturbed": {a: perturbed.get(a, 0) for a in attacks_run},
        "eps": float(eps), "norm": norm, "seed": int(seed), "batch_size": int(batch_size),
        "shard_size": shard_size, "n_shards": len(bounds), "resumed_shards": resumed,
        "attack_params": params or {}, "max_perturbation": max_perturbation,
        "seconds": time.perf_counter() - t_start, "attack_seconds": attack_seconds,
    }


def _load_shard(path: Path, fingerprint: dict[str, Any], size: int) -> dict[str, Any] | None:
    """The shard record if it was written by this configuration, else None (it is recomputed)."""
    try:
        rec = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable AutoAttack shard %s: %s", path, exc)
        return None
    if rec.get("fingerprint") != fingerprint or len(rec.get("flags", "")) != size:
        log.warning("AutoAttack shard %s was written by another configuration (model, data, eps, "
                    "attacks, seed, batch size or shard format differ); recomputing it", path)
        return None
    return rec
