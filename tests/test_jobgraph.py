"""The job graph is planned once (benchmark/planning/jobgraph.py) and the workflow runs that plan:
the jobs per rule of every shipped preset and target, pinned as a Snakemake dry run counted them
before the plan moved into one module, the dry run's files against the plan's, and the one place
that decides which cells exist."""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmark.core import config as C
from benchmark.core import paper_tables as tables
from benchmark.core.errors import ConfigError
from benchmark.planning import estimate
from benchmark.planning.jobgraph import JobGraph

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
SMOKE = PRESETS / "smoke.yaml"

# (preset, target) -> jobs per rule of `snakemake -n <target>` (the target's ancestors in the DAG),
# counted at f5bb8aa, before the plan was one function
DRY_RUN_COUNTS = {
    ("tiny", "all"):
        dict(aggregate=1, all=1, evaluate=1, evaluate_dense=1, finetune=1, pretrain=1, prune=1),
    ("quick", "all"):
        dict(aggregate=1, all=1, evaluate=9, evaluate_dense=1, finetune=9, pretrain=1, prune=9),
    ("offline", "all"):
        dict(aggregate=1, all=1, evaluate=36, evaluate_dense=3, finetune=36, pretrain=3, prune=36),
    ("standard", "all"):
        dict(aggregate=1, all=1, evaluate=2, evaluate_dense=1, finetune=2, pretrain=1, prune=2),
    # RST has no finetune: its score and awp variants are its on and off (54 RST evaluations, not 108)
    ("paper_cifar10", "all"):
        dict(aggregate=1, all=1, evaluate=351, evaluate_dense=9, finetune=351, pretrain=18,
             prune=243),
    ("paper_cifar10", "figure_sharpness"):
        dict(evaluate=108, figure=1, figure_sharpness=1, finetune=108, pretrain=18, prune=108),
    ("paper_cifar10", "figure_stability"):
        dict(evaluate=108, figure=1, figure_stability=1, finetune=108, pretrain=18, prune=108),
    ("paper_cifar10", "table_ablation"):
        dict(evaluate=216, finetune=216, pretrain=18, prune=108, table=1, table_ablation=1),
    ("paper_cifar10", "table_baselines"):
        dict(evaluate=135, finetune=135, pretrain=9, prune=135, table=1, table_baselines=1),
    ("paper_cifar10", "table_main"):
        dict(evaluate=108, finetune=108, pretrain=18, prune=108, table=1, table_main=1),
    ("paper_cifar10", "table_overhead"):
        dict(evaluate=108, finetune=108, pretrain=18, prune=108, table=1, table_overhead=1),
    ("paper_cifar10_structured", "all"):
        dict(aggregate=1, all=1, evaluate=54, evaluate_dense=9, finetune=54, pretrain=9, prune=54),
    ("paper_cifar10_structured", "table_structured"):
        dict(evaluate=54, finetune=54, pretrain=9, prune=54, table=1, table_structured=1),
    ("paper_cifar10_vit", "all"):
        dict(aggregate=1, all=1, evaluate=36, evaluate_dense=3, finetune=36, pretrain=6, prune=36),
    ("paper_cifar10_vit", "table_vit"):
        dict(evaluate=36, finetune=36, pretrain=6, prune=36, table=1, table_vit=1),
    ("paper_imagenet", "all"):
        dict(aggregate=1, all=1, evaluate=36, evaluate_dense=3, finetune=36, pretrain=3, prune=36),
    ("paper_imagenet", "table_imagenet"):
        dict(evaluate=36, finetune=36, pretrain=3, prune=36, table=1, table_imagenet=1),
    ("paper_svhn", "all"):
        dict(aggregate=1, all=1, evaluate=216, evaluate_dense=9, finetune=216, pretrain=18,
             prune=108),
    ("paper_svhn", "figure_sharpness"):
        dict(evaluate=108, figure=1, figure_sharpness=1, finetune=108, pretrain=18, prune=108),
    ("paper_svhn", "figure_stability"):
        dict(evaluate=108, figure=1, figure_stability=1, finetune=108, pretrain=18, prune=108),
    ("paper_svhn", "table_ablation"):
        dict(evaluate=216, finetune=216, pretrain=18, prune=108, table=1, table_ablation=1),
    ("paper_svhn", "table_main"):
        dict(evaluate=108, finetune=108, pretrain=18, prune=108, table=1, table_main=1),
    ("paper_svhn", "table_overhead"):
        dict(evaluate=108, finetune=108, pretrain=18, prune=108, table=1, table_overhead=1),
    ("paper_svhn_structured", "all"):
        dict(aggregate=1, all=1, evaluate=54, evaluate_dense=9, finetune=54, pretrain=9, prune=54),
    ("paper_svhn_structured", "table_structured"):
        dict(evaluate=54, finetune=54, pretrain=9, prune=54, table=1, table_structured=1),
}
# the smoke form of paper_cifar10, every target in one dry run (its jobs are grouped per search)
SMOKE_DRY_RUN_TOTAL = {"aggregate": 1, "all": 1, "evaluate_dense": 3, "figure": 2,
                       "figure_sharpness": 1, "figure_stability": 1, "pretrain": 6, "table": 4,
                       "table_ablation": 1, "table_baselines": 1, "table_main": 1,
                       "table_overhead": 1, "prune": 81, "finetune": 117, "evaluate": 117}


def load(name: str, *overlays: Path) -> dict:
    return C.validate(C.load_presets([PRESETS / f"{name}.yaml", *overlays]), search_dirs=[REPO])


def test_every_shipped_preset_and_target_is_pinned():
    presets = {p.stem for p in PRESETS.glob("*.yaml")} - {"smoke"}
    pinned = {(name, target) for name, target in DRY_RUN_COUNTS}
    assert {name for name, _ in pinned} == presets
    for name in presets:
        assert {t for n, t in pinned if n == name} == set(JobGraph(load(name), [REPO]).targets())


@pytest.mark.parametrize("name,target", sorted(DRY_RUN_COUNTS))
def test_the_plan_runs_the_jobs_the_dry_run_ran(name, target):
    counts = JobGraph(load(name), [REPO]).plan([target]).counts()
    assert dict(sorted(counts.items())) == DRY_RUN_COUNTS[name, target]
    # the estimate counts the same plan
    assert estimate.plan(load(name), [target], [REPO]).counts() == counts


def test_the_smoke_form_plans_every_target_of_its_preset():
    graph = JobGraph(load("paper_cifar10", SMOKE), [REPO])
    assert graph.preset == "paper_cifar10_smoke"
    assert graph.full_plan().counts() == SMOKE_DRY_RUN_TOTAL


def test_seed_stability_and_autoattack_shard_jobs_are_planned_as_the_dry_run_ran_them():
    """No shipped preset turns them on: the offline preset, one seed, with both (a dry run of it
    at f5bb8aa ran these 90 jobs: 2 shards of 50 images per evaluation, a second search and its
    comparison per searched cell of a score-learning method)."""
    cfg = C.load_preset(PRESETS / "offline.yaml")
    cfg["diagnostics"]["seed_stability"] = True
    cfg["runtime"]["autoattack_shard_jobs"] = True
    cfg["grid"]["seeds"] = cfg["grid"]["seeds"][:1]
    plan = JobGraph(C.validate(cfg, search_dirs=[REPO]), [REPO]).plan(["all"])
    assert plan.counts() == {"aggregate": 1, "all": 1, "evaluate": 12, "autoattack_shard": 26,
                             "finetune": 12, "prune": 12, "prune_second_seed": 12,
                             "seed_stability": 12, "pretrain": 1, "evaluate_dense": 1}
    evaluate = plan.jobs["evaluate"][0]
    assert len(evaluate.inputs["shards"]) == 2 and len(evaluate.inputs["seed_stability"]) == 1


def test_the_plan_of_all_names_every_result_and_each_job_s_inputs_are_planned_outputs():
    graph = JobGraph(load("offline"), [REPO])
    plan = graph.full_plan()
    produced = plan.producers()
    assert plan.jobs["aggregate"][0].inputs["runs"] == graph.runs()
    for job in plan.all_jobs():
        assert all(f in produced for f in job.needs), job
    # a dense model is shared by every method of its pretrain recipe
    assert {j.output for j in plan.jobs["pretrain"]} == {
        f for j in plan.jobs["prune"] for f in j.inputs["dense"]}


def test_one_function_decides_which_cells_exist():
    """A rule that leaves cells out (issue 18: a variant that changes nothing for a method) lives
    in JobGraph.enumerate_cells and reaches every job downstream of the cells."""

    class WithoutAwp(JobGraph):
        def enumerate_cells(self):
            return [c for c in super().enumerate_cells() if c["s2ap"] != "awp"]

    cfg = load("paper_cifar10")
    full, fewer = JobGraph(cfg, [REPO]), WithoutAwp(cfg, [REPO])
    dropped = sum(c["s2ap"] == "awp" for c in full.cells)
    assert dropped and len(fewer.cells) == len(full.cells) - dropped
    a, b = full.plan(["all"]).counts(), fewer.plan(["all"]).counts()
    assert b["evaluate"] == a["evaluate"] - dropped and b["finetune"] == a["finetune"] - dropped
    assert b["prune"] == a["prune"]  # awp shares its search with off
    assert len(fewer.runs()) == len(full.runs()) - dropped
    assert fewer.plan(["table_ablation"]).counts()["evaluate"] < \
        full.plan(["table_ablation"]).counts()["evaluate"]


def test_a_target_the_preset_does_not_feed_names_the_ones_it_does():
    graph = JobGraph(load("paper_svhn"), [REPO])
    with pytest.raises(ConfigError, match=r"feeds no structured table \(its tables: main, ablation"):
        graph.plan(["table_structured"])
    with pytest.raises(ConfigError, match="unknown target 'tables'"):
        graph.plan(["tables"])
    assert graph.targets() == ["all", *(tables.KINDS[n].target for n in graph.cfg["tables"])]


def _dry_run(name: str, targets: list[str], cwd: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd),
           "-n", "--cores", "1", *targets, "--configfile", str(PRESETS / f"{name}.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs, job = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {"rule": m.group(1), "input": [], "output": []}
            jobs.append(job)
        elif job is not None and re.match(r"^    (input|output): ", line):
            key, _, files = line.strip().partition(": ")
            job[key] = files.split(", ")
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "quick", "offline", "standard"])
def test_the_dry_run_runs_the_plan_file_for_file(name, tmp_path):
    """The paper presets' dry runs are counted in tests/test_paper_presets.py."""
    graph = JobGraph(load(name), [REPO])
    targets = graph.targets()
    jobs = _dry_run(name, targets, tmp_path)
    plan = graph.plan(targets)
    assert Counter(j["rule"] for j in jobs) == Counter(plan.counts())
    assert sorted(f for j in jobs for f in j["output"]) == sorted(
        f for j in plan.all_jobs() if j.output is not None
        for f in ([j.output] if j.rule not in ("table", "figure") else graph.table_files(j.method)))
    produced = {f for j in jobs for f in j["output"]}
    for job in jobs:  # every input a job waits for is a planned job's output
        planned = plan.producers()
        assert all(f in planned for f in job["input"] if f in produced), job
