"""Markdown tables whose cells cannot carry markup: every string from a result, a manifest or a
name is shown as the text it is.

A markdown renderer passes raw HTML through, and a ``|`` ends a table cell, so a method, entry or
paper name such as ``<img src=x onerror=...>`` or ``a | b`` would become markup or shift the
columns of a leaderboard.md. ``cell`` escapes the HTML-significant characters as entities and
``|`` with a backslash (both render as themselves) and folds line breaks; ``table`` is
``DataFrame.to_markdown`` over escaped cells and headers.
"""
from __future__ import annotations

from typing import Any

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def cell(value: Any) -> Any:
    """A string with no markup left in it (other values as they are: the table formats them)."""
    if not isinstance(value, str):
        return value
    text = "".join(_ENTITIES.get(ch, ch) for ch in value)
    return " ".join(text.replace("|", "\\|").splitlines()) if text else text


def table(rows: Any) -> str:
    """``pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)`` with every string
    cell and header escaped."""
    import pandas as pd  # the aggregation has it loaded already

    df = pd.DataFrame(rows)
    df = df.rename(columns={c: cell(str(c)) for c in df.columns})
    df = df.apply(lambda col: col.map(cell)) if len(df) else df
    return df.to_markdown(index=False, disable_numparse=True)
