"""The job graph of a preset, planned once: which jobs run for a target, the file each one writes,
and the files it needs.

The Snakefile (workflows/rules/common.smk: its target lists and the rules' input functions), the
cost estimate (benchmark/planning/estimate.py) and the scaled run of speed/bench_quick.py all read
this plan, so the three cannot drift apart: ``snakemake -n`` runs exactly the jobs of
``JobGraph(cfg).plan(targets)`` (tests/test_jobgraph.py pins the counts of every shipped preset
and target against a dry run).

What decides which cells exist is ``JobGraph.enumerate_cells``, one function: a rule that leaves
out a cell, or merges two grid values that change nothing for a method, belongs there and reaches
the workflow, the estimate and the speed benchmark at once. The rules' wildcards and output
patterns stay in workflows/rules/*.smk; the paths here are the same patterns filled in (a test
compares them with a dry run's outputs). No Snakemake, torch or method code is imported: a method
file is read only for its traits (benchmark.core.registry).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core import config as apcfg
from benchmark.core import paper_tables as _tables
from benchmark.core import recipes
from benchmark.core.errors import ConfigError

# an offset far from any grid seed, so the second search of seed stability never coincides with
# another cell's search
SEARCH_SEED_OFFSET = 1000


@dataclass
class Job:
    """One job of the workflow: its rule, the wildcards of its output pattern, the file it writes
    (None for a target rule) and the files it needs, by input name of the rule."""

    rule: str
    dataset: str = ""
    arch: str = ""
    method: str | None = None
    # the grid value ("n/a" for a method that learns no scores); a search job's is the search half
    s2ap: str | None = None
    cell: Mapping[str, Any] | None = None
    output: str | None = None
    inputs: dict[str, list[str]] = field(default_factory=dict)
    wildcards: dict[str, str] = field(default_factory=dict)

    @property
    def needs(self) -> list[str]:
        return [f for files in self.inputs.values() for f in files]

    @property
    def key(self) -> tuple:
        return (self.rule, self.output) if self.output is not None else (self.rule,)


@dataclass
class Plan:
    """The jobs of one or more targets, by rule (the target rules themselves included), each once."""

    jobs: dict[str, list[Job]] = field(default_factory=dict)
    _index: dict[tuple, Job] = field(default_factory=dict, repr=False)
    _by_wildcards: dict[tuple, Job] = field(default_factory=dict, repr=False)

    def add(self, job: Job) -> Job:
        """The job, or the same job added before (same rule and output)."""
        if job.key in self._index:
            return self._index[job.key]
        self._index[job.key] = job
        self._by_wildcards.setdefault((job.rule, frozenset(job.wildcards.items())), job)
        self.jobs.setdefault(job.rule, []).append(job)
        return job

    def counts(self) -> dict[str, int]:
        return {rule: len(jobs) for rule, jobs in self.jobs.items()}

    def all_jobs(self) -> list[Job]:
        return [j for jobs in self.jobs.values() for j in jobs]

    def producers(self) -> dict[str, Job]:
        """output file -> the job that writes it."""
        return {j.output: j for j in self.all_jobs() if j.output is not None}

    def find(self, rule: str, wildcards: Mapping[str, Any]) -> Job | None:
        """The job of ``rule`` whose wildcards are these (a Snakemake rule's view of it)."""
        want = frozenset((k, str(v)) for k, v in wildcards.items())
        return self._by_wildcards.get((rule, want))


class JobGraph:
    """The cells, dense models, recipes and file names of one validated preset, and its plan."""

    def __init__(self, cfg: Mapping[str, Any], search_dirs: Iterable[str | Path] = (),
                 registry=None):
        self.cfg = cfg
        self.preset = cfg["name"]
        self.registry = registry if registry is not None else apcfg.methods_of(cfg, search_dirs)
        self.work, self.results = f"work/{self.preset}", f"results/{self.preset}"
        self.cells = self.enumerate_cells()
        self.dense = apcfg.dense_cells(cfg, self.cells)
        self.recipes = apcfg.pretrain_recipes(cfg, self.cells, self.dense)
        sweep = cfg.get("gamma_sweep") or {}
        # the grid's methods, and those only the gamma sweep uses
        self.traits = {m: self.registry.traits(m)
                       for m in [*cfg["grid"]["methods"], *(sweep.get("methods") or [])]}
        self.table_traits = {m: self.traits[m] for m in cfg["grid"]["methods"]}
        self.seed_stability = bool(cfg["diagnostics"].get("seed_stability"))
        # AutoAttack shards as jobs of their own (runtime.autoattack_shard_jobs): the count comes
        # from n_images before the data is read; a shard past the end of a smaller test set does
        # nothing
        aa = cfg["evaluate"].get("autoattack") or {}
        if cfg["runtime"].get("autoattack_shard_jobs") and aa.get("n_images"):
            self.n_aa_shards = -(-int(aa["n_images"]) // int(aa["shard_size"] or aa["n_images"]))
        else:
            self.n_aa_shards = 0
        self._plan: Plan | None = None

    def enumerate_cells(self) -> list[dict[str, Any]]:
        """Every pruned cell of the preset, in grid order: the one place that decides which
        cells (and so which searches, finetunes and evaluations) exist."""
        return apcfg.grid_cells(self.cfg, self.registry)

    # ------------------------------------------------------------ file names (the rules' outputs)
    def dense_path(self, dataset: str, arch: str, recipe: str, seed: int | str) -> str:
        """The dense model of a recipe: trained here per seed, or one external model for every seed."""
        if (self.recipes.get(recipe) or {}).get("external"):
            return f"{self.work}/external/{dataset}/{arch}/{recipe}/dense.pt"
        return f"{self.work}/pretrain/{dataset}/{arch}/{recipe}/seed{seed}/dense.pt"

    def search_path(self, dataset, arch, method, s2ap, sparsity, seed, second: bool = False) -> str:
        """s2ap is a grid value; the search is shared by on/score and by off/awp."""
        s = apcfg.s2ap_to_path(apcfg.s2ap_search_value(s2ap))
        name = "search_seed2" if second else "search"
        return f"{self.work}/prune/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}/{name}.pt"

    def model_path(self, dataset, arch, method, s2ap, sparsity, seed) -> str:
        s = apcfg.s2ap_to_path(s2ap)
        return f"{self.work}/finetune/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}/model.pt"

    def run_path(self, cell: Mapping[str, Any]) -> str:
        s = apcfg.s2ap_to_path(cell["s2ap"])
        return (f"{self.results}/runs/{cell['dataset']}/{cell['arch']}/{cell['method']}/{s}/"
                f"sp{cell['sparsity']}/seed{cell['seed']}.json")

    def seed_stability_path(self, dataset, arch, method, s2ap, sparsity, seed) -> str:
        s = apcfg.s2ap_to_path(apcfg.s2ap_search_value(s2ap))
        return f"{self.work}/seed_stability/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}.json"

    def shard_paths(self, cell: Mapping[str, Any]) -> list[str]:
        """The AutoAttack shard receipts an evaluation waits for (none unless shard jobs are on)."""
        s = apcfg.s2ap_to_path(cell["s2ap"])
        return [f"{self.work}/autoattack_shards/{cell['dataset']}/{cell['arch']}/{cell['method']}/"
                f"{s}/sp{cell['sparsity']}/seed{cell['seed']}/shard{i}.json"
                for i in range(self.n_aa_shards)]

    def model_file(self, cell: Mapping[str, Any]) -> str:
        """The model a cell's result evaluates: its dense model or its finetuned one."""
        if cell["method"] == "dense":
            return self.dense_path(cell["dataset"], cell["arch"], cell["recipe"], cell["seed"])
        return self.model_path(cell["dataset"], cell["arch"], cell["method"], cell["s2ap"],
                               cell["sparsity"], cell["seed"])

    def table_path(self, name: str, ext: str) -> str:
        return f"{self.results}/tables/{name}.{ext}"

    @property
    def leaderboard_stamp(self) -> str:
        """The aggregate job's declared output: the leaderboard files are written beside it."""
        return f"{self.results}/leaderboard.stamp.json"

    # ------------------------------------------------------------ what the targets need
    def dense_input(self, dataset: str, arch: str, method: str, seed: int | str) -> list[str]:
        """The dense model a search starts from; none for a method that prunes random weights (RST)."""
        if not self.traits[method]["needs_pretrain"]:
            return []
        recipe = apcfg.pretrain_recipe_hash(self.cfg, dataset, arch, method)
        return [self.dense_path(dataset, arch, recipe, seed)]

    def runs(self) -> list[str]:
        """Every result file of the preset: the dense rows, then the grid's cells."""
        return [self.run_path(c) for c in [*self.dense, *self.cells]]

    def model_files(self) -> list[str]:
        return [self.model_file(c) for c in [*self.dense, *self.cells]]

    def table_cells(self, name: str) -> list[Mapping[str, Any]]:
        return _tables.table_cells(self.cfg, self.cells, name, self.table_traits)

    def table_spec(self, name: str) -> dict[str, Any]:
        devs = recipes.deviations_by_method(self.cfg, self.table_traits, apcfg.stage_config)
        return _tables.spec(self.cfg, name, self.table_traits, devs)

    def table_files(self, name: str) -> list[str]:
        """The files of a table target; an error naming the preset's tables when it feeds none."""
        tables = self.cfg.get("tables") or {}
        if name not in tables:
            raise ConfigError(
                f"preset {self.preset} feeds no {name} table (its tables: "
                f"{', '.join(tables) or 'none'}); docs/paper_tables.md lists the preset of each table")
        return [self.table_path(name, ext) for ext in _tables.KINDS[name].outputs]

    def targets(self) -> list[str]:
        """Every target this preset has: all, and one per table it feeds."""
        return ["all", *(_tables.KINDS[n].target for n in self.cfg.get("tables") or {})]

    # ------------------------------------------------------------ the plan
    def full_plan(self) -> Plan:
        """The plan of every target of the preset, made once."""
        if self._plan is None:
            self._plan = self.plan(self.targets())
        return self._plan

    def plan(self, targets: Sequence[str] = ("all",)) -> Plan:
        """The jobs Snakemake runs for ``targets`` from scratch (``all`` or a table target)."""
        by_target = {k.target: k for k in _tables.KINDS.values()}
        out = Plan()
        for target in targets:
            if target == "all":
                chosen, with_dense = self.cells, True
                out.add(Job("aggregate", output=self.leaderboard_stamp,
                            inputs={"runs": self.runs()}))
                inputs = {"files": [self.leaderboard_stamp, *self.runs()]}
            elif target in by_target:
                kind = by_target[target]
                files = self.table_files(kind.name)
                chosen, with_dense = self.table_cells(kind.name), False
                rule = "figure" if kind.figure else "table"
                out.add(Job(rule, method=kind.name, output=files[0],
                            inputs={"runs": [self.run_path(c) for c in chosen]},
                            wildcards={"preset": self.preset, "table": kind.name}))
                inputs = {"files": files}
            else:
                raise ConfigError(f"unknown target {target!r}; this preset's: "
                                  f"{', '.join(self.targets())}")
            out.add(Job(target, inputs=inputs))
            for cell in chosen:
                self._add_cell(out, cell)
            if with_dense:
                for cell in self.dense:
                    self._add_dense_evaluation(out, cell)
        return out

    def _wildcards(self, cell: Mapping[str, Any], s2ap: str, **extra) -> dict[str, str]:
        return {"preset": self.preset, "dataset": cell["dataset"], "arch": cell["arch"],
                "method": cell["method"], "s2ap": apcfg.s2ap_to_path(s2ap),
                "sparsity": str(cell["sparsity"]), "seed": str(cell["seed"]),
                **{k: str(v) for k, v in extra.items()}}

    def _add_dense(self, out: Plan, dataset: str, arch: str, recipe: str, seed: int,
                   method: str | None) -> None:
        path = self.dense_path(dataset, arch, recipe, seed)
        if (self.recipes.get(recipe) or {}).get("external"):
            out.add(Job("import_dense", dataset, arch, output=path,
                        wildcards={"preset": self.preset, "dataset": dataset, "arch": arch,
                                   "recipe": recipe}))
        else:
            out.add(Job("pretrain", dataset, arch, method=method,
                        cell={"dataset": dataset, "arch": arch, "seed": seed}, output=path,
                        wildcards={"preset": self.preset, "dataset": dataset, "arch": arch,
                                   "recipe": recipe, "seed": str(seed)}))

    def _add_shards(self, out: Plan, cell: Mapping[str, Any], model: str) -> list[str]:
        shards = self.shard_paths(cell)
        for i, path in enumerate(shards):
            out.add(Job("autoattack_shard", cell["dataset"], cell["arch"], cell["method"],
                        cell["s2ap"], cell, output=path, inputs={"model": [model]},
                        wildcards=self._wildcards(cell, cell["s2ap"], shard=i)))
        return shards

    def _add_dense_evaluation(self, out: Plan, cell: Mapping[str, Any]) -> None:
        d, a = cell["dataset"], cell["arch"]
        model = self.model_file(cell)
        shards = self._add_shards(out, cell, model)
        out.add(Job("evaluate_dense", d, a, "dense", "n/a", cell, output=self.run_path(cell),
                    inputs={"model": [model], "shards": shards},
                    wildcards={"preset": self.preset, "dataset": d, "arch": a,
                               "seed": str(cell["seed"])}))
        self._add_dense(out, d, a, cell["recipe"], cell["seed"], cell.get("recipe_method"))

    def _add_cell(self, out: Plan, cell: Mapping[str, Any]) -> None:
        d, a, m, s, sp, seed = (cell[k] for k in ("dataset", "arch", "method", "s2ap", "sparsity",
                                                  "seed"))
        search_value = apcfg.s2ap_search_value(s)
        search = self.search_path(d, a, m, s, sp, seed)
        model = self.model_path(d, a, m, s, sp, seed)
        # the cell's recipe is the one dense_input finds: grid_cells hashes it the same way
        dense = [] if cell["recipe"] is None else [self.dense_path(d, a, cell["recipe"], seed)]
        stability = (self.seed_stability and cell["traits"]["learns_scores"])
        stability_file = [self.seed_stability_path(d, a, m, s, sp, seed)] if stability else []
        shards = self.shard_paths(cell)
        out.add(Job("evaluate", d, a, m, s, cell, output=self.run_path(cell),
                    inputs={"model": [model], "seed_stability": stability_file, "shards": shards},
                    wildcards=self._wildcards(cell, s)))
        self._add_shards(out, cell, model)
        out.add(Job("finetune", d, a, m, s, cell, output=model, inputs={"search": [search]},
                    wildcards=self._wildcards(cell, s)))
        out.add(Job("prune", d, a, m, search_value, cell, output=search, inputs={"dense": dense},
                    wildcards=self._wildcards(cell, search_value)))
        if stability:
            second = self.search_path(d, a, m, s, sp, seed, second=True)
            out.add(Job("prune_second_seed", d, a, m, search_value, cell, output=second,
                        inputs={"dense": dense}, wildcards=self._wildcards(cell, search_value)))
            out.add(Job("seed_stability", d, a, m, search_value, cell, output=stability_file[0],
                        inputs={"a": [search], "b": [second]},
                        wildcards=self._wildcards(cell, search_value)))
        if cell["recipe"] is not None:
            self._add_dense(out, d, a, cell["recipe"], seed, m)


__all__ = ["SEARCH_SEED_OFFSET", "Job", "JobGraph", "Plan"]
