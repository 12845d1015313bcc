"""A non-editable install carries what the library reads at run time (the config schema, the AP
benchmark's reference numbers, the calibration file), and validates a preset from outside the
repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_non_editable_install_validates_a_preset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    for package in ("benchmark", "methods"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--ignore-installed",
                           "--no-build-isolation", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "benchmark" / "schemas" / "config.schema.yaml").is_file()
    assert (site / "benchmark" / "reference_data" / "ap_benchmark_leaderboard.csv").is_file()
    assert (site / "benchmark" / "calibration" / "calibration.json").is_file()
    assert (site / "benchmark" / "recipe_ledger.yaml").is_file()

    shutil.rmtree(src)  # nothing may come from the sources or the repository
    code = (
        "import benchmark, sys; from pathlib import Path\n"
        f"assert Path(benchmark.__file__).is_relative_to({str(site)!r}), benchmark.__file__\n"
        "from benchmark.core import config as C\n"
        f"cfg = C.validate(C.load_preset({str(REPO / 'presets' / 'tiny.yaml')!r}))\n"
        "assert C.grid_cells(cfg) and 'torch' not in sys.modules\n"
        f"paper = C.load_preset({str(REPO / 'presets' / 'paper_cifar10.yaml')!r})\n"
        "paper['reference_csv'] = None  # a path relative to the repository, which is not here\n"
        "assert C.validate(paper)['recipe_ledger'] == 'strict'  # the ledger came with the package\n"
        "from benchmark.planning import calibration\nfrom benchmark.results import reference\n"
        "assert len(reference.load_reference()[0]) == 154 and calibration.load().source\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.e2e
def test_a_non_editable_install_runs_the_tiny_preset(tmp_path):
    """`pip install .` (not editable) into a fresh venv, then the workflow alone (Snakefile, rules,
    presets: no benchmark/ or methods/ beside it) runs the tiny preset to a leaderboard with the
    installed package. The venv borrows the dependencies of the test venv through a .pth file, so
    only the suite itself is installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "_test_deps.pth").write_text("\n".join(deps) + "\n")

    src = tmp_path / "src"
    everywhere = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".snakemake")
    at_root = {".venv", "work", "results", "data", "build"}  # benchmark/results/ is code

    def ignore(folder, names):
        return set(everywhere(folder, names)) | (at_root & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, src, ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--ignore-installed",
                           "--no-build-isolation", "--prefix", str(venv), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    workflow = tmp_path / "workflow"  # the workflow files only: the code must come from the install
    workflow.mkdir()
    shutil.copy2(src / "Snakefile", workflow / "Snakefile")
    for folder in ("workflows", "presets"):
        shutil.copytree(src / folder, workflow / folder)  # symlinks copied as the files they name
    shutil.rmtree(src)
    run = tmp_path / "run"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(py), "-m", "snakemake", "--snakefile", str(workflow / "Snakefile"),
                           "--directory", str(run), "--cores", "2",
                           "--configfile", str(workflow / "presets" / "tiny.yaml")],
                          capture_output=True, text=True, env=env, cwd=run, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    board = run / "results" / "tiny" / "leaderboard.md"
    assert board.is_file() and "hydra" in board.read_text()
    where = subprocess.run([str(py), "-c", "import benchmark, methods; print(benchmark.__file__, methods.__file__)"],
                           capture_output=True, text=True, env=env, cwd=run, check=True).stdout
    assert str(venv) in where and str(REPO) not in where, where
