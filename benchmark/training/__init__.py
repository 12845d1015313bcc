"""The four stages and the training they are made of: the epoch loop, the robust losses, score
initialisation, S2AP's score perturbation, search diagnostics, the stage functions.

``benchmark.training`` was the epoch loop's module before the subpackages: a method file written
against it (``from benchmark.training import TrainConfig, TrainHook``) keeps working, without
importing the loop for callers that need only one of the other modules.
"""


import importlib


def __getattr__(name: str):
    # on first use only: the loop imports torch and the losses, which most callers do not need
    loop = importlib.import_module("benchmark.training.loop")
    try:
        return getattr(loop, name)
    except AttributeError:
        raise AttributeError(f"module 'benchmark.training' has no attribute {name!r}") from None
