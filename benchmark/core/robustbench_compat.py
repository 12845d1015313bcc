"""Importing ``robustbench`` (the optional extra) next to PyPI's ``pyautoattack``.

robustbench 1.1.1 imports ``from autoattack import AutoAttack`` and ``autoattack.state``, the
module name of the git-only fra31/auto-attack package, and calls its old API
(``AutoAttack(model, norm=, eps=, version=, device=, log_path=)``,
``run_standard_evaluation(x, y, bs=, state_path=)``). PyPI's ``pyautoattack`` 0.2.0 ships the same
code as module ``pyautoattack`` with keyword-only arguments, ``batch_size`` for ``bs`` and no
``log_path``.

``import_robustbench()`` registers, for this process only, a module named ``autoattack`` that
adapts the old API to pyautoattack, then imports robustbench. Why this and not the alternatives:
editing site-packages is off limits; a ``.pth`` hook would change every Python process of the
environment; and a top-level ``autoattack`` package installed with the suite would collide with a
real fra31/auto-attack install. When a real ``autoattack`` module is importable, it is used as is.

robustbench 1.1.1 also needs ``pkg_resources`` (setuptools < 81, pinned by the extra) and pins
timm 1.0.9 (the suite's models work with it). Its wheel installs a top-level ``tests`` package;
the suite's tests do not import a package named ``tests`` (pytest runs with
``--import-mode=importlib`` and tests/ has no ``__init__.py``), so nothing here is shadowed.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

SHIM_NAME = "autoattack"


class RobustBenchUnavailable(ImportError):
    """The optional extra is not installed; the message says how to install it."""


def _shim_module() -> types.ModuleType:
    import pyautoattack  # deferred: pyautoattack
    import pyautoattack.state as state  # deferred: pyautoattack

    class AutoAttack(pyautoattack.AutoAttack):
        """fra31/auto-attack's call signature on top of pyautoattack's."""

        def __init__(self, model, norm: str = "Linf", eps: float = 0.3, seed: int | None = None,
                     verbose: bool = True, attacks_to_run: list | None = None,
                     version: str = "standard", is_tf_model: bool = False, device: str = "cuda",
                     log_path: str | None = None):
            if is_tf_model:
                raise NotImplementedError("pyautoattack evaluates PyTorch models only")
            # version 'custom' takes its attack list at construction in pyautoattack
            attacks = list(attacks_to_run) if (version == "custom" and attacks_to_run) else None
            super().__init__(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed,
                             version=version)
            if attacks_to_run and version != "custom":
                self.attacks_to_run = list(attacks_to_run)
            self.log_path = log_path

        def run_standard_evaluation(self, x_orig, y_orig, bs: int = 250, return_labels: bool = False,
                                    state_path: Any = None):
            out = super().run_standard_evaluation(x_orig, y_orig, batch_size=bs, state_path=state_path)
            x_adv, y_adv = out if isinstance(out, tuple) else (out, None)
            return (x_adv, y_adv) if return_labels else x_adv

    module = types.ModuleType(SHIM_NAME, "fra31/auto-attack's API over pyautoattack "
                              "(benchmark.core.robustbench_compat)")
    module.AutoAttack = AutoAttack
    module.state = state
    module.__path__ = []  # a package, so `import autoattack.state` resolves through sys.modules
    module.__version__ = getattr(pyautoattack, "__version__", "unknown")
    return module


def ensure_autoattack_module() -> types.ModuleType:
    """``autoattack`` in sys.modules: the real package when installed, else the adapter."""
    if SHIM_NAME in sys.modules:
        return sys.modules[SHIM_NAME]
    if importlib.util.find_spec(SHIM_NAME) is not None:
        return importlib.import_module(SHIM_NAME)
    module = _shim_module()
    sys.modules[SHIM_NAME] = module
    sys.modules[f"{SHIM_NAME}.state"] = module.state
    return module


def import_robustbench() -> types.ModuleType:
    """``import robustbench`` with its ``autoattack`` import resolved; a clear error when the
    extra is missing."""
    if importlib.util.find_spec("robustbench") is None:
        raise RobustBenchUnavailable(
            "robustbench is not installed; install the extra: pip install -e '.[robustbench]'")
    ensure_autoattack_module()
    try:
        return importlib.import_module("robustbench")
    except ModuleNotFoundError as exc:
        hint = (" (robustbench 1.1.1 needs setuptools<81 for pkg_resources)"
                if exc.name == "pkg_resources" else "")
        raise RobustBenchUnavailable(f"robustbench does not import: {exc}{hint}; reinstall the "
                                     "extra: pip install -e '.[robustbench]'") from exc


__all__ = ["import_robustbench", "ensure_autoattack_module", "RobustBenchUnavailable"]
