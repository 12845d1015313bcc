"""The paper tables are declared once (benchmark/core/paper_tables.py KINDS): no other file of the
repository writes out their list, the workflow's table targets are generated from it, and the
docs' list of targets is checked against it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from benchmark.core import config as C
from benchmark.core.paper_tables import KINDS

REPO = Path(__file__).resolve().parent.parent
DECLARATION = "benchmark/core/paper_tables.py"
# the documentation of every target (its rows are checked below and in test_paper_presets.py)
CHECKED_COPIES = {"docs/paper_tables.md"}
TEXT = (".py", ".smk", ".md", ".yaml", ".yml", ".toml", ".json", ".cfg", ".txt", "Snakefile",
        "Makefile")


def tracked_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in out.stdout.split() if f.endswith(TEXT) and not f.startswith("results/")
            and (REPO / f).is_file()]


def names_every_table(text: str) -> bool:
    """Whether a text lists all the tables: every one as its target (table_main, ...) or every
    one as a quoted name ("main", 'structured', ...)."""
    targets = all(re.search(rf"\b{k.target}\b", text) for k in KINDS.values())
    quoted = all(re.search(rf"[\"']{k.name}[\"']", text) for k in KINDS.values())
    return targets or quoted


def test_the_paper_tables_are_listed_in_one_definition():
    """Tests pin presets and counts independently of the code and are left out."""
    listed = [f for f in tracked_text_files()
              if not f.startswith("tests/") and names_every_table((REPO / f).read_text())]
    assert set(listed) <= {DECLARATION, *CHECKED_COPIES}, (
        f"{sorted(set(listed) - {DECLARATION, *CHECKED_COPIES})} write out the list of paper tables; "
        f"derive it from {DECLARATION} (KINDS)")
    assert DECLARATION in listed  # the check can see a list


def test_the_check_finds_a_hand_written_list():
    assert names_every_table("localrules:\n" + "\n".join(f"    {k.target}," for k in KINDS.values()))
    assert names_every_table(repr(tuple(KINDS)))
    assert not names_every_table(repr(tuple(KINDS)[:-1]))


def test_no_workflow_file_writes_a_table_target_rule_out():
    for path in [REPO / "Snakefile", *(REPO / "workflows" / "rules").glob("*.smk")]:
        assert not re.search(r"^\s*rule (table|figure)_\w+:", path.read_text(), re.M), path


def test_the_schema_accepts_exactly_the_declared_tables():
    assert C.load_schema()["$defs"]["paper_table"]["enum"] == list(KINDS)


def test_the_docs_list_every_declared_target_once():
    text = (REPO / "docs" / "paper_tables.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \|", text, re.M)
    targets = [r for r in rows if r.startswith(("table_", "figure_"))]
    assert targets == [k.target for k in KINDS.values()]
