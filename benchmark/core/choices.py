"""The closed lists of words a preset may use, in one module without torch.

The config schema's enums are filled from here (``benchmark.core.config.load_schema``), so a value the
code accepts is a value the schema accepts and the other way round. The code implementing each
choice imports its list from here; where it keeps its own list (a torch module, a third-party
package), ``tests/test_config_schema.py`` pins the two equal.
"""
from __future__ import annotations

#: grid.s2ap: off; on (score-space step in the search and AWP in the finetune); score (search
#: step only); awp (finetune AWP only, the ablation)
S2AP_GRID_VALUES = ("off", "on", "score", "awp")
#: the s2ap value of a method that learns no scores; never written in a preset
S2AP_NA = "n/a"
#: "n/a" cannot be a path component; this is its spelling in paths and wildcards
S2AP_NA_PATH = "n-a"

#: s2ap.norm and diagnostics.norm: how the score perturbation z_l is scaled per layer
#: (formulas beside the code that computes it)
S2AP_NORMS = ("l2", "linf", "adaptive")

#: s2ap.gamma_status: whether the preset's S2AP gamma was chosen by a gamma sweep on its own
#: dataset and architecture (selected) or carried over from elsewhere (unselected: the paper's
#: values are not public); a label, it changes nothing in training, the leaderboard shows it
S2AP_GAMMA_STATUS = ("selected", "unselected")
#: purpose: what a preset's numbers are for; "plumbing" (the tiny preset: every stage runs, the
#: numbers mean nothing) heads its leaderboard with a note saying so (benchmark/results/aggregate.py)
PURPOSES = ("benchmark", "plumbing")

#: train.loss (benchmark/training/losses.py); free: free adversarial training (Shafahi et al. 2019), the
#: minibatch replayed train.free_replays times with one perturbation carried across replays
LOSSES = ("pgd_at", "trades", "clean", "free")

#: train.keep (benchmark/training/loop.py): the last epoch, or the best validation PGD accuracy once the
#: method allows selection (HARP: once its budget is met)
KEEP_RULES = ("last", "best_val")
#: recipe_ledger (benchmark/core/recipes.py): strict checks a preset against the ledger, marks only
#: marks the paper tables' reference cells of deviating recipes, off ignores it
RECIPE_LEDGER_MODES = ("off", "marks", "strict")

#: data.imagenet_test (benchmark/core/datasets.py): RobustBench's 5,000-image list from val/, or all of val/
IMAGENET_TESTS = ("robustbench", "folder")

#: train.schedule (benchmark/training/loop.py), stepped once per epoch; step: x0.1 at 50 % and again at
#: 75 % of the epochs (RST's published piecewise schedule)
SCHEDULES = ("cosine", "constant", "step")

#: evaluate.autoattack.version -> the attacks pyautoattack 0.2.0 runs for it, in its order
#: (AutoAttack._set_version); evaluate.autoattack.attacks is a subset of its version's list
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
#: every attack name pyautoattack knows (its ``AttackName`` literal)
AUTOATTACK_ATTACKS = tuple(dict.fromkeys(a for attacks in AUTOATTACK_VERSIONS.values() for a in attacks))

#: the paper tables and figures a preset can feed (preset key ``tables``) are declared with what
#: each shows in benchmark/core/paper_tables.py (``KINDS``), the one list of them
