"""Name registries that never import torch.

The Snakefile and the config schema need the lists of valid datasets, architectures and methods
before any job runs; importing torch there would cost seconds per parse. A registry therefore maps a
name to the dotted path of its implementation ("package.module:attr") and imports it only when
asked. Methods are discovered by reading source files for a ``@register_method("name")`` decorator,
so a new file in ``methods/`` (or a plugin file named in a preset, or an installed entry point)
shows up in the list of valid choices without any other edit.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

METHOD_ENTRY_POINT_GROUP = "adversarial_pruning.methods"
_METHODS_DIR = Path(__file__).resolve().parent.parent / "methods"


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass
class Registry:
    """Lazily imported implementations, keyed by name."""

    kind: str
    _targets: dict[str, str] = field(default_factory=dict)
    _loaded: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, target: str) -> None:
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} is registered twice: {self._targets[name]} and {target}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def check(self, name: str) -> str:
        if name not in self._targets:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")
        return name

    def get(self, name: str) -> Any:
        self.check(name)
        if name not in self._loaded:
            self._loaded[name] = load_target(self._targets[name])
        return self._loaded[name]


def load_target(target: str) -> Any:
    """Import ``module:attr`` or ``/path/to/file.py:attr``."""
    module_name, _, attr = target.partition(":")
    if module_name.endswith(".py"):
        module = import_file(module_name)
    else:
        module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def import_file(path: str | Path):
    path = Path(path).resolve()
    mod_name = f"_apbench_plugin_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import method plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- datasets and architectures
DATASETS = Registry("dataset")
for _name, _target in {
    "cifar10": "benchmark.datasets:CIFAR10",
    "svhn": "benchmark.datasets:SVHN",
    "imagenet": "benchmark.datasets:IMAGENET",
    "fashion-mnist": "benchmark.datasets:FASHION_MNIST",
}.items():
    DATASETS.add(_name, _target)

ARCHITECTURES = Registry("architecture")
for _name, _target in {
    "small_cnn": "benchmark.models.small_cnn:small_cnn",
    "resnet18": "benchmark.models.resnet:resnet18",
    "vgg16_bn": "benchmark.models.vgg:vgg16_bn",
    "wrn28_4": "benchmark.models.wideresnet:wrn28_4",
    "vit": "benchmark.models.vit:vit",
    "resnet50": "benchmark.models.resnet50:resnet50",
}.items():
    ARCHITECTURES.add(_name, _target)


# ---------------------------------------------------------------- methods
def _decorated_names(path: Path) -> Iterable[str]:
    """Names given to ``@register_method("...")`` in a source file, read without importing it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call)
                    and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "register_method"
                    and deco.args and isinstance(deco.args[0], ast.Constant)):
                found.append((str(deco.args[0].value), node.name))
    return found


def method_registry(plugin_files: Iterable[str | Path] = ()) -> Registry:
    """Every method: built-in files in methods/, plugin files, then installed entry points."""
    reg = Registry("method")
    for path in sorted(_METHODS_DIR.glob("*.py")):
        for name, attr in _decorated_names(path):
            reg.add(name, f"methods.{path.stem}:{attr}")
    for plugin in plugin_files:
        plugin = Path(plugin).resolve()
        if not plugin.is_file():
            raise FileNotFoundError(f"method plugin file not found: {plugin}")
        names = list(_decorated_names(plugin))
        if not names:
            raise ValueError(f"{plugin} defines no @register_method(\"name\") class")
        for name, attr in names:
            reg.add(name, f"{plugin}:{attr}")
    for ep in metadata.entry_points(group=METHOD_ENTRY_POINT_GROUP):
        reg.add(ep.name, ep.value)
    return reg


def register_method(name: str) -> Callable[[type], type]:
    """Marks a method class; discovery reads the decorator from source, this records the name."""

    def wrap(cls: type) -> type:
        cls.name = name
        return cls

    return wrap
