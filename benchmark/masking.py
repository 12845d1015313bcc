"""Compatibility path: ``benchmark.masking`` is ``benchmark.core.masking`` (the documented import path of
method files and user scripts, kept when the modules moved into subpackages)."""
import sys

from benchmark.core import masking as _module

sys.modules[__name__] = _module
