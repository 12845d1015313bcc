"""Add your method: a worked example that lives OUTSIDE the built-in registry.

"hydra_global" is HYDRA with a global layer allocation: the scores start at HYDRA's scaled init
and are trained the same way, but each layer keeps the fraction that ONE global magnitude top-k
gives it at the target, instead of the same fraction everywhere. It learns scores, so the
workflow runs it with and without S2AP and the leaderboard shows its Orig. / S2AP / delta columns.

How to add a method
1. Write one class that subclasses ``methods.base.PruningMethod`` and decorate it with
   ``@register_method("your_name", ...)``. Put the file either in ``methods/`` (built in) or
   anywhere else and list it in a preset:

       method_files: [examples/my_method.py]
       grid:
         methods: [hydra, hydra_global]

   The registry finds the name by reading the decorator from the source (no import), so the name
   shows up in the schema's list of valid methods, in the Snakemake DAG and in the leaderboard
   with no other edit. (A pip-installed package can instead declare an entry point in the group
   ``adversarial_pruning.methods``.)
2. Declare three traits as literal keywords of the decorator (the workflow reads them from the
   source, without running the file): ``learns_scores`` (True: the mask search trains scores,
   S2AP applies), ``needs_pretrain`` (False: prune random weights, as RST), ``needs_finetune``.
   Each defaults to True; the decorator sets them as class attributes.
3. Override only what differs from HYDRA's defaults (see methods/base.py):
   ``prepare_weights`` (weights when there is no dense model), ``setup_layers`` (extra parameters
   on the masked layers, before a checkpoint loads), ``init_scores(model, ctx)`` (the starting
   scores; ``ctx`` holds the search's generator, the device, training batches and the robust
   loss, and the weights to prune are already loaded: examples/snip_method.py starts from one
   adversarial batch), ``init_rates`` (each layer's keep fraction), ``search_params`` /
   ``search_hooks`` (what the search trains; extra loss terms and per-step work via a
   ``TrainHook``), ``finalize_search``, ``finetune_hooks``. S2AP's hooks are added by the stages
   for every score-learning method. Options a preset may set under
   ``methods.your_name.options`` are declared in ``default_options``; unknown keys are refused.
4. Run the contract tests on your file: ``APBENCH_METHOD_FILES=path/to/yours.py python -m pytest
   tests/test_methods_contract.py`` (or ``--method-file path/to/yours.py``); they run every
   registered method, both examples and the files you name through set-up, a short search,
   export and a checkpoint round trip.
"""
from __future__ import annotations

import torch.nn as nn

from benchmark import masking
from benchmark.registry import register_method
from methods.base import PruningMethod, keep_global_counts


@register_method("hydra_global", learns_scores=True, needs_pretrain=True, needs_finetune=True)
class HydraGlobal(PruningMethod):
    def init_rates(self, model: nn.Module) -> None:
        # one top-k over |w| of all layers decides how many weights each layer keeps, and each
        # layer then keeps exactly that many by its learned scores
        keep_global_counts(model, (layer.weight for _, layer in masking.masked_layers(model)),
                           self.keep)
