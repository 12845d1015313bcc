# Adversarial-pruning benchmark: pretrain -> mask search -> finetune -> evaluate -> leaderboard.
#
#   snakemake --profile workflows/profiles/local                      # presets/quick.yaml
#   snakemake --profile workflows/profiles/local --configfile presets/tiny.yaml
#   snakemake table_main --configfile presets/paper_cifar10.yaml               # one paper table
#   snakemake table_main --configfile presets/paper_cifar10.yaml presets/smoke.yaml   # its smoke form
#   (make quick / make run PRESET=tiny do the same and resume a killed run without --unlock)
#
# The preset is validated (schema, names, rules across fields) while this file is parsed, i.e.
# before any job runs; what depends on the machine is a warning here and an error in `onstart`,
# before the first job (benchmark/planning/preflight.py). Nothing here imports torch or a method file.
import sys
from pathlib import Path

REPO = Path(workflow.basedir).resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from snakemake.logging import logger
from snakemake.utils import validate

from benchmark.core import config as apcfg
from benchmark.core import external_dense
from benchmark.planning import jobgraph, preflight
from benchmark.publishing import submission as submission_lib
from benchmark.results import reference as apref
from benchmark.core import paper_tables as tables
from benchmark.core import recipes

# Not a `configfile:` directive: that one would also be loaded under --configfile, and its keys
# (per-method overrides, say) would leak into the other preset.
if not workflow.overwrite_configfiles:
    workflow.configfile(str(REPO / "presets" / "quick.yaml"))

PRESET_FILE = (
    Path(workflow.overwrite_configfiles[-1])
    if workflow.overwrite_configfiles
    else REPO / "presets" / "quick.yaml"
)
# Method files named in a preset are looked up in the working directory, then in the repository.
SEARCH_DIRS = [Path.cwd(), REPO]

# Snakemake reads --configfile with PyYAML's lenient loader (duplicate keys kept last, yes/no as
# booleans, .nan as a number): the same files read by the strict loader must give a valid preset.
apcfg.validate(
    apcfg.load_presets(workflow.overwrite_configfiles or [PRESET_FILE]),
    search_dirs=SEARCH_DIRS,
)
CFG = apcfg.finish_name(apcfg.with_defaults(config), PRESET_FILE.stem)
CFG = apcfg.validate(CFG, search_dirs=SEARCH_DIRS)
validate(CFG, "workflows/schema/config.schema.yaml")

for _problem in preflight.machine_problems(CFG, SEARCH_DIRS, deep=False):
    logger.warning(f"warning: {_problem} (an error before the first job that runs on this machine)")


onstart:
    # jobs run here with the local executor; a cluster executor runs them elsewhere
    for _problem in preflight.before_first_job(
        CFG, SEARCH_DIRS, enforce=workflow.local_exec, pythonpath=REPO
    ):
        logger.warning(f"warning: {_problem} (on this machine; jobs run on the cluster)")
    # a paper preset's declared deviations from the published recipes (docs/recipes.md)
    for _line in recipes.startup_lines(CFG, TRAITS, apcfg.stage_config):
        logger.info(_line)
    # a SLURM submission: the cluster is checked before the first sbatch (benchmark/planning/slurm_resources.py)
    if getattr(workflow.executor_plugin, "name", None) == "slurm":
        check_slurm_cluster()


include: "workflows/rules/common.smk"
include: "workflows/rules/pretrain.smk"
include: "workflows/rules/prune.smk"
include: "workflows/rules/finetune.smk"
include: "workflows/rules/seed_stability.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/aggregate.smk"
include: "workflows/rules/sweep.smk"
include: "workflows/rules/site.smk"
include: "workflows/rules/submissions.smk"
include: "workflows/rules/tables.smk"


# Cheap bookkeeping runs on the submitting machine, not as a cluster job (the table targets say
# so themselves, workflows/rules/tables.smk).
localrules:
    all,
    aggregate,
    seed_stability,
    submissions,
    table,
    figure,


# Every result file is a target too, not only the leaderboard: Snakemake (>= 7.7) does not remake
# a deleted intermediate file whose downstream output is up to date, and a result deleted by hand
# must come back.
rule all:
    default_target: True
    input:
        LEADERBOARD_STAMP,
        RUNS,
