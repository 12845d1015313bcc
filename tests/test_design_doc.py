"""docs/design.md and the README name only what exists, and the README stays a front page."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
README = ROOT / "README.md"
TOP = ("benchmark/", "methods/", "speed/", "workflows/", "presets/", "examples/", "docs/", "tests/",
       "scripts/")


def _backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\s]+)`", text)


def _paths(text: str) -> list[str]:
    return [t.rstrip(",.;:") for t in _backticked(text)
            if t.startswith(TOP) and "<" not in t and "*" not in t]


def test_every_path_the_design_page_names_exists():
    missing = [p for p in _paths(DESIGN.read_text()) if not (ROOT / p).exists()]
    assert not missing, f"docs/design.md names paths that do not exist: {missing}"


def test_every_module_of_the_package_table_exists_in_its_package():
    missing = []
    for line in DESIGN.read_text().splitlines():
        row = re.match(r"\| `((?:benchmark|methods|speed)/[\w/]*)` \| (.*)\|$", line)
        if not row:
            continue
        folder, cell = ROOT / row.group(1), row.group(2)
        for name in re.findall(r"`([\w/]+\.py|[\w]+/)`", cell):
            if not (folder / name).exists() and not (ROOT / name).exists():
                missing.append(f"{row.group(1)}{name}")
    assert not missing, f"docs/design.md's package table names modules that do not exist: {missing}"


def test_every_dotted_module_the_docs_name_imports():
    bad = []
    for page in [DESIGN, README, *sorted((ROOT / "docs").glob("*.md"))]:
        for name in set(re.findall(r"\bbenchmark(?:\.\w+)+", page.read_text())):
            parts = name.split(".")
            # the longest importable prefix, then the rest must be attributes
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    bad.append(f"{page.name}: {name}")
                break
            else:
                bad.append(f"{page.name}: {name}")
    assert not bad, f"the docs name modules or attributes that do not exist: {sorted(set(bad))}"


def test_the_path_check_catches_a_module_that_moved(tmp_path):
    text = "see `benchmark/aggregate.py` and `benchmark/results/aggregate.py`"
    assert [p for p in _paths(text) if not (ROOT / p).exists()] == ["benchmark/aggregate.py"]


def test_the_readme_is_a_front_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    heads = [h for h in lines if h.startswith("## ")]
    assert heads[0] == "## Contents"
    order = {h: i for i, h in enumerate(heads)}
    assert order["## Two commands"] < order["## Add your method"] < order["## Presets"]
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    for link in re.findall(r"\]\(#([\w-]+)\)", contents):
        assert any(re.sub(r"[^\w\- ]", "", h[3:].lower()).replace(" ", "-") == link for h in heads), link
    linked = set(re.findall(r"\]\((docs/[\w.]+\.md)", text))
    assert not [p for p in linked if not (ROOT / p).exists()]
