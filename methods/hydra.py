"""HYDRA (Sehwag et al., NeurIPS 2020): learned importance scores, layer-wise top-k.

Scores start at the scaled init sqrt(6 / fan_in) * w / max|w| (so the first mask is layer-wise
magnitude pruning), every layer keeps the same fraction k, and the scores are trained with the
robust loss while the weights stay frozen; then the remaining weights are finetuned.
"""
from benchmark.core.registry import register_method

from .base import PruningMethod


@register_method("hydra", learns_scores=True, needs_pretrain=True, needs_finetune=True,
                 paper={"key": "Sehwag2020Hydra",
                        "name": "HYDRA: Pruning Adversarially Robust Neural Networks",
                        "authors": "Vikash Sehwag, Shiqi Wang, Prateek Mittal, Suman Jana",
                        "venue": "NeurIPS 2020",
                        "link": "https://arxiv.org/abs/2002.10509"})
class Hydra(PruningMethod):
    """The contract's defaults are HYDRA: nothing to override."""
