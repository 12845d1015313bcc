"""Compatibility path: ``benchmark.registry`` is ``benchmark.core.registry`` (the documented import path of
method files and user scripts, kept when the modules moved into subpackages)."""
import sys

from benchmark.core import registry as _module

sys.modules[__name__] = _module
