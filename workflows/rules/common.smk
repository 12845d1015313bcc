# Shared state of the DAG, computed once per parse from the validated preset CFG; the stage
# commands (each written once, here); and every function the rules call. The other .smk files
# hold rules only.
import copy
import os
import hashlib
import re
import shlex
import sys

PRESET = CFG["name"]
METHOD_FILES = apcfg.resolve_method_files(CFG["method_files"], SEARCH_DIRS)
METHODS = apcfg.methods_of(CFG, SEARCH_DIRS)
# The job graph, planned once (benchmark/planning/jobgraph.py; the estimate and speed/bench_quick.py
# read the same plan): the cells, dense models and recipes, the file of every job, and the input
# functions below, which look a job's inputs up in PLAN.
GRAPH = jobgraph.JobGraph(CFG, registry=METHODS)
PLAN = GRAPH.full_plan()
CELLS = GRAPH.cells
DENSE = GRAPH.dense
RECIPES = GRAPH.recipes
SWEEP = CFG.get("gamma_sweep") or {}
# the grid's methods, and those only the gamma sweep uses
TRAITS = GRAPH.traits
THREADS = int(CFG["runtime"]["threads"])


def _run_resource(name):
    """This run's global resource (--cores, --resources NAME=N) as an int, or None."""
    res = workflow.global_resources.get(name)
    value = getattr(res, "value", res)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


# Pretraining gets the preset's threads like every other job, even when it runs alone: a thread
# count changes a CPU run's numbers (benchmark/runtime/threads.py), and the same preset must give
# the same numbers on any machine, idle or busy.
PRETRAIN_THREADS = THREADS
# A multi-GPU workstation (workflows/profiles/local-gpu, --resources gpu=N): every job that
# trains or attacks claims one of the N cards for itself (benchmark/runtime/gpu_slots.py).
# With runtime.jobs_per_gpu k, k jobs share each card: --resources gpu counts job slots, k per card
# (the runner's --gpus N passes N x k).
JOBS_PER_GPU = int(CFG["runtime"].get("jobs_per_gpu") or 1)
_GPU_JOB_SLOTS = _run_resource("gpu") if workflow.local_exec else None
if _GPU_JOB_SLOTS and _GPU_JOB_SLOTS % JOBS_PER_GPU:
    raise ValueError(
        f"--resources gpu={_GPU_JOB_SLOTS} is not a whole number of cards at "
        f"runtime.jobs_per_gpu {JOBS_PER_GPU}: give cards x {JOBS_PER_GPU} (the runner's "
        "--gpus N does)"
    )
GPU_SLOTS = _GPU_JOB_SLOTS // JOBS_PER_GPU if _GPU_JOB_SLOTS else None
# Every job says what it needs from a cluster (benchmark/planning/slurm_resources.py): the preset's threads as CPUs, a
# GPU only on a CUDA preset, memory for the data it holds, a time limit from the estimate of that
# very job. The executor is not known while this file is parsed; locally these resources constrain
# nothing unless the run names them (--resources gpu=N with the local-gpu profile).
from benchmark.planning import calibration as _calibration
from benchmark.planning import estimate as _estimate
from benchmark.planning import slurm_resources as _slurm

_CAL = _calibration.load()
PLAN_DEVICE = _slurm.plan_device(CFG, _CAL, PLAN)
# the recipe's method shapes the pretrain stage (a method's own pretrain recipe)
_RECIPE_METHOD = {
    c["recipe"]: (c.get("recipe_method") if c["method"] == "dense" else c["method"])
    for c in [*CELLS, *DENSE]
    if c.get("recipe") is not None
}


def _cluster_job(name, wc):
    """The estimate's Job for a name's job (benchmark/planning/estimate.py prices it)."""
    if name in ("pretrain",):
        return _estimate.Job(
            name, wc.dataset, wc.arch, method=_RECIPE_METHOD.get(wc.recipe), cell=dict(wc)
        )
    if "dataset" not in wc.keys():
        # a submission names its model only: the preset's most demanding dataset (its evaluation
        # runs on one of the grid's datasets; the estimate prices no submission)
        dataset = max(CFG["grid"]["datasets"], key=lambda d: _slurm.memory_mb(CFG, d))
        return _estimate.Job(name, dataset, CFG["grid"]["archs"][0])
    method = wc.get("method", "dense")
    if method == "dense" or name == "evaluate_dense":
        return _estimate.Job(name, wc.dataset, wc.arch, "dense", "n/a")
    s2ap = apcfg.s2ap_from_path(wc.s2ap) if "s2ap" in wc.keys() else "off"
    return _estimate.Job(name, wc.dataset, wc.arch, method, s2ap, {"traits": TRAITS[method]})


def cluster_resources(name):
    """A rule's `resources:`, each a function of the job's wildcards."""
    light = name not in _slurm.GPU_RULES

    def one(key):
        def value(wc):
            job = None if light else _cluster_job(name, wc)
            res = _slurm.job_resources(CFG, name, job, device=PLAN_DEVICE, cal=_CAL)
            return res.get(key)

        return value

    keys = ["mem_mb", "runtime", *_slurm.gpu_request(PLAN_DEVICE, JOBS_PER_GPU)]
    chosen = _slurm.settings()
    keys += ["slurm_partition"] if chosen.partition else []
    keys += ["slurm_account"] if chosen.account else []
    if light:
        keys = [k for k in keys if k not in ("gpu", "gres")]
    return {k: one(k) for k in keys}


def check_slurm_cluster():
    """Before the first sbatch: a clear error for an unreachable controller, a partition or
    account the cluster lacks, or a job no node can ever run (it would pend forever)."""
    requests = [
        (job.rule.name, job.threads, dict(job.resources.items()))
        for job in workflow.dag.needrun_jobs()
        if not workflow.is_local(job.rule)
    ]
    problems = _slurm.cluster_problems(requests, jobs_per_gpu=JOBS_PER_GPU)
    if problems:
        raise preflight.PreflightError(
            "the SLURM cluster cannot run this preset; nothing was submitted:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    _slurm.quiet_account_guess()


REFERENCE_CSV = (
    apcfg.resolve_file(CFG["reference_csv"], SEARCH_DIRS, field="reference_csv")
    if CFG.get("reference_csv")
    else None
)
# a cell's search, finetunes and evaluations as one cluster job (runtime.group_jobs; the local
# executor ignores groups)
GROUP_JOBS = bool(CFG["runtime"].get("group_jobs"))
SEARCH_SEED_OFFSET = jobgraph.SEARCH_SEED_OFFSET

WORK = GRAPH.work
RESULTS = GRAPH.results
LEADERBOARD_CSV = f"{RESULTS}/leaderboard.csv"
LEADERBOARD_MD = f"{RESULTS}/leaderboard.md"
# The aggregate rule's declared output: Snakemake deletes a job's outputs before it runs, so the
# leaderboard files themselves are written beside the stamp and a failed aggregation keeps them
LEADERBOARD_STAMP = GRAPH.leaderboard_stamp
# The published run of this preset (results/published/<preset>/, committed): when it exists, the
# leaderboard compares this run with it, cell by cell, and is made again when it changes
PUBLISHED_CSV = f"results/published/{PRESET}/leaderboard.csv"
PUBLISHED_INPUT = [PUBLISHED_CSV] if os.path.isfile(PUBLISHED_CSV) else []
# External submissions (submissions/<name>/submission.yaml naming this preset) join its leaderboard
SUBMISSIONS = {s["name"]: s for s in submission_lib.submissions_for(PRESET, warn=logger.warning)}
SUBMISSION_RESULTS = [f"{RESULTS}/submissions/{name}.json" for name in SUBMISSIONS]


# ---------------------------------------------------------------- what makes a job rerun
class Untracked:
    """A shell argument Snakemake's params trigger does not see: it records only params it can
    repr, and this is not one. A stage config travels this way beside its `config_key` param (the
    hash of what in it shapes the numbers), so moving data.root or changing runtime.threads reruns
    nothing while any change to the recipe reruns the stage."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def untracked_json(stage_cfg):
    return Untracked(apcfg.dumps(stage_cfg))


def _content_hash(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


# Each method's source is a param of that method's jobs only: editing a method file reruns its
# searches and finetunes (and so its evaluations), and a method file the grid does not use
# changes no job.
METHOD_CODE = {m: _content_hash(METHODS.source(m)) for m in TRAITS}


def method_file_args(wc):
    """--method-file for a method defined in one of the preset's method files, else nothing."""
    source = str(METHODS.source(wc.method))
    return f"--method-file {shlex.quote(source)}" if source in METHOD_FILES else ""


# ---------------------------------------------------------------- the commands
# The interpreter running Snakemake is the one with the suite installed (the venv), and the
# repository goes first on the path so a run from another --directory uses this checkout's code.
_PYTHON = shlex.quote(sys.executable)
_BENCH = (
    f"PYTHONPATH={shlex.quote(str(REPO))}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
    + (f"APBENCH_GPU_SLOTS={GPU_SLOTS} " if GPU_SLOTS else "")
    + (f"APBENCH_JOBS_PER_GPU={JOBS_PER_GPU} " if GPU_SLOTS and JOBS_PER_GPU > 1 else "")
    + f"OMP_NUM_THREADS={{threads}} APBENCH_THREADS={{threads}} {_PYTHON} -m benchmark"
)


def bench(command):
    """`python -m benchmark <command>` for a rule's shell, its output into the job's log."""
    return f"{_BENCH} {command} > {{log:q}} 2>&1"


PRETRAIN_CMD = bench(
    "pretrain --config {params.cfg:q} --dataset {wildcards.dataset:q} --arch {wildcards.arch:q}"
    " --seed {wildcards.seed} --out {output:q} --state-dir {params.state:q}"
)
# A rule using PRUNE_CMD or FINETUNE_CMD defines the params they name. A plain search passes its
# own seed as the search seed (the default); the second search of seed stability another one.
PRUNE_CMD = bench(
    "prune --config {params.cfg:q} --dataset {wildcards.dataset:q} --arch {wildcards.arch:q}"
    " --method {wildcards.method:q} --s2ap {params.s2ap:q} --sparsity {wildcards.sparsity}"
    " --seed {wildcards.seed} --search-seed {params.search_seed} --dense {params.dense:q}"
    " --out {output:q} --state-dir {params.state:q} {params.method_file}"
)
FINETUNE_CMD = bench(
    "finetune --config {params.cfg:q} --dataset {wildcards.dataset:q} --arch {wildcards.arch:q}"
    " --method {wildcards.method:q} --s2ap {params.s2ap:q} --sparsity {wildcards.sparsity}"
    " --seed {wildcards.seed} --search {input.search:q} --out {output:q}"
    " --state-dir {params.state:q} {params.method_file}"
)
EVALUATE_CMD = bench(
    "evaluate --config {params.cfg:q} --model {input.model:q} --cell {params.cell:q}"
    " --out {output:q} --state-dir {params.state:q} {params.extra}"
)
AUTOATTACK_SHARD_CMD = bench(
    "autoattack-shard --config {params.cfg:q} --model {input.model:q} --cell {params.cell:q}"
    " --shard {wildcards.shard} --state-dir {params.state:q} --out {output:q}"
)
SEED_STABILITY_CMD = bench("stability --a {input.a:q} --b {input.b:q} --out {output:q}")
IMPORT_DENSE_CMD = bench(
    "import-dense --entry {params.entry:q} --dataset {wildcards.dataset:q}"
    " --arch {wildcards.arch:q} --model {params.model:q} --out {output:q}"
)
TABLE_CMD = bench(
    "table --spec {params.spec:q} --runs {params.runs} --out {params.out:q}"
    " --reference {input.reference:q}"
)
AGGREGATE_CMD = bench(
    "aggregate --runs {params.runs} --out {params.out:q} {params.reference} {params.published}"
    " --purpose {params.purpose}"
)
SUBMIT_CMD = bench(
    "submit {params.folder:q} --preset {params.preset:q} --out {output:q} --state-dir {params.state:q}"
)
SWEEP_REPORT_CMD = bench("sweep-report --models {params.models} --out {output.csv:q}")


# ---------------------------------------------------------------- wildcards and paths
def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    preset=re.escape(PRESET),
    dataset=_alternation(CFG["grid"]["datasets"]),
    arch=_alternation(CFG["grid"]["archs"]),
    method=_alternation(TRAITS),
    recipe="[0-9a-f]{10}",
    # canonical spelling only (benchmark.core.config.canonical_sparsity): "90", "99.5", never "90.0"
    sparsity=r"0|0\.[0-9]*[1-9]|[1-9][0-9]?(\.[0-9]*[1-9])?",
    seed=r"[0-9]+",
    s2ap="off|on|score|awp|n-a",
    name=r"[a-z0-9][a-z0-9._-]*",


def planned(rule, name, one=False):
    """An input function: the files named ``name`` of the planned job of ``rule`` with these
    wildcards (``one``: the file, or none); an error when the plan has no such job."""

    def files(wc):
        job = PLAN.find(rule, dict(wc.items()))
        if job is None:
            raise ValueError(f"{rule} {'/'.join(map(str, wc))} is not a job of preset {PRESET}")
        files = job.inputs[name]
        return (files[0] if files else []) if one else files

    return files


RUNS = GRAPH.runs()
DENSE_BY_KEY = {(c["dataset"], c["arch"], str(c["seed"])): c for c in DENSE}
CELL_BY_KEY = {
    (
        c["dataset"],
        c["arch"],
        c["method"],
        apcfg.s2ap_to_path(c["s2ap"]),
        c["sparsity"],
        str(c["seed"]),
    ): c
    for c in CELLS
}


def shard_cell(wc):
    return dense_cell(wc) if wc.method == "dense" else pruned_cell(wc)


# ---------------------------------------------------------------- the rules' inputs and configs
def recipe_config(wc):
    """The pretrain stage config a recipe hash stands for."""
    recipe = RECIPES.get(wc.recipe)
    if recipe is None or (recipe["dataset"], recipe["arch"]) != (wc.dataset, wc.arch):
        raise ValueError(
            f"no pretrain recipe {wc.recipe} for {wc.dataset}/{wc.arch} in preset {PRESET}"
        )
    return recipe["config"]


def sweep_dense(wc):
    """The dense model a sweep's search starts from (the sweep is not in the plan: its own target)."""
    return GRAPH.dense_input(wc.dataset, wc.arch, wc.method, wc.seed)


def dense_arg(wc, input):
    return input.dense if input.dense else "none"


def cell_stage_config(stage, wc, s2ap=None, cfg=None):
    """The stage config of a grid cell's prune or finetune job (s2ap from the path if not given)."""
    return apcfg.stage_config(
        CFG if cfg is None else cfg,
        stage,
        dataset=wc.dataset,
        arch=wc.arch,
        method=wc.method,
        s2ap=apcfg.s2ap_from_path(wc.s2ap) if s2ap is None else s2ap,
        traits=TRAITS[wc.method],
    )


def evaluate_config(wc):
    return apcfg.stage_config(CFG, "evaluate", dataset=wc.dataset, arch=wc.arch)


def pruned_cell(wc):
    key = (wc.dataset, wc.arch, wc.method, wc.s2ap, wc.sparsity, wc.seed)
    if key not in CELL_BY_KEY:
        raise ValueError(f"{'/'.join(key)} is not a cell of preset {PRESET}")
    return CELL_BY_KEY[key]


def dense_cell(wc):
    return DENSE_BY_KEY[(wc.dataset, wc.arch, wc.seed)]


def external_entry(wc):
    """The external_dense entry a recipe stands for, its file as found on this machine."""
    recipe = RECIPES.get(wc.recipe) or {}
    entry = recipe.get("external")
    if entry is None or (recipe["dataset"], recipe["arch"]) != (wc.dataset, wc.arch):
        raise ValueError(f"no external dense model {wc.recipe} for {wc.dataset}/{wc.arch}")
    return external_dense.resolved(entry, SEARCH_DIRS)


def cell_group(wc):
    """One cluster job per mask search with everything downstream of it (runtime.group_jobs)."""
    if not GROUP_JOBS:
        return None
    s = apcfg.s2ap_to_path(apcfg.s2ap_search_value(apcfg.s2ap_from_path(wc.s2ap)))
    return f"cell-{wc.dataset}-{wc.arch}-{wc.method}-{s}-sp{wc.sparsity}-seed{wc.seed}"


def extra_diagnostics(wc, input):
    return " ".join(f"--extra-diagnostics {shlex.quote(str(f))}" for f in input.seed_stability)


def published_arg(wc, input):
    """--published <the published leaderboard>, when the rule has it as an input."""
    files = [input.published] if isinstance(input.published, str) else list(input.published)
    return " ".join(f"--published {shlex.quote(str(f))}" for f in files)


def quoted_inputs(wc, input):
    return " ".join(shlex.quote(str(f)) for f in input)


def sweep_config(stage, wc):
    """The sweep's prune or finetune config: the grid value "score" at the path's gamma, which
    wins over the preset's gamma and over the method's own (methods.<name>.s2ap.gamma)."""
    sub = copy.deepcopy(CFG)
    sub["s2ap"]["gamma"] = float(wc.gamma)
    sub["s2ap"].update(SWEEP.get("s2ap") or {})
    own = (sub.get("methods") or {}).get(wc.method) or {}
    if own.get("s2ap"):
        own["s2ap"]["gamma"] = float(wc.gamma)
    return cell_stage_config(stage, wc, s2ap="score", cfg=sub)


if SWEEP:
    SWEEP_METHODS = SWEEP.get("methods") or [
        m for m in CFG["grid"]["methods"] if TRAITS[m]["learns_scores"]
    ]
    SWEEP_SPARSITIES = [
        apcfg.canonical_sparsity(s) for s in (SWEEP.get("sparsities") or CFG["grid"]["sparsities"])
    ]
    SWEEP_GAMMAS = [str(float(g)) for g in SWEEP["gammas"]]
    # the selection is an average over seeds: one seed's noise is as large as the effect
    SWEEP_SEEDS = list(SWEEP.get("seeds") or CFG["grid"]["seeds"])
    SWEEP_MODELS = [
        f"{WORK}/sweep/gamma{g}/finetune/{d}/{a}/{m}/sp{sp}/seed{seed}/model.pt"
        for g in SWEEP_GAMMAS
        for d in CFG["grid"]["datasets"]
        for a in CFG["grid"]["archs"]
        for m in SWEEP_METHODS
        for sp in SWEEP_SPARSITIES
        for seed in SWEEP_SEEDS
    ]


# ---------------------------------------------------------------- publishing and submissions
MODEL_FILES = GRAPH.model_files()
# a submission's result names its own model file (submissions/<name>/...)
MODEL_FILES += [s["model"] for s in SUBMISSIONS.values()]


def submission_model(wc):
    return SUBMISSIONS[wc.name]["model"]


# ---------------------------------------------------------------- paper tables (tables.smk)
TABLE_NAMES = [n for n in CFG["tables"] if not tables.KINDS[n].figure]
FIGURE_NAMES = [n for n in CFG["tables"] if tables.KINDS[n].figure]
# the published numbers beside ours: the preset's file, else the AP benchmark of the package
TABLE_REFERENCE = REFERENCE_CSV or str(apref.AP_BENCHMARK_CSV)
NO_NAME = "(?!)"  # a wildcard constraint nothing matches: the preset feeds no such table


def table_spec(wc):
    return apcfg.dumps(GRAPH.table_spec(wc.table))


def table_files(name):
    """The files of a table target; an error naming the preset's tables when it feeds none."""
    return lambda wc: GRAPH.table_files(name)
