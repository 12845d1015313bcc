"""Modules stay small enough to read: one over about 400 lines in benchmark/, methods/ or speed/
says at the top of its docstring why it is long ("Long because ...")."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT = 400


def test_every_long_module_says_why_it_is_long():
    unexplained = []
    for top in ("benchmark", "methods", "speed"):
        for path in sorted((REPO / top).rglob("*.py")):
            text = path.read_text()
            if text.count("\n") <= LIMIT:
                continue
            doc = ast.get_docstring(ast.parse(text)) or ""
            # at the top: within the docstring's first paragraphs
            if "Long because" not in "\n\n".join(doc.split("\n\n")[:3]):
                unexplained.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert not unexplained, "split these by job, or say why they are long:\n" + "\n".join(unexplained)
