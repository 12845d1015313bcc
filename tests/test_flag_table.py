"""docs/leaderboard.md's flag table is the one benchmark/results/flags.py declares, every flag included; the method
context's helpers are documented beside the method contract."""
from __future__ import annotations

import re
from pathlib import Path

from benchmark.results import flags
from benchmark.training.score_init import ScoreInitContext

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LEADERBOARD_DOC = ROOT / "docs" / "leaderboard.md"


def test_the_documented_flag_table_is_generated_from_the_legend():
    text = LEADERBOARD_DOC.read_text()
    assert flags.readme_table() in text, \
        "docs/leaderboard.md's flag table differs: paste `python -m benchmark.results.flags`"
    letters = re.findall(r"^\| ([A-Z]) \| `", text, re.M)
    assert sorted(letters) == sorted(f.code for f in flags.LEGEND + flags.SITE_LEGEND)
    assert "| S | `test-subset` |" in text


def test_every_flag_letter_is_declared_once():
    codes = [f.code for f in flags.LEGEND + flags.SITE_LEGEND]
    names = [f.name for f in flags.LEGEND + flags.SITE_LEGEND]
    assert len(set(codes)) == len(codes) and len(set(names)) == len(names)
    assert set(flags.DETAILS) <= set(names)


def test_the_method_context_helpers_are_documented_beside_the_contract():
    text = README.read_text()
    section = text[text.index("## Add your method"):]
    section = section[:section.index("\n## ", 1)]
    public = {n for n in dir(ScoreInitContext) if not n.startswith("_")}
    public |= set(ScoreInitContext.__dataclass_fields__)
    for name in public:
        assert f"`ctx.{name}" in section, f"ctx.{name} is not documented in README's 'Add your method'"
    assert "`ctx.batches()`" in section and "`ctx.robust_loss.prepare(" in section
