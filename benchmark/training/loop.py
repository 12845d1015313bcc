"""The epoch loop shared by pretraining, mask search and finetuning.

Long because resuming must cover every piece of the loop's state (weights, optimiser, scheduler,
RNG, hooks), kept in the class that owns it.

Checkpoints after every epoch hold everything that shapes the future (weights, scores, rates,
masks, optimiser momentum, scheduler, epoch, RNG states as tensors, the sampler's generator and
every hook's state), so a killed job resumes to the same weights as an uninterrupted one.
Methods change the loop only through hooks (``TrainHook``): an extra loss term (HARP's rate
hinge), a replacement for the gradient computation (S2AP's two passes, AWP), work after each
optimiser step (refreshing masks) and at epoch ends.

Progress goes to the ``benchmark.training.loop`` logger: one line per epoch with an ETA (what a job log
shows), a tqdm bar on terminals only. SIGTERM or SIGINT stop the loop between two optimiser steps
(never inside a checkpoint write) with ``Interrupted``; the checkpoint of the last completed epoch
stays, and rerunning the command resumes from it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from benchmark.core.choices import KEEP_RULES, SCHEDULES
from benchmark.core.errors import ConfigError, Interrupted
from benchmark.core.io import atomic_torch_save, load_checkpoint
from benchmark.core.masking import scores_frozen
from benchmark.evaluation.attacks import AttackConfig, pgd_linf
from benchmark.runtime.progress import Eta, duration, in_epoch_interval, show_bars
from benchmark.runtime.signals import StopRequest, signal_name
from benchmark.training.losses import AdvBatch, RobustLoss

logger = logging.getLogger(__name__)

# Test hooks, both "<desc>:<n>": exit abruptly (as a kill would) right after the checkpoint of epoch
# n is saved; send this process SIGTERM right after optimiser step n (counted over the whole fit).
CRASH_ENV = "APBENCH_CRASH_AFTER_EPOCH"
SIGTERM_ENV = "APBENCH_SIGTERM_AFTER_STEP"


@dataclass
class TrainConfig:
    epochs: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    loss: str = "pgd_at"
    trades_beta: float = 6.0
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(0.0, 0, 0.0))
    val_attack_steps: int = 10
    schedule: str = "cosine"
    adv_eval_mode: bool = True
    train_bn: bool = True
    nesterov: bool = False
    # opt-in options (benchmark/core/recipes.py TRAIN_OPTION_DEFAULTS): their defaults keep the loop as
    # it was. keep: last | best_val (the epoch with the best validation PGD accuracy once every
    # hook allows selection, HARP: once its budget is met); bn_refresh: an extra natural forward
    # in train mode per minibatch (public HYDRA/HARP trainer/adv.py), which moves the BatchNorm
    # running statistics; free_replays: free adversarial training's m (loss "free")
    keep: str = "last"
    bn_refresh: bool = False
    free_replays: int = 1

    @classmethod
    def from_dict(cls, d: dict, default_attack: AttackConfig) -> TrainConfig:
        d = dict(d)
        a = dict(d.pop("attack", None) or {})
        attack = AttackConfig(
            eps=default_attack.eps if a.get("eps") is None else float(a["eps"]),
            steps=default_attack.steps if a.get("steps") is None else int(a["steps"]),
            step_size=default_attack.step_size if a.get("step_size") is None else float(a["step_size"]),
        )
        known = {f for f in cls.__dataclass_fields__} - {"attack"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join('train.' + k for k in sorted(unknown))}; "
                              f"valid: {', '.join(sorted(known | {'attack'}))}")
        missing = {f for f, spec in cls.__dataclass_fields__.items()
                   if spec.default is spec.default_factory is MISSING} - set(d) - {"attack"}
        if missing:
            raise ConfigError(f"training option(s) {', '.join('train.' + k for k in sorted(missing))} "
                              "must be set")
        return cls(attack=attack, **d)


class TrainHook:
    """What a method (or the S2AP plug-in) may change in the loop; every method here is optional."""

    #: a hook that overrides ``backward`` computes the gradients itself
    overrides_backward = False

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def extra_loss(self, trainer: Trainer) -> torch.Tensor | None:
        return None

    def backward(self, trainer: Trainer, batch: AdvBatch) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, record: dict) -> None: ...

    def selection_allowed(self, trainer: Trainer) -> bool:
        """Whether the epoch just ended may be kept by ``keep: best_val`` (HARP: only once its
        budget is met, as the public train.py counts a best epoch only after the hinge is 0)."""
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self, history: list[dict]) -> dict:
        """What the hook measured over the whole fit (from the epoch records it wrote), for the
        stage's diagnostics; computed from ``history`` so it survives a resume."""
        return {}


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last,
                      pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)


def build_optimizer(params: Sequence, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad] if not isinstance(params[0], dict) else params
    if not params:
        raise ValueError("no trainable parameters for this stage")
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    # stepped once per epoch, as HYDRA, HARP and RST do
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=_one)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=StepDecay(cfg.epochs))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; valid choices: {', '.join(SCHEDULES)}")


def _one(_epoch: int) -> float:
    return 1.0


class StepDecay:
    """RST's piecewise schedule (its CIFAR configs: lr x0.1 at epochs 80 and 120 of 160): epoch e
    (0-based) trains at lr * 0.1 ** (number of milestones 0.5 * epochs, 0.75 * epochs that e has
    reached). A callable object, not a closure, so the scheduler's state_dict can hold it."""

    MILESTONES = (0.5, 0.75)

    def __init__(self, epochs: int):
        self.epochs = int(epochs)

    def __call__(self, epoch: int) -> float:
        return 0.1 ** sum(epoch >= f * self.epochs for f in self.MILESTONES)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


@torch.no_grad()
def _count_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


def validate(model: nn.Module, loader: DataLoader, attack: AttackConfig | None, device: torch.device) -> dict:
    """Clean and PGD accuracy on the validation slice (model in eval mode, RNG forked)."""
    was_training = model.training
    model.eval()
    n = clean = robust = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), scores_frozen(model):
        torch.manual_seed(12345)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                clean += _count_correct(model(x), y)
            if attack is not None and attack.steps > 0:
                x_adv = pgd_linf(model, x, y, attack)
                with torch.no_grad():
                    robust += _count_correct(model(x_adv), y)
            n += len(y)
    model.train(was_training)
    out = {"val_clean": clean / max(n, 1), "val_n": n}
    if attack is not None and attack.steps > 0:
        out["val_pgd"] = robust / max(n, 1)
    return out


class Trainer:
    def __init__(self, model: nn.Module, params, cfg: TrainConfig, *, train_set: Dataset,
                 val_set: Dataset | None, device: torch.device, seed: int,
                 state_path: str | Path | None = None, hooks: Sequence[TrainHook] = (),
                 num_workers: int = 0, bf16: bool = False, channels_last: bool = False,
                 desc: str = "train", fingerprint: str = "", log: Callable[[str], None] | None = None):
        self.model = model
        self.cfg = cfg
        self.device = device
        self.seed = seed
        self.hooks = list(hooks)
        if sum(h.overrides_backward for h in self.hooks) > 1:
            raise ValueError("at most one hook may compute the gradients itself")
        self.state_path = Path(state_path) if state_path else None
        self.desc = desc
        self.fingerprint = fingerprint
        self.log = log or logger.info
        self.generator = torch.Generator().manual_seed(seed)
        self.train_loader = make_loader(train_set, cfg.batch_size, shuffle=True, generator=self.generator,
                                        num_workers=num_workers, drop_last=len(train_set) > cfg.batch_size)
        self.val_loader = (make_loader(val_set, 256, shuffle=False, num_workers=num_workers)
                           if val_set is not None and len(val_set) > 0 else None)
        self.params = params
        self.optimizer = build_optimizer(params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        if cfg.keep not in KEEP_RULES:
            raise ConfigError(f"train.keep: unknown rule {cfg.keep!r}; valid: {', '.join(KEEP_RULES)}")
        if cfg.keep == "best_val" and self.val_loader is None:
            raise ConfigError(f"[{desc}] train.keep is best_val, but there is no validation split "
                              "(data.val_size 0): hold out some training images or keep: last")
        self.robust_loss = RobustLoss(cfg.loss, cfg.attack, trades_beta=cfg.trades_beta,
                                      adv_eval_mode=cfg.adv_eval_mode, replays=cfg.free_replays)
        # keep: best_val: the best selectable epoch so far, {"epoch", "val_pgd", "model"}
        self.best: dict | None = None
        self.bf16 = bf16 and device.type == "cuda"
        self.channels_last = channels_last and device.type == "cuda"
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.history: list[dict] = []

    # -- gradient computation ------------------------------------------------------------------
    def autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def compute_loss(self, batch: AdvBatch) -> torch.Tensor:
        """Robust loss plus every hook's extra term (HARP's rate hinge)."""
        with self.autocast():
            loss, _ = self.robust_loss.loss(self.model, batch)
        for hook in self.hooks:
            extra = hook.extra_loss(self)
            if extra is not None:
                loss = loss + extra
        return loss

    def _backward(self, batch: AdvBatch) -> torch.Tensor:
        for hook in self.hooks:
            if hook.overrides_backward:
                return hook.backward(self, batch)
        loss = self.compute_loss(batch)
        loss.backward()
        return loss.detach()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cfg.bn_refresh and self.model.training:
            with torch.no_grad(), self.autocast():
                self.model(x)
        for _ in range(self.robust_loss.replays):  # 1, except free adversarial training
            with self.autocast():
                batch = self.robust_loss.prepare(self.model, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._backward(batch)
            self.robust_loss.after_backward()
            self.optimizer.step()
            for hook in self.hooks:
                hook.after_step(self)
            self.global_step += 1
        return float(loss)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "hooks": [h.state_dict() for h in self.hooks],
            "history": json.dumps(self.history),
            **({"best": self.best} if self.cfg.keep == "best_val" else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        for hook, hstate in zip(self.hooks, state["hooks"]):
            hook.load_state_dict(hstate)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = json.loads(state["history"])
        self.best = state.get("best")

    def try_resume(self) -> bool:
        if self.state_path is None or not self.state_path.is_file():
            return False
        state = load_checkpoint(self.state_path, map_location=str(self.device),
                                remedy=f"to start this stage over, delete it: rm {self.state_path}")
        if state.get("fingerprint") != self.fingerprint:
            self.log(f"[{self.desc}] ignoring checkpoint {self.state_path}: it was made by another config")
            return False
        self.load_state_dict(state)
        self.log(f"[{self.desc}] resumed from {self.state_path} after epoch {self.epoch}")
        return True

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        self.try_resume()
        for hook in self.hooks:
            hook.on_fit_start(self)
        val_attack = AttackConfig(self.cfg.attack.eps, self.cfg.val_attack_steps, self.cfg.attack.step_size) \
            if self.cfg.val_attack_steps > 0 else None
        epochs, steps = self.cfg.epochs, len(self.train_loader)
        if self.epoch >= epochs:
            self.log(f"[{self.desc}] all {epochs} epochs done already ({self.state_path})")
            return self._keep()
        self.log(f"[{self.desc}] training epochs {self.epoch + 1}..{epochs} of {epochs}, {steps} steps "
                 f"of {self.cfg.batch_size} images each")
        eta = Eta(epochs, done=self.epoch)
        with StopRequest() as stop:
            while self.epoch < epochs:
                try:
                    record = self._run_epoch(stop, val_attack)
                except Exception as exc:
                    if stop.requested:  # e.g. a DataLoader worker that got the same SIGTERM
                        raise self._interrupted(stop, mid_epoch=True) from exc
                    raise
                if record is None:  # stopped between two steps: the previous checkpoint stays
                    raise self._interrupted(stop, mid_epoch=True)
                self._consider(record)
                self.history.append(record)
                self.epoch += 1
                self.log(f"[{self.desc}] epoch {self.epoch}/{epochs} " + " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items() if k not in ("epoch", "time_s")) + f" | {eta.line(self.epoch)}")
                if self.state_path is not None:
                    # a signal arriving now only sets the flag: the write completes
                    atomic_torch_save(self.state_dict(), self.state_path)
                    if os.environ.get(CRASH_ENV) == f"{self.desc}:{self.epoch}":
                        os._exit(9)
                if stop.requested:  # arrived during validation or the checkpoint write
                    raise self._interrupted(stop, mid_epoch=False)
        self.log(f"[{self.desc}] {epochs} epochs done in {duration(eta.elapsed())}")
        return self._keep()

    # -- keep: best_val --------------------------------------------------------------------------
    def _consider(self, record: dict) -> None:
        if self.cfg.keep != "best_val":
            return
        allowed = all(h.selection_allowed(self) for h in self.hooks)
        record["selectable"] = allowed
        score = record.get("val_pgd", record.get("val_clean"))
        if allowed and score is not None and (self.best is None or score > self.best["score"]):
            self.best = {"epoch": int(record["epoch"]), "score": float(score),
                         "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    def _keep(self) -> list[dict]:
        """The history, with the model set to the kept epoch (keep: best_val) and that epoch's
        record marked ``kept``; with no selectable epoch (a budget never met) the last is kept
        and says so."""
        if self.cfg.keep != "best_val" or not self.history:
            return self.history
        for record in self.history:
            record.pop("kept", None)
        if self.best is None:
            self.history[-1]["kept"] = "last (no epoch met the selection rule)"
            self.log(f"[{self.desc}] keep best_val: no epoch was selectable; the last is kept")
            return self.history
        self.model.load_state_dict(self.best["model"])
        self.history[self.best["epoch"] - 1]["kept"] = True
        self.log(f"[{self.desc}] keep best_val: epoch {self.best['epoch']} (validation "
                 f"{self.best['score']:.4f})")
        return self.history

    def _run_epoch(self, stop: StopRequest, val_attack: AttackConfig | None) -> dict | None:
        """One pass over the training data, then validation: the epoch's record, or None when a
        stop was requested before the last step."""
        epoch, epochs = self.epoch, self.cfg.epochs
        self.model.train()
        self.robust_loss.start_epoch()
        for hook in self.hooks:
            hook.on_epoch_start(self, epoch)
        t0 = time.perf_counter()
        total, batches = 0.0, 0
        steps = len(self.train_loader)
        bar = tqdm(self.train_loader, desc=f"{self.desc} epoch {epoch + 1}/{epochs}",
                   leave=False, disable=not show_bars(), mininterval=2.0)
        interval, last_line = in_epoch_interval(), t0
        signal_at = os.environ.get(SIGTERM_ENV, "")
        for x, y in bar:
            loss = self.train_step(x, y)
            if signal_at == f"{self.desc}:{self.global_step}":
                os.kill(os.getpid(), signal.SIGTERM)
            if stop.requested:  # between two optimiser steps: the safe point
                bar.close()
                return None
            if not math.isfinite(loss):
                raise FloatingPointError(f"[{self.desc}] loss is {loss} at epoch {epoch + 1}")
            total += loss
            batches += 1
            bar.set_postfix(loss=f"{total / batches:.3f}")
            if interval and time.perf_counter() - last_line >= interval and batches < steps:
                last_line = time.perf_counter()
                self.log(f"[{self.desc}] epoch {epoch + 1}/{epochs} step {batches}/{steps} "
                         f"loss={total / batches:.4g} | {Eta(steps, unit='step', start=t0).line(batches)}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        record = {"epoch": epoch + 1, "loss": total / max(batches, 1), "lr": lr,
                  "time_s": time.perf_counter() - t0}
        if self.val_loader is not None:
            record.update(validate(self.model, self.val_loader, val_attack, self.device))
        for hook in self.hooks:
            hook.on_epoch_end(self, epoch, record)
        return record

    def _interrupted(self, stop: StopRequest, mid_epoch: bool) -> Interrupted:
        name = signal_name(stop.signum or signal.SIGTERM)
        where = (f"during epoch {self.epoch + 1}/{self.cfg.epochs} (after step {self.global_step})"
                 if mid_epoch else f"after epoch {self.epoch}/{self.cfg.epochs}")
        if self.state_path is None:
            kept = "no resume checkpoint is kept (no --state-dir): a rerun starts over"
        elif self.epoch == 0:
            kept = "no epoch was complete: a rerun starts from the first"
        else:
            kept = (f"the checkpoint after epoch {self.epoch} is kept in {self.state_path}: rerun the "
                    "same command to resume from it")
        return Interrupted(f"[{self.desc}] stopped by {name} {where}; {kept}", stop.signum or signal.SIGTERM)
