"""The repository is self-contained: no file it tracks names a path outside it (a reference file
on one machine, a home folder, a temporary folder). The one exception is the documented default
of Debian's Fashion-MNIST package, which lives in one place (benchmark/core/datasets.py)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR

REPO = Path(__file__).resolve().parent.parent
# written in pieces, so this file does not name them itself
SHARED = "/" + "work/"
FORBIDDEN = {
    "a machine's work folder": re.compile(re.escape(SHARED)),
    "the shared reference folder": re.compile(r"\.\./" + "shared"),
    "a home folder": re.compile(r"(?<![\w.])/" + r"home/"),
    "a temporary folder": re.compile(r"(?<![\w.~])/" + r"tmp\b"),
    "a system data folder": re.compile(r"(?<![\w.])/" + r"usr/share\b"),
}
DEBIAN_DEFAULT = "benchmark/core/datasets.py"
# .gitignore patterns are relative to the repository by definition (a leading slash is its root)
NOT_PATHS = {".gitignore"}


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True,
                             timeout=60).stdout
        files = [REPO / f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
        skip = {".git", ".venv", "work", "data", ".snakemake", "__pycache__", ".pytest_cache"}
        files = [p for p in REPO.rglob("*") if p.is_file()
                 and not skip & set(p.relative_to(REPO).parts)]
    return [f for f in files if f.is_file()]


def offending_lines(path: Path, root: Path = REPO) -> list[str]:
    rel = path.relative_to(root).as_posix()
    if rel in NOT_PATHS:
        return []
    data = path.read_bytes()
    if b"\0" in data[:8192]:  # binary (images)
        return []
    text = data.decode("utf-8", errors="replace")
    found = []
    for i, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if not pattern.search(line):
                continue
            if rel == DEBIAN_DEFAULT and line.startswith("DEFAULT_FASHION_MNIST_SYSTEM_DIR = "):
                continue
            found.append(f"{rel}:{i}: {what}: {line.strip()[:120]}")
    return found


def test_no_tracked_file_names_a_path_outside_the_repository():
    files = tracked_files()
    assert any(f.name == "Snakefile" for f in files)
    problems = [p for f in files for p in offending_lines(f)]
    assert not problems, "\n".join(problems)


def test_the_debian_dataset_default_is_named_once():
    hits = [f.relative_to(REPO).as_posix() for f in tracked_files()
            if DEFAULT_FASHION_MNIST_SYSTEM_DIR.encode() in f.read_bytes()]
    assert hits == [DEBIAN_DEFAULT]


@pytest.mark.parametrize("line", [
    "ref = Path('" + SHARED + "shared/reference/methods.md')",
    "see ../" + "shared/reference",
    "cache = '/" + "home/me/data'",
    "out = '/" + "tmp/site'",
    "FMNIST = '/" + "usr/share/datasets/fashion-mnist'",
])
def test_the_check_fails_on_a_machine_path(tmp_path, line):
    path = tmp_path / "code.py"
    path.write_text(f"# fine: tmp_path, /path/to/x, results/{{preset}}/\n{line}\n")
    found = offending_lines(path, tmp_path)
    assert len(found) == 1 and found[0].startswith("code.py:2:"), found
