"""The flags of a leaderboard row: one legend for the markdown leaderboard and the web site.

``benchmark.results.aggregate`` writes a row's flags into its ``flag`` column as ``name[:detail]`` items
joined by "; " (``pgd-broke-aa-robust:3; dirty-tree``). The compact tables show one letter per
flag and the legend below them says what each letter means; the CSV keeps the full text.
Torch-free.
"""
from __future__ import annotations

from typing import NamedTuple


class Flag(NamedTuple):
    code: str      # the letter the compact tables show
    name: str      # the flag's name in the ``flag`` column (before any ":detail")
    title: str     # a short name for the legend
    meaning: str   # what it tells the reader


LEGEND: tuple[Flag, ...] = (
    Flag("W", "warnings", "warnings", "AutoAttack (or Python) warned during the evaluation."),
    Flag("L", "lowered-after-apgd", "lowered after APGD",
         "FAB-T or Square broke images APGD had left: the APGD attacks alone were not enough, the "
         "robustness estimate is fragile."),
    Flag("N", "non-standard-AA", "non-standard AutoAttack",
         "an attack subset, not AutoAttack standard."),
    Flag("P", "pgd-broke-aa-robust", "PGD broke AutoAttack-robust images",
         "K images robust to AutoAttack were broken by PGD (legitimate: the attacks run "
         "independently, but AutoAttack's number is not a lower bound on them)."),
    Flag("D", "dirty-tree", "uncommitted code",
         "made from a checkout with uncommitted changes to tracked files: the exact code cannot "
         "be checked out."),
    Flag("U", "no-revision", "unknown revision", "made outside a git checkout: the revision is unknown."),
    Flag("X", "stale-code", "stale code",
         "made by stage code other than the current one: rerun it to get today's number."),
    Flag("G", "gamma-unselected", "gamma not selected",
         "S2AP ran with a gamma no sweep selected for this setting (a default)."),
    Flag("F", "degenerate", "failed seeds",
         "K of N seeds are failed runs (clean accuracy, or a learned mask's validation accuracy, "
         "at most 2 points above always answering the majority class): shown, left out of the "
         "S2AP comparison."),
    Flag("J", "projected", "projected onto budget",
         "K of N HARP searches ended over budget and their rates were projected onto it: not the "
         "mask the search learned."),
    Flag("I", "s2ap-inactive", "S2AP inactive",
         "in K of N S2AP searches the score step flipped no mask entry in more than half of its "
         "steps (such a step is the plain method's step)."),
    Flag("K", "unit-floor", "unit floor",
         "every output unit of the mask kept at least one weight (methods.<name>.options.unit_floor;"
         " not in the paper: docs/decisions.md, \"Unit floor\")."),
    Flag("R", "recipe-differs", "recipe differs",
         "the method trained with a recipe that deviates from its published one, as the recipe "
         "ledger declares (benchmark/recipe_ledger.yaml, docs/recipes.md; e.g. the epoch kept by "
         "validation, not test, accuracy)."),
    Flag("Y", "synthetic-data", "synthetic data",
         "stand-in images of the dataset's shape (a smoke run, data.synthetic), not the dataset: "
         "the numbers say nothing about it."),
    Flag("E", "submission", "external submission",
         "a model submitted from outside (python -m benchmark submit), evaluated with this "
         "preset's protocol."),
    Flag("C", "claim-outside", "claim not confirmed",
         "a submission's claimed value lies outside our 95 % interval (sparsity: further than "
         "0.5 points from the measured zeros)."),
)
# Flags only the site shows: it knows the dataset's full test-set size, the CSV does not need to.
SITE_LEGEND: tuple[Flag, ...] = (
    Flag("S", "test-subset", "test subset",
         "AutoAttack ran on part of the test set only (wider interval; not comparable with "
         "full-test-set leaderboards)."),
)
BY_NAME = {f.name: f for f in LEGEND + SITE_LEGEND}
# the ``:detail`` a flag carries in the ``flag`` column (README's table shows it)
DETAILS = {"lowered-after-apgd": "<attacks>", "pgd-broke-aa-robust": "K", "claim-outside": "<claims>",
           "degenerate": "K/N", "projected": "K/N", "s2ap-inactive": "K/N"}
README_TABLE_HEAD = ("| letter | `flag` | meaning |", "| --- | --- | --- |")


def readme_table() -> str:
    """README's flag table, every flag of both legends (the site-only ones say so); a test checks
    that README.md holds exactly this (``python -m benchmark.results.flags`` prints it)."""
    lines = list(README_TABLE_HEAD)
    for f in LEGEND + SITE_LEGEND:
        name = f.name + (f":{DETAILS[f.name]}" if f.name in DETAILS else "")
        where = " (site only)" if f in SITE_LEGEND else ""
        lines.append(f"| {f.code} | `{name}` | {f.meaning.replace('|', '/')}{where} |")
    return "\n".join(lines)


def split(flag_text: str | None) -> list[tuple[str, str]]:
    """(name, detail) of each flag in a ``flag`` column value; detail '' when it has none."""
    if not flag_text or not isinstance(flag_text, str):
        return []
    out = []
    for item in flag_text.split(";"):
        item = item.strip()
        if item:
            name, _, detail = item.partition(":")
            out.append((name.strip(), detail.strip()))
    return out


def code_of(name: str) -> str:
    """The letter of a flag; a flag this legend does not know is shown by its name."""
    flag = BY_NAME.get(name)
    return flag.code if flag else name


def codes(flag_text: str | None) -> str:
    """The compact form of a ``flag`` value: its letters, space-separated ("P D")."""
    return " ".join(code_of(name) for name, _ in split(flag_text))


def legend_markdown(used: set[str] | None = None) -> str:
    """The legend as one markdown line per flag (only those in ``used`` when given)."""
    lines = []
    for f in LEGEND:
        if used is None or f.code in used:
            lines.append(f"- **{f.code}** ({f.name}): {f.meaning}")
    return "\n".join(lines)


__all__ = ["Flag", "LEGEND", "SITE_LEGEND", "BY_NAME", "DETAILS", "split", "code_of", "codes",
           "legend_markdown", "readme_table"]


if __name__ == "__main__":
    print(readme_table())
