# Shared state of the DAG, computed once per parse from the validated preset CFG.
import re
import shlex
import sys

PRESET = CFG["name"]
PLUGINS = apcfg.resolve_plugins(CFG["method_plugins"], SEARCH_DIRS)
METHODS = apcfg.methods_of(CFG, SEARCH_DIRS)
CELLS = apcfg.grid_cells(CFG, METHODS)
DENSE = apcfg.dense_cells(CFG, CELLS)
RECIPES = apcfg.pretrain_recipes(CFG, CELLS, DENSE)
TRAITS = {m: apcfg.method_traits(m, METHODS) for m in CFG["grid"]["methods"]}
THREADS = int(CFG["runtime"]["threads"])

# The interpreter running Snakemake is the one with the suite installed (the venv), and the
# repository goes first on the path so a run from another --directory uses this checkout's code.
PYTHON = shlex.quote(sys.executable)
BENCH = (f"PYTHONPATH={shlex.quote(str(REPO))}${{{{PYTHONPATH:+:$PYTHONPATH}}}} "
         f"OMP_NUM_THREADS={{threads}} APBENCH_THREADS={{threads}} {PYTHON} -m benchmark")
PLUGIN_ARGS = " ".join(f"--plugin {shlex.quote(p)}" for p in PLUGINS)

WORK = f"work/{PRESET}"
RESULTS = f"results/{PRESET}"
LEADERBOARD_CSV = f"{RESULTS}/leaderboard.csv"
LEADERBOARD_MD = f"{RESULTS}/leaderboard.md"


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    preset=re.escape(PRESET),
    dataset=_alternation(CFG["grid"]["datasets"]),
    arch=_alternation(CFG["grid"]["archs"]),
    method=_alternation(TRAITS),
    recipe="[0-9a-f]{10}",
    # canonical spelling only (benchmark.config.canonical_sparsity): "90", "99.5", never "90.0"
    sparsity=r"0|0\.[0-9]*[1-9]|[1-9][0-9]?(\.[0-9]*[1-9])?",
    seed=r"[0-9]+",
    s2ap="off|on|score|awp|n-a",


def dense_path(dataset, arch, recipe, seed):
    return f"{WORK}/pretrain/{dataset}/{arch}/{recipe}/seed{seed}/dense.pt"


def search_path(dataset, arch, method, s2ap, sparsity, seed):
    """s2ap is a grid value; the search is shared by on/score and by off/awp."""
    s = apcfg.s2ap_to_path(apcfg.s2ap_search_value(s2ap))
    return f"{WORK}/prune/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}/search.pt"


def model_path(dataset, arch, method, s2ap, sparsity, seed):
    s = apcfg.s2ap_to_path(s2ap)
    return f"{WORK}/finetune/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}/model.pt"


def run_path(cell):
    s = apcfg.s2ap_to_path(cell["s2ap"])
    return (f"{RESULTS}/runs/{cell['dataset']}/{cell['arch']}/{cell['method']}/{s}/"
            f"sp{cell['sparsity']}/seed{cell['seed']}.json")


def recipe_of(wc):
    return apcfg.pretrain_recipe_hash(CFG, wc.dataset, wc.arch, wc.method)


RUNS = [run_path(c) for c in DENSE] + [run_path(c) for c in CELLS]
