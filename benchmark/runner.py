"""Compatibility path: ``python -m benchmark.runner`` and ``benchmark.runner`` are
``benchmark.runtime.runner`` (the runner's documented command before the subpackages)."""
import sys

from benchmark.runtime import runner as _module

if __name__ == "__main__":
    sys.exit(_module.main())
else:
    sys.modules[__name__] = _module
