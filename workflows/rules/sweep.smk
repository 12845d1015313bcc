# S2AP gamma sweep: `snakemake gamma_sweep --configfile presets/<preset>.yaml`.
#
# For every gamma in gamma_sweep.gammas: the mask search with the score step at that gamma (the
# grid value "score": no AWP, so the sweep isolates the score-space step; gamma 0 runs the same
# two-pass path and equals the plain method), then the plain finetune. The report selects a
# gamma per (dataset, arch, method, sparsity) on the validation slice only (benchmark/sweep.py).

import copy

SWEEP = CFG.get("gamma_sweep") or {}


def _sweep_cfg(stage, wc):
    sub = copy.deepcopy(CFG)
    sub["s2ap"]["gamma"] = float(wc.gamma)
    sub["s2ap"].update(SWEEP.get("s2ap") or {})
    return apcfg.dumps(apcfg.stage_config(sub, stage, dataset=wc.dataset, arch=wc.arch,
                                          method=wc.method, s2ap="score", traits=TRAITS[wc.method]))


if SWEEP:
    SWEEP_METHODS = SWEEP.get("methods") or [m for m in CFG["grid"]["methods"] if TRAITS[m]["learns_scores"]]
    SWEEP_SPARSITIES = [apcfg.canonical_sparsity(s) for s in (SWEEP.get("sparsities") or CFG["grid"]["sparsities"])]
    SWEEP_GAMMAS = [str(float(g)) for g in SWEEP["gammas"]]
    SWEEP_MODELS = [
        f"{WORK}/sweep/gamma{g}/finetune/{d}/{a}/{m}/sp{sp}/seed{seed}/model.pt"
        for g in SWEEP_GAMMAS for d in CFG["grid"]["datasets"] for a in CFG["grid"]["archs"]
        for m in SWEEP_METHODS for sp in SWEEP_SPARSITIES for seed in CFG["grid"]["seeds"]
    ]

    rule sweep_prune:
        input:
            dense=_prune_dense,
        output:
            "work/{preset}/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/search.pt",
        log:
            "work/{preset}/logs/sweep_prune/gamma{gamma}/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}.log",
        wildcard_constraints:
            gamma=r"[0-9]+\.[0-9]+(e-?[0-9]+)?",
        params:
            cfg=lambda wc: _sweep_cfg("prune", wc),
            dense=lambda wc, input: input.dense if input.dense else "none",
            state="work/{preset}/state/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}",
            plugins=PLUGIN_ARGS,
        threads: THREADS
        shell:
            BENCH + " prune --config {params.cfg:q} --dataset {wildcards.dataset:q}"
            " --arch {wildcards.arch:q} --method {wildcards.method:q} --s2ap on"
            " --sparsity {wildcards.sparsity} --seed {wildcards.seed} --dense {params.dense:q}"
            " --out {output:q} --state-dir {params.state:q} {params.plugins} > {log:q} 2>&1"

    rule sweep_finetune:
        input:
            search="work/{preset}/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/search.pt",
        output:
            "work/{preset}/sweep/gamma{gamma}/finetune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/model.pt",
        log:
            "work/{preset}/logs/sweep_finetune/gamma{gamma}/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}.log",
        wildcard_constraints:
            gamma=r"[0-9]+\.[0-9]+(e-?[0-9]+)?",
        params:
            cfg=lambda wc: _sweep_cfg("finetune", wc),
            state="work/{preset}/state/sweep/gamma{gamma}/finetune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}",
            plugins=PLUGIN_ARGS,
        threads: THREADS
        shell:
            BENCH + " finetune --config {params.cfg:q} --dataset {wildcards.dataset:q}"
            " --arch {wildcards.arch:q} --method {wildcards.method:q} --s2ap score"
            " --sparsity {wildcards.sparsity} --seed {wildcards.seed} --search {input.search:q}"
            " --out {output:q} --state-dir {params.state:q} {params.plugins} > {log:q} 2>&1"

    rule gamma_sweep:
        input:
            SWEEP_MODELS,
        output:
            csv=f"{RESULTS}/gamma_sweep.csv",
            md=f"{RESULTS}/gamma_sweep.md",
        log:
            f"{WORK}/logs/gamma_sweep.log",
        params:
            models=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input),
        threads: 1
        shell:
            BENCH + " sweep-report --models {params.models} --out {output.csv:q} > {log:q} 2>&1"
