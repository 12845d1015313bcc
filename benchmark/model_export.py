"""Compatibility path: ``benchmark.model_export`` is ``benchmark.core.model_files`` (the documented import path of
method files and user scripts, kept when the modules moved into subpackages)."""
import sys

from benchmark.core import model_files as _module

sys.modules[__name__] = _module
