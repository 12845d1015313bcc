"""The workflow's habits: every rule that runs on a cluster has SLURM resources (a GPU when it
trains or attacks), each stage command is written once, and `make lint` (snakefmt, Snakemake's
linter) passes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.paper_tables import KINDS

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflows" / "rules").glob("*.smk"))]
GPU_COMMANDS = ("PRETRAIN_CMD", "PRUNE_CMD", "FINETUNE_CMD", "EVALUATE_CMD", "SUBMIT_CMD",
                "AUTOATTACK_SHARD_CMD")


def workflow_rules() -> dict[str, str]:
    """Every rule of the workflow (those behind `if` too, and the table targets generated from
    benchmark.core.paper_tables.KINDS in a loop) -> the text of its body."""
    rules = {}
    for path in RULE_FILES:
        text = path.read_text()
        starts = list(re.finditer(r"^(\s*)rule( \w+)?:", text, re.M))
        for i, match in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            if match.group(2):
                rules[match.group(2).strip()] = text[match.end():end]
            else:  # the loop's rule, one per declared table
                assert "_kind.target" in text[match.end():end], path
                rules.update({k.target: text[match.end():end] for k in KINDS.values()})
    return rules


def local_rules() -> set[str]:
    """Every rule named in a `localrules:` block of any workflow file (Snakemake merges them: the
    rules of one file, such as the publishing rules, declare their own)."""
    names = set()
    for path in RULE_FILES:
        for block in re.finditer(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", path.read_text(), re.M):
            names |= {name.strip(" ,\n") for name in block.group(1).split()}
    # a rule may say so itself
    names |= {name for name, body in workflow_rules().items() if "localrule: True" in body}
    return names


def test_local_rules_are_read_from_every_workflow_file():
    assert {"all", "aggregate", "site", "export_robustbench", "submissions"} <= local_rules()
    assert "export_models" not in local_rules()  # reads every model: a cluster job


@pytest.mark.slow
def test_the_parser_sees_the_rules_snakemake_sees():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules", "--configfile",
                           str(REPO / "presets" / "offline.yaml")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = {line.strip() for line in proc.stdout.splitlines() if re.fullmatch(r"\s*\w+", line)}
    assert listed == set(workflow_rules())


def test_every_cluster_rule_has_slurm_resources():
    """Every rule a cluster runs takes its resources from benchmark/planning/slurm_resources.py (by its own name),
    and the rules that train or attack are the ones slurm.GPU_RULES gives a GPU."""
    from benchmark.planning import slurm_resources as slurm

    rules = workflow_rules()
    missing = set(rules) - local_rules() - {
        n for n, body in rules.items() if f'**cluster_resources("{n}")' in body}
    assert not missing, f"rules without SLURM resources: {sorted(missing)}"
    trains = {n for n, body in rules.items() if any(cmd in body for cmd in GPU_COMMANDS)}
    assert trains == set(slurm.GPU_RULES)


def test_each_stage_command_is_written_once():
    text = "\n".join(p.read_text() for p in RULE_FILES)
    for command in ("pretrain", "prune", "finetune", "evaluate"):
        assert len(re.findall(rf'"{command} --config', text)) == 1, command
    rules = workflow_rules()
    assert {n for n, body in rules.items() if "PRUNE_CMD" in body} == {
        "prune", "prune_second_seed", "sweep_prune"}
    assert {n for n, body in rules.items() if "FINETUNE_CMD" in body} == {"finetune", "sweep_finetune"}
    assert {n for n, body in rules.items() if "EVALUATE_CMD" in body} == {"evaluate", "evaluate_dense"}


@pytest.mark.slow
def test_workflow_lint_is_clean():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lint_workflow.py")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
