"""The predicted wall time of a preset's whole DAG (speed/bench_quick.py's part 5): the jobs of
the workflow's own plan (benchmark/planning/jobgraph.py), each job's cost from the measured job of
the same stage and method, and a greedy list schedule as Snakemake's local executor runs it."""
from __future__ import annotations

import heapq
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.core import config as C  # noqa: E402

# the workflow's rules this scaled run measures, and the stage each one's cost is taken from
MEASURED_STAGES = {"pretrain": "pretrain", "prune": "prune", "finetune": "finetune",
                   "evaluate": "evaluate", "evaluate_dense": "evaluate", "aggregate": "aggregate"}


def preset_jobs(cfg: dict) -> list[dict]:
    """Every job `make <preset>` runs, with its dependencies: the workflow's own plan
    (benchmark/planning/jobgraph.py). Its target rule and any job of a rule this run does not
    measure (seed stability, an external model's import) are left out of the schedule."""
    from benchmark.planning.jobgraph import JobGraph

    plan = JobGraph(cfg, [REPO]).plan(["all"])
    producer = plan.producers()
    jobs = []
    for job in plan.all_jobs():
        stage = MEASURED_STAGES.get(job.rule)
        if stage is None:
            continue
        deps = {producer[f].output for f in job.needs
                if f in producer and producer[f].rule in MEASURED_STAGES}
        cell = job.cell if stage != "pretrain" else None
        jobs.append({"rule": job.rule, "stage": stage,
                     # the aggregate job's key is its stage: its cost is the measured aggregation
                     "key": "aggregate" if stage == "aggregate" else job.output,
                     "method": None if cell is None else job.method,
                     "s2ap": None if cell is None else job.s2ap,
                     "sparsity": None if cell is None else float(cell["sparsity"]),
                     "deps": sorted(deps)})
    # the lone pretraining first, the aggregation last, as they run
    order = {"pretrain": 0, "evaluate_dense": 1, "aggregate": 3}
    return sorted(jobs, key=lambda j: order.get(j["rule"], 2))


def job_cost(job: dict, measured: dict[str, float]) -> tuple[float, str]:
    """A job's CPU seconds from the measured job of the same stage and method (same S2AP value if
    measured, else any), the nearest sparsity for evaluations (their cost follows robustness)."""
    stage = job["stage"]
    if stage == "aggregate":
        return measured.get("aggregate", 2.0), "aggregate (measured start-up only)"
    if stage == "pretrain":
        return measured["pretrain"], "pretrain"
    if job["method"] == "dense":
        return measured["evaluate/dense"], "evaluate/dense"
    same = [k for k in measured if k.startswith(f"{stage}/{job['method']}/")]
    if not same:
        return float("nan"), f"no measured {stage} job of {job['method']}"
    if stage == "evaluate":
        # AutoAttack's cost follows the robust images, i.e. the sparsity, not the S2AP value:
        # linear between the nearest measured sparsities
        points = sorted({float(k.split("/")[3]): measured[k] for k in same}.items())
        sp = job["sparsity"]
        below = [p for p in points if p[0] <= sp] or points[:1]
        above = [p for p in points if p[0] >= sp] or points[-1:]
        (s0, c0), (s1, c1) = below[-1], above[0]
        cost = c0 if s1 == s0 else c0 + (c1 - c0) * (sp - s0) / (s1 - s0)
        return cost, f"evaluate/{job['method']} at sp {s0:g}..{s1:g}"
    exact_s2ap = [k for k in same if k.split("/")[2] == C.s2ap_to_path(job["s2ap"])]
    pool = exact_s2ap or same
    key = min(pool, key=lambda k: abs(float(k.split("/")[3]) - job["sparsity"]))
    return measured[key], key


def simulate(jobs: list[dict], cost: dict[str, float], cores: int, threads: dict[str, int],
             order: str = "critical") -> float:
    """Wall seconds of a greedy list schedule: whenever cores are free, start a ready job: the
    one with the most work downstream of it (order "critical"), or the longest one last (order
    "worst": the shortest ready job first, which leaves the longest for the end). A job on t
    threads takes cost / speedup; (t, speedup) per job key in ``threads``."""
    by_key = {j["key"]: j for j in jobs}
    children: dict[str, list[str]] = defaultdict(list)
    for j in jobs:
        for d in j["deps"]:
            children[d].append(j["key"])
    below: dict[str, float] = {}

    def downstream(k):
        if k not in below:
            below[k] = cost[k] + max((downstream(c) for c in children[k]), default=0.0)
        return below[k]

    remaining = {k: len(by_key[k]["deps"]) for k in by_key}
    ready = [k for k, n in remaining.items() if n == 0]
    running: list[tuple[float, str, int]] = []
    now, free = 0.0, cores
    while ready or running:
        if order == "critical":
            ready.sort(key=lambda k: -downstream(k))
        else:
            ready.sort(key=lambda k: cost[k])
        started = True
        while started:
            started = False
            for k in list(ready):
                t, speedup = threads.get(k, (1, 1.0))
                t = min(t, cores)
                if t <= free:
                    ready.remove(k)
                    free -= t
                    heapq.heappush(running, (now + cost[k] / speedup, k, t))
                    started = True
                    break
        end, k, t = heapq.heappop(running)
        now, free = end, free + t
        for c in children[k]:
            remaining[c] -= 1
            if remaining[c] == 0:
                ready.append(c)
    return now
