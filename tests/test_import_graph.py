"""The code's import graph: no circles, layers that point one way, and an import inside a function
only where it keeps a heavy or optional package out of a module that does not need it otherwise."""
from __future__ import annotations

import functools

import pytest
from import_graph import ROOT, cycles, graph, imports, module_files

# publishing -> results -> planning -> training -> evaluation -> runtime -> core; methods sit
# beside training (they build on it; the library reaches them through the registry only)
LAYERS = {"core": 0, "runtime": 1, "evaluation": 2, "training": 3, "planning": 4, "results": 5,
          "publishing": 6}
METHODS_RANK = 3.5
TOP_RANK = 9  # benchmark/cli.py and the compatibility paths beside it
# what makes an import worth deferring: seconds of start-up, or an optional extra
HEAVY = frozenset({"torch", "torchvision", "pandas", "matplotlib", "playwright", "robustbench",
                   "pyautoattack", "autoattack", "safetensors", "scipy", "snakemake", "timm",
                   "numpy", "jinja2", "tqdm", "tabulate", "jsonschema"})


def rank(module: str) -> float:
    parts = module.split(".")
    if parts[0] == "methods":
        return METHODS_RANK
    return LAYERS.get(parts[1], TOP_RANK) if len(parts) > 1 else TOP_RANK


def test_benchmark_and_methods_have_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "methods").mkdir()
    (tmp_path / "benchmark/a.py").write_text("from benchmark import b\n")
    (tmp_path / "benchmark/b.py").write_text("def f():\n    from benchmark.a import x\n")
    (tmp_path / "benchmark/c.py").write_text("import benchmark.a\n")
    assert cycles(graph(tmp_path)) == [["benchmark.a", "benchmark.b"]]


def test_every_import_points_down_the_layers():
    modules = module_files()
    upward = [f"{name}:{line} imports {target}"
              for name, path in modules.items()
              for target, line, _ in imports(name, path, modules)
              if rank(target) > rank(name) and not name.startswith("methods")]
    assert not upward, "imports against the layers (publishing -> results -> planning -> " \
                       "training -> evaluation -> runtime -> core):\n" + "\n".join(upward)


def _top_level_heavy(modules):
    """The heavy packages each module pulls in when imported (its top-level imports, followed)."""
    import ast

    direct: dict[str, set[str]] = {}
    internal: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        direct[name] = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                direct[name] |= {a.name.split(".")[0] for a in node.names} & HEAVY
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                direct[name] |= {node.module.split(".")[0]} & HEAVY
        internal[name] = {t for t, _, nested in imports(name, path, modules) if not nested}

    @functools.cache
    def heavy(name: str) -> frozenset[str]:
        out, todo, seen = set(direct[name]), list(internal[name]), {name}
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            out |= direct[m]
            todo += internal[m]
        return frozenset(out)

    return heavy


def _function_level_imports(modules):
    import ast

    for name, path in modules.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    base = node.module or ""
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                               for a in node.names]
                else:
                    continue
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                reason = "#" in lines[node.end_lineno - 1] or above.startswith("#")
                yield name, node.lineno, targets, reason


def test_an_import_inside_a_function_defers_a_heavy_dependency_and_says_why():
    modules = module_files()
    heavy = _top_level_heavy(modules)
    problems = []
    for name, line, targets, reason in _function_level_imports(modules):
        for target in targets:
            module = next((m for m in (target, target.rpartition(".")[0]) if m in modules), None)
            adds = (heavy(module) if module else {target.split(".")[0]} & HEAVY) - heavy(name)
            if not adds:
                problems.append(f"{name}:{line}: `{target}` adds no heavy or optional package to "
                                f"{name}; import it at the top")
        if not reason:
            problems.append(f"{name}:{line}: an import inside a function needs a short reason "
                            "(a comment on its line or the line above)")
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_benchmark_keeps_at_most_fifteen_top_level_modules():
    top = sorted(p.name for p in (ROOT / "benchmark").glob("*.py"))
    assert len(top) <= 15, top


@pytest.mark.slow  # imports torch and starts a python
def test_the_documented_flat_import_paths_keep_working():
    import subprocess
    import sys

    import benchmark.masking
    import benchmark.model_export
    import benchmark.registry
    import benchmark.score_init
    from benchmark.core import masking, model_files, registry
    from benchmark.results import read_result
    from benchmark.training import TrainConfig, TrainHook, score_init

    assert benchmark.masking is masking and benchmark.registry is registry
    assert benchmark.model_export is model_files and benchmark.score_init is score_init
    assert read_result.__module__ == "benchmark.core.result_file"
    assert TrainConfig.__module__ == TrainHook.__module__ == "benchmark.training.loop"
    out = subprocess.run([sys.executable, "-m", "benchmark.runner", "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--profile" in out.stdout
