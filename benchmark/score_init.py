"""Compatibility path: ``benchmark.score_init`` is ``benchmark.training.score_init`` (the documented import path of
method files and user scripts, kept when the modules moved into subpackages)."""
import sys

from benchmark.training import score_init as _module

sys.modules[__name__] = _module
