"""The library builds on nothing above it: no module under benchmark/ imports ``methods``.

``methods/`` (the contract, the pruners, the S2AP plug-in) builds on ``benchmark/``; the stages
get S2AP's hooks from the method object and the score perturbation from
``benchmark.training.score_perturbation``. The scan reads every file's syntax tree, so an import inside a
function, a relative import that climbs out of the package, and ``importlib.import_module`` /
``__import__`` with a literal name all count.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "benchmark"
FORBIDDEN = "methods"


def _is_forbidden(module: str | None) -> bool:
    return module is not None and (module == FORBIDDEN or module.startswith(FORBIDDEN + "."))


def _absolute(path: Path, root: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module an ImportFrom names ("" for the top level), relative imports resolved
    from the file's package; None when it climbs above ``root``."""
    if node.level == 0:
        return node.module
    package = path.relative_to(root).with_suffix("").parts[:-1]
    if node.level - 1 > len(package):
        return None
    base = list(package[:len(package) - (node.level - 1)])
    return ".".join(base + ([node.module] if node.module else []))


def imports_of_methods(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: statement' for every import of ``methods`` in one source file under ``root``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, root, node)
            if module is not None:
                names = ([module] if module else []) + [f"{module}.{a.name}" if module else a.name
                                                        for a in node.names]
        elif isinstance(node, ast.Call):
            called = getattr(node.func, "attr", getattr(node.func, "id", None))
            if called in ("import_module", "__import__") and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(_is_forbidden(n) for n in names):
            hits.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_benchmark_never_imports_methods():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 10  # the scan sees the library
    hits = [hit for path in files for hit in imports_of_methods(path)]
    assert not hits, "benchmark/ must not import methods/ (give it what it needs through the " \
                     "method object or move the code into benchmark/):\n" + "\n".join(hits)


def test_the_scan_catches_every_form_of_import(tmp_path):
    package = tmp_path / "benchmark"
    package.mkdir()
    source = package / "stage.py"
    source.write_text(
        "import os\n"
        "from . import masking\n"
        "def f():\n"
        "    from methods.s2ap import AWP\n"
        "    import methods.base\n"
        "    from .. import methods\n"
        "    from ..methods import harp\n"
        "    importlib.import_module('methods.hydra')\n"
        "    from benchmark import methods_of\n"
        "    return __import__('methods')\n")
    lines = [int(hit.split(":")[1]) for hit in imports_of_methods(source, tmp_path)]
    assert lines == [4, 5, 6, 7, 8, 10]
