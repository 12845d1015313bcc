"""The paper's tables and figures, declared once: which tables exist (``KINDS``), what each shows,
and which grid cells it reads. The preset's schema (its ``tables`` names), the workflow's table
rules and targets (generated in a loop, workflows/rules/tables.smk), the job graph, the estimate
and the table builder (``benchmark.results.tables``) all read this declaration; docs/paper_tables.md
is checked against it (tests/test_paper_tables_declared_once.py). It needs neither torch nor pandas."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.core import choices
from benchmark.core.cells import canonical_sparsity, effective_variant
from benchmark.core.errors import InputFileError


class TableError(InputFileError, ValueError):
    """Results that cannot fill a paper table; the message names the cells or files."""


@dataclass(frozen=True)
class TableKind:
    name: str
    title: str
    layout: str  # s2ap | ablation | metrics | overhead
    s2ap: tuple[str, ...]  # the grid values read for a score-learning method
    learners_only: bool  # methods that learn no scores have no S2AP variant to compare
    structure: str | None = None  # the structure label every result must carry (None: any)
    figure: bool = False

    @property
    def target(self) -> str:
        """The Snakemake rule that builds it."""
        return f"{'figure' if self.figure else 'table'}_{self.name}"

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("md", "csv", "png") if self.figure else ("md", "csv")


_PAIR = ("off", "on")
KINDS: dict[str, TableKind] = {
    "main": TableKind("main", "Unstructured pruning", "s2ap", _PAIR, False, "unstructured"),
    "structured": TableKind("structured", "Structured (channel) pruning", "s2ap", _PAIR, False,
                            "structured"),
    "vit": TableKind("vit", "Vision Transformer", "s2ap", _PAIR, False, "unstructured"),
    "imagenet": TableKind("imagenet", "ImageNet", "s2ap", _PAIR, False, "unstructured"),
    "baselines": TableKind("baselines", "Baselines", "s2ap", _PAIR, False, "unstructured"),
    "ablation": TableKind("ablation", "Ablation: the score-space step and AWP alone and together",
                          "ablation", ("off", "score", "awp", "on"), True),
    "sharpness": TableKind("sharpness", "Score-space sharpness after the mask search", "metrics",
                           _PAIR, True, figure=True),
    "stability": TableKind("stability", "Mask stability after the mask search", "metrics", _PAIR,
                           True, figure=True),
    "overhead": TableKind("overhead", "Overhead of S2AP: search and finetune time", "overhead",
                          _PAIR, True),
}

ABLATION_LABELS = {"off": "Orig.", "score": "score-only", "awp": "AWP-only", "on": "both"}
# diagnostics a figure shows (keys of the result's diagnostics), as regular expressions
FIGURE_METRICS = {
    "sharpness": (r"sharpness_r[0-9.e-]+", r"hessian_top_eig", r"mask_robust_acc"),
    "stability": (r"stability_worst_r[0-9.e-]+", r"stability_random_r[0-9.e-]+",
                  r"seed_flip_fraction"),
}
METRIC_TITLES = {
    "sharpness": "score-space sharpness (loss increase under the worst-case z) at radius {r}",
    "hessian_top_eig": "top eigenvalue of the score-space Hessian",
    "mask_robust_acc": "mask robust accuracy (PGD on the validation slice after the search)",
    "stability_worst": "mask flips under the worst-case z at radius {r} (fraction of kept weights)",
    "stability_random": "mask flips under a random z at radius {r} (fraction of kept weights)",
    "seed_flip_fraction": "mask flips between two search seeds (fraction of kept weights)",
}
OVERHEAD_METRICS = (("prune_s", "mask search (s)"), ("finetune_s", "finetune (s)"))


# ---------------------------------------------------------------- which cells a table reads
def selection(cfg: Mapping[str, Any], name: str, traits: Mapping[str, Mapping[str, bool]]
              ) -> dict[str, Any]:
    """The datasets, archs, methods and sparsities of one table of the preset (grid order)."""
    kind = KINDS[name]
    over = (cfg.get("tables") or {}).get(name) or {}
    grid = cfg["grid"]
    methods = list(over.get("methods") or [
        m for m in grid["methods"] if traits[m]["learns_scores"] or not kind.learners_only])
    sparsities = [canonical_sparsity(s) for s in (over.get("sparsities") or grid["sparsities"])]
    return {"datasets": list(grid["datasets"]), "archs": list(over.get("archs") or grid["archs"]),
            "methods": methods, "sparsities": list(dict.fromkeys(sparsities)),
            "learns_scores": {m: bool(traits[m]["learns_scores"]) for m in methods},
            # a column's variant -> the one the method runs (RST: score is on, awp is off)
            "variants": {m: {v: effective_variant(cfg, m, v, traits[m])
                             for v in s2ap_values(kind, bool(traits[m]["learns_scores"]))}
                         for m in methods}}


def s2ap_values(kind: TableKind, learns_scores: bool) -> tuple[str, ...]:
    return kind.s2ap if learns_scores else (choices.S2AP_NA,)


def table_cells(cfg: Mapping[str, Any], cells: Iterable[Mapping[str, Any]], name: str,
                traits: Mapping[str, Mapping[str, bool]]) -> list[Mapping[str, Any]]:
    """The grid cells (benchmark.core.config.grid_cells) whose results the table reads."""
    sel = selection(cfg, name, traits)
    return [c for c in cells
            if c["dataset"] in sel["datasets"] and c["arch"] in sel["archs"]
            and c["method"] in sel["methods"] and c["sparsity"] in sel["sparsities"]
            and c["s2ap"] in sel["variants"][c["method"]].values()]


def spec(cfg: Mapping[str, Any], name: str, traits: Mapping[str, Mapping[str, bool]],
         recipe_deviations: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """What the builder needs: the table, its rows and columns, the preset, and the declared
    deviations of each method's recipe from the published one (benchmark.core.recipes, computed
    by the caller from the preset's stage configs), which mark its reference cells."""
    sel = selection(cfg, name, traits)
    devs = recipe_deviations or {}
    return {"table": name, "preset": cfg["name"], **sel,
            "seeds": [int(s) for s in cfg["grid"]["seeds"]],
            "recipe_deviations": {m: devs[m] for m in sel["methods"] if devs.get(m)}}


def preset_problems(cfg: Mapping[str, Any], traits: Mapping[str, Mapping[str, bool]]) -> list[str]:
    """Tables a preset names but its grid cannot fill, as "field: problem" lines."""
    problems = []
    grid = cfg["grid"]
    grid_sp = {canonical_sparsity(s) for s in grid["sparsities"]}
    for name, over in (cfg.get("tables") or {}).items():
        kind, over, where = KINDS[name], over or {}, f"tables.{name}"
        for key, allowed in (("methods", grid["methods"]), ("archs", grid["archs"])):
            extra = [v for v in over.get(key) or [] if v not in allowed]
            if extra:
                problems.append(f"{where}.{key}: {extra} not in grid.{key} {list(allowed)}")
        try:
            extra = [s for s in over.get("sparsities") or [] if canonical_sparsity(s) not in grid_sp]
        except ValueError as exc:
            problems.append(f"{where}.sparsities: {exc}")
            extra = []
        if extra:
            problems.append(f"{where}.sparsities: {extra} not in grid.sparsities")
        methods = [m for m in over.get("methods") or grid["methods"] if m in traits]
        learners = [m for m in methods if traits[m]["learns_scores"]]
        if kind.learners_only:
            fixed = [m for m in over.get("methods") or [] if m in traits and not traits[m]["learns_scores"]]
            if fixed:
                problems.append(f"{where}.methods: {fixed} learn no scores; the {name} table "
                                "compares S2AP variants, which only score-learning methods have")
            if not learners:
                problems.append(f"{where}: no score-learning method in the grid; the {name} table "
                                "compares S2AP variants")
        missing = [v for v in kind.s2ap if v not in grid["s2ap"]]
        if learners and missing:
            problems.append(f"{where}: needs grid.s2ap to hold {list(kind.s2ap)} (missing "
                            f"{missing}); the table's columns are these variants")
    return problems
