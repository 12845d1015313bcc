"""Name registries that never import torch, nor any method's code.

The Snakefile and the config schema need the lists of valid datasets, architectures and methods
before any job runs; importing torch there would cost seconds per parse, and importing a user's
method file would run their code during a dry run. A registry therefore maps a name to the dotted
path of its implementation ("package.module:attr") and imports it only when asked.

Methods are declared by a decorator whose arguments are literals::

    @register_method("rst", learns_scores=True, needs_pretrain=False, needs_finetune=False)
    class RobustScratchTicket(PruningMethod): ...

``read_method_file`` reads name, class, traits and line from the source with ``ast``, so a new file
in ``methods/`` (or a method file named in a preset, or an installed entry point) is a valid choice
and shapes the DAG without being imported. What needs the class itself (it subclasses the
contract, its attributes say what the decorator says) is checked by ``MethodRegistry.get``, i.e.
when a job loads the method in its own process, before any training.
"""
from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmark.core.paths import REPO_ROOT

METHOD_ENTRY_POINT_GROUP = "adversarial_pruning.methods"
_METHODS_DIR = REPO_ROOT / "methods"

#: What a method is unless its decorator says otherwise: it trains importance scores during the
#: mask search (S2AP applies), starts from the dense pretrained model, and is finetuned after.
TRAIT_DEFAULTS: dict[str, bool] = {"learns_scores": True, "needs_pretrain": True,
                                   "needs_finetune": True}

# The contract every method class subclasses, named rather than imported: benchmark/ never
# imports methods/.
CONTRACT = ("methods.base", "PruningMethod")


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class MethodFileError(ValueError):
    """A method file that cannot be read as a declaration: the message names file and line."""


class MethodContractError(TypeError):
    """A loaded method class that breaks the contract its declaration promises."""


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
    mod_name = f"_apbench_method_file_{path.stem}_{abs(hash(str(path))) % 10**8}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import method file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]  # a retry must run the file again, not get half a module
        raise
    return module


# ---------------------------------------------------------------- datasets and architectures
DATASETS = Registry("dataset")
for _name, _target in {
    "cifar10": "benchmark.core.datasets:CIFAR10",
    "svhn": "benchmark.core.datasets:SVHN",
    "imagenet": "benchmark.core.datasets:IMAGENET",
    "fashion-mnist": "benchmark.core.datasets:FASHION_MNIST",
}.items():
    DATASETS.add(_name, _target)

ARCHITECTURES = Registry("architecture")
for _name, _target in {
    "small_cnn": "benchmark.core.models.small_cnn:small_cnn",
    "resnet18": "benchmark.core.models.resnet:resnet18",
    "vgg16_bn": "benchmark.core.models.vgg:vgg16_bn",
    "wrn28_4": "benchmark.core.models.wideresnet:wrn28_4",
    "vit": "benchmark.core.models.vit:vit",
    "resnet50": "benchmark.core.models.resnet50:resnet50",
}.items():
    ARCHITECTURES.add(_name, _target)


# ---------------------------------------------------------------- methods: the declaration
#: what a method's ``paper=`` states (RobustBench's model-info fields), each a non-empty string
PAPER_FIELDS = ("key", "name", "authors", "venue", "link")


def paper_problem(paper: Any) -> str | None:
    """What is wrong with a ``paper=`` value (None: a dict of the PAPER_FIELDS strings)."""
    if not isinstance(paper, dict):
        return f"must be a dict with keys {', '.join(PAPER_FIELDS)}"
    missing = [k for k in PAPER_FIELDS if not isinstance(paper.get(k), str) or not paper[k].strip()]
    if missing:
        return f"lacks non-empty string(s) {', '.join(missing)}; required: {', '.join(PAPER_FIELDS)}"
    return None


def register_method(name: str, *, learns_scores: bool = TRAIT_DEFAULTS["learns_scores"],
                    needs_pretrain: bool = TRAIT_DEFAULTS["needs_pretrain"],
                    needs_finetune: bool = TRAIT_DEFAULTS["needs_finetune"],
                    paper: dict[str, str] | None = None) -> Callable[[type], type]:
    """Declares a method class: its registry name, its traits and its paper, as literals.

    learns_scores   True when the mask search trains importance scores (S2AP then applies)
    needs_pretrain  False when the method prunes random weights (RST)
    needs_finetune  False when the searched mask is the final model (RST)
    paper           the paper it implements: {"key", "name", "authors", "venue", "link"} (the
                    leaderboard's paper column, the RobustBench export; benchmark.core.papers)

    Discovery reads these arguments from the source (``read_method_file``), so they must be
    written as literals; the decorator sets them as class attributes for the code that runs.
    """
    traits = {"learns_scores": learns_scores, "needs_pretrain": needs_pretrain,
              "needs_finetune": needs_finetune}
    for key, value in traits.items():
        if not isinstance(value, bool):
            raise TypeError(f"@register_method({name!r}): {key} must be True or False, got {value!r}")
    if paper is not None and paper_problem(paper):
        raise TypeError(f"@register_method({name!r}): paper= {paper_problem(paper)}")

    def wrap(cls: type) -> type:
        in_body = [k for k in traits if k in vars(cls)]
        if in_body:
            # two declarations of one fact drift apart; the decorator is the one the workflow reads
            raise MethodContractError(
                f"{cls.__qualname__} sets {', '.join(in_body)} in its class body; declare traits "
                f"only in @register_method({name!r}, ...)")
        if paper is not None and "paper" in vars(cls):
            raise MethodContractError(f"{cls.__qualname__} states its paper in its class body and in "
                                      f"@register_method({name!r}, paper=...); keep the decorator's")
        cls.name = name
        for key, value in traits.items():
            setattr(cls, key, value)
        if paper is not None:
            cls.paper = dict(paper)
        return cls

    return wrap


@dataclass(frozen=True)
class MethodDecl:
    """One ``@register_method`` as written in a source file."""

    name: str
    class_name: str
    traits: dict[str, bool]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _is_register_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "register_method") or (
        isinstance(func, ast.Attribute) and func.attr == "register_method")


def read_method_file(path: str | Path) -> list[MethodDecl]:
    """Every ``@register_method(...)`` of a source file, read without importing it.

    Raises MethodFileError (naming file and line) for a file that does not parse, and for a
    declaration whose name or traits are not literals: the workflow must know them without
    running the file.
    """
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as exc:
        raise MethodFileError(f"{path}: cannot read method file ({exc.strerror or exc})") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise MethodFileError(f"{path}:{exc.lineno}: method file does not parse: {exc.msg}") from None
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if not _is_register_call(deco):
                continue
            where = f"{path}:{deco.lineno}"
            if not isinstance(node, ast.ClassDef):
                raise MethodFileError(f"{where}: @register_method decorates {node.name!r}, which is "
                                      "not a class; a method is a class subclassing PruningMethod")
            if (len(deco.args) != 1 or not isinstance(deco.args[0], ast.Constant)
                    or not isinstance(deco.args[0].value, str) or not deco.args[0].value):
                raise MethodFileError(f"{where}: @register_method needs the method's name as one "
                                      "string literal, e.g. @register_method(\"my_method\")")
            traits = dict(TRAIT_DEFAULTS)
            for kw in deco.keywords:
                if kw.arg == "paper":
                    _read_paper(kw, where)  # benchmark.core.papers reads it; a bad one fails here too
                    continue
                if kw.arg is None:
                    raise MethodFileError(f"{where}: @register_method(**...) cannot be read without "
                                          f"running the file; write {', '.join(TRAIT_DEFAULTS)} "
                                          "as literal keywords")
                if kw.arg not in TRAIT_DEFAULTS:
                    raise MethodFileError(f"{where}: unknown @register_method keyword {kw.arg!r}; "
                                          f"valid: {', '.join(TRAIT_DEFAULTS)}, paper")
                if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool)):
                    raise MethodFileError(
                        f"{where}: {kw.arg}= must be the literal True or False (the workflow reads "
                        f"it without running the file), got `{ast.unparse(kw.value)}`")
                traits[kw.arg] = kw.value.value
            found.append(MethodDecl(deco.args[0].value, node.name, traits, str(path), deco.lineno))
    return found


def _read_paper(kw: ast.keyword, where: str) -> dict[str, str]:
    """The literal ``paper=`` of a declaration; MethodFileError naming the line otherwise."""
    try:
        paper = ast.literal_eval(kw.value)
    except ValueError:
        raise MethodFileError(f"{where}: paper= must be a literal dict (no names, calls or "
                              "f-strings): the leaderboard reads it without running the file") from None
    problem = paper_problem(paper)
    if problem:
        raise MethodFileError(f"{where}: paper= {problem}")
    return {str(k): str(v) for k, v in paper.items()}


def _module_source(module: str) -> Path | None:
    """The source file of ``a.b.c``, found on sys.path without importing ``a`` or ``a.b``."""
    spec, locations = None, None
    for part in module.split("."):
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


# ---------------------------------------------------------------- methods: the registry
@dataclass
class MethodRegistry(Registry):
    """Methods by name, with their declarations; ``get`` checks the loaded class against them."""

    decls: dict[str, MethodDecl] = field(default_factory=dict)

    def add_decl(self, decl: MethodDecl, target: str) -> None:
        if decl.name in self.decls and self.decls[decl.name].where != decl.where:
            raise MethodFileError(f"method {decl.name!r} is registered twice: "
                                  f"{self.decls[decl.name].where} and {decl.where}")
        self.add(decl.name, target)
        self.decls[decl.name] = decl

    def traits(self, name: str) -> dict[str, bool]:
        self.check(name)
        return dict(self.decls[name].traits)

    def source(self, name: str) -> Path:
        self.check(name)
        return Path(self.decls[name].file)

    def get(self, name: str) -> Any:
        self.check(name)
        if name not in self._loaded:
            cls = load_target(self._targets[name])
            check_method_class(cls, self.decls[name])
            self._loaded[name] = cls
        return self._loaded[name]


def check_method_class(cls: Any, decl: MethodDecl) -> None:
    """The class behind a declaration keeps the declaration's promises; run where it is imported."""
    if not isinstance(cls, type):
        raise MethodContractError(f"{decl.where}: {decl.class_name} is not a class")
    bases = {(c.__module__, c.__qualname__) for c in cls.__mro__}
    if CONTRACT not in bases:
        raise MethodContractError(f"{decl.where}: method {decl.name!r} ({decl.class_name}) must "
                                  f"subclass {'.'.join(CONTRACT)}")
    if getattr(cls, "name", None) != decl.name:
        raise MethodContractError(f"{decl.where}: {decl.class_name}.name is "
                                  f"{getattr(cls, 'name', None)!r}, its decorator says {decl.name!r}")
    for key, value in decl.traits.items():
        actual = getattr(cls, key, None)
        if actual is not value:
            raise MethodContractError(
                f"{decl.where}: {decl.class_name}.{key} is {actual!r} when loaded but its "
                f"@register_method declaration says {value!r} (the workflow planned with the "
                "declaration; set traits only in the decorator)")


def method_registry(method_files: Iterable[str | Path] = ()) -> MethodRegistry:
    """Every method: built-in files in methods/, method files, then installed entry points."""
    reg = MethodRegistry("method")
    for path in sorted(_METHODS_DIR.glob("*.py")):
        for decl in read_method_file(path):
            reg.add_decl(decl, f"methods.{path.stem}:{decl.class_name}")
    for file in method_files:
        file = Path(file).resolve()
        if not file.is_file():
            raise MethodFileError(f"method file not found: {file}")
        decls = read_method_file(file)
        if not decls:
            raise MethodFileError(f"{file} declares no method: decorate a PruningMethod subclass "
                                  "with @register_method(\"name\", ...)")
        for decl in decls:
            reg.add_decl(decl, f"{file}:{decl.class_name}")
    for ep in metadata.entry_points(group=METHOD_ENTRY_POINT_GROUP):
        module, _, attr = ep.value.partition(":")
        source = _module_source(module)
        if source is None:
            raise MethodFileError(f"entry point {ep.name!r} ({ep.value}): no Python source found "
                                  "for its module; methods are declared in readable source")
        decl = next((d for d in read_method_file(source) if d.class_name == attr), None)
        if decl is None or decl.name != ep.name:
            raise MethodFileError(f"entry point {ep.name!r} ({ep.value}): {source} has no class "
                                  f"{attr} decorated with @register_method({ep.name!r}, ...)")
        reg.add_decl(decl, ep.value)
    return reg
