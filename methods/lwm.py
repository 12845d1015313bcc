"""Layer-wise magnitude pruning: HYDRA's scaled init with the scores frozen, then the same finetune.

The scaled init is a per-layer positive rescaling of |w|, so its per-layer top-k is exactly the
layer's magnitude top-k: a free baseline that shares every line of HYDRA's machinery.
"""
from benchmark.core.registry import register_method

from .base import PruningMethod


@register_method("lwm", learns_scores=False, needs_pretrain=True, needs_finetune=True,
                 paper={"key": "Han2015Learning",
                        "name": "Learning both Weights and Connections for Efficient Neural Networks",
                        "authors": "Song Han, Jeff Pool, John Tran, William J. Dally",
                        "venue": "NeurIPS 2015",
                        "link": "https://arxiv.org/abs/1506.02626"})
class LayerwiseMagnitude(PruningMethod):
    """HYDRA's scaled init, never trained (learns_scores=False): the magnitude top-k per layer."""
