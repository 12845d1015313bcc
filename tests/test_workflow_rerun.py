"""What makes a job rerun: editing a method file reruns that method's jobs only; adding a method
file the grid does not use, or moving the data and the thread count, reruns nothing.

One real run of a copy of the repository (so its method files can be edited) trains the tiny
preset's models for hydra and lwm; every check after it is a dry run against that state.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR

REPO = Path(__file__).resolve().parent.parent
MODELS = ["work/tiny/finetune/fashion-mnist/small_cnn/hydra/off/sp90/seed0/model.pt",
          "work/tiny/finetune/fashion-mnist/small_cnn/lwm/n-a/sp90/seed0/model.pt"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(DEFAULT_FASHION_MNIST_SYSTEM_DIR).is_dir(),
                       reason="needs the Debian package dataset-fashion-mnist"),
]


def _copy_repo(dst: Path) -> Path:
    for name in ("benchmark", "methods", "workflows", "presets", "examples"):
        shutil.copytree(REPO / name, dst / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "Snakefile", dst / "Snakefile")
    return dst


def _preset(path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "presets" / "tiny.yaml").read_text())
    raw["grid"]["methods"] = ["hydra", "lwm"]
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """(repository copy, working directory) after the real run."""
    root = tmp_path_factory.mktemp("rerun")
    repo = _copy_repo(root / "repo")
    work = root / "work"
    work.mkdir()
    proc = _snakemake(repo, work, _preset(work / "p.yaml"), timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return repo, work


def _snakemake(repo: Path, work: Path, preset: Path, *args: str, timeout: int = 300):
    # this copy's code, not the test's: jobs import benchmark/ and methods/ from the copy
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
           "--cores", "2", *args, *MODELS, "--configfile", str(preset)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)


def _planned(repo: Path, work: Path, preset: Path) -> Counter:
    """(rule, method) of every job a dry run plans."""
    proc = _snakemake(repo, work, preset, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs, rule = Counter(), None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            rule = m.group(1)
        elif rule and line.startswith("    wildcards: "):
            method = re.search(r"method=([\w-]+)", line)
            jobs[(rule, method.group(1) if method else None)] += 1
            rule = None
    if "Nothing to be done" in out:
        assert not jobs
    return jobs


def test_an_unchanged_preset_is_up_to_date(ran):
    repo, work = ran
    assert _planned(repo, work, work / "p.yaml") == Counter()


def test_editing_a_method_file_reruns_its_jobs_only(ran):
    repo, work = ran
    source = repo / "methods" / "lwm.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# an edit that may change what lwm computes\n")
        assert _planned(repo, work, work / "p.yaml") == Counter(
            {("prune", "lwm"): 1, ("finetune", "lwm"): 1})
    finally:
        source.write_text(original)
    assert _planned(repo, work, work / "p.yaml") == Counter()


def test_an_unused_method_file_reruns_nothing(ran, tmp_path):
    repo, work = ran
    unused = textwrap.dedent("""\
        from benchmark.core.registry import register_method
        from methods.base import PruningMethod


        @register_method("{name}", learns_scores=False)
        class Unused(PruningMethod):
            pass
        """)
    (tmp_path / "unused.py").write_text(unused.format(name="unused_file"))
    built_in = repo / "methods" / "unused_builtin.py"
    built_in.write_text(unused.format(name="unused_builtin"))
    try:
        preset = _preset(tmp_path / "p.yaml", method_files=[str(tmp_path / "unused.py")])
        assert _planned(repo, work, preset) == Counter()
    finally:
        built_in.unlink()


def test_moving_the_data_and_the_threads_reruns_nothing(ran, tmp_path):
    repo, work = ran
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    preset = _preset(tmp_path / "p.yaml", data__root=str(moved), data__num_workers=2,
                     runtime__threads=2)
    assert _planned(repo, work, preset) == Counter()
    # ... while a change to the recipe does rerun, from the stage it changes
    preset = _preset(tmp_path / "p2.yaml", finetune__lr=0.02)
    assert _planned(repo, work, preset) == Counter({("finetune", "hydra"): 1, ("finetune", "lwm"): 1})
