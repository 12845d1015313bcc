"""What a method's ``init_scores`` receives: everything a data-driven start of the search needs.

HYDRA's scaled init reads only the weights, RST draws from a generator, and a SNIP-style method
needs a batch of training data, the robust loss and the device. ``ScoreInitContext`` carries all
of them; the prune stage builds it (``stages.StageTraining.score_init_context``), and
``methods.base.PruningMethod.prepare_search_model`` hands it to ``init_scores``.

When ``init_scores(model, ctx)`` runs:
  * the weights to prune are in place: the dense model's weights are loaded, or, for a method
    without pretraining (RST), ``prepare_weights`` has already drawn its random weights;
  * the model is masked (``to_masked``), the method's own parameters exist (``setup_layers``) and
    everything sits on ``ctx.device``; every masked layer is still in mode "dense", so a forward
    pass uses the full weights and a loss reaches ``layer.weight`` (``layer.scores`` take no
    gradient yet);
  * the global torch RNG is forked around the call and seeded by the search seed, so what it
    draws (a PGD start, dropout) is a function of that seed alone and does not shift the random
    stream the search then trains with.
``init_scores`` writes ``layer.scores`` and nothing else: the weights, buffers and train/eval
flags it finds are the ones the search starts from (the contract tests check this).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, default_collate

from benchmark.training.losses import AdvBatch, RobustLoss


class TrainBatches:
    """Training batches in an order fixed by ``seed``; every call starts the same sequence.

    ``batches()`` yields (x, y) on ``device``, ``batch_size`` images each (the last one may be
    smaller). Each batch is read with the CPU RNG forked and seeded by (seed, batch index), so a
    random augmentation gives the same images on every call, and reading leaves the caller's random
    stream untouched.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __call__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed))
        for index, start in enumerate(range(0, len(order), self.batch_size)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + index) % 2**63)
                x, y = default_collate([self.dataset[int(i)] for i in order[start:start + self.batch_size]])
            yield x.to(self.device), y.to(self.device)


@dataclass(frozen=True)
class ScoreInitContext:
    """The inputs of ``PruningMethod.init_scores`` (see the module docstring for the model's state).

    generator    the search's CPU generator, seeded by the search seed: draw random scores from it
                 (on the CPU, then move them), so a mask does not depend on the device;
    device       where the model and every batch live;
    batches      a ``TrainBatches`` (or any callable returning an iterator of (x, y) on ``device``)
                 over the training split, deterministic under the search seed; None where no data
                 is at hand (a method that needs data then fails with a clear message);
    robust_loss  the search's robust loss: ``prepare(model, x, y)`` attacks a batch (PGD-AT or
                 TRADES inputs, the model in eval mode, scores frozen) and ``loss(model, batch)``
                 returns (loss, logits) of the training objective on it; None with ``batches``.
    """

    generator: torch.Generator
    device: torch.device = torch.device("cpu")
    batches: TrainBatches | None = None
    robust_loss: RobustLoss | None = None

    def first_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first training batch of the search seed's order."""
        if self.batches is None:
            raise ValueError("this method's init_scores needs training data, but its ScoreInitContext "
                             "has no batches (build it with batches=TrainBatches(train_set, ...))")
        return next(iter(self.batches()))

    def adversarial_batch(self, model: torch.nn.Module) -> AdvBatch:
        """The first training batch, attacked with the search's robust loss against ``model``."""
        x, y = self.first_batch()
        if self.robust_loss is None:
            raise ValueError("this method's init_scores needs the robust loss, but its ScoreInitContext "
                             "has none (build it with robust_loss=RobustLoss(...))")
        return self.robust_loss.prepare(model, x, y)
