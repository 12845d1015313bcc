# S2AP gamma sweep: `snakemake gamma_sweep --configfile presets/<preset>.yaml`.
#
# For every gamma in gamma_sweep.gammas, method, sparsity and seed (gamma_sweep.seeds, default the
# grid's): the mask search with the score step at that gamma (the grid value "score": no AWP, so
# the sweep isolates the score-space step; gamma 0 runs the same two-pass path and equals the plain
# method), then the plain finetune. The report selects one gamma per (dataset, arch, method) on
# the validation slice only: mean over seeds, then over sparsities (benchmark/planning/sweep.py).


if SWEEP:

    rule sweep_prune:
        input:
            dense=sweep_dense,
        output:
            "work/{preset}/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/search.pt",
        log:
            "work/{preset}/logs/sweep_prune/gamma{gamma}/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}.log",
        wildcard_constraints:
            gamma=r"[0-9]+\.[0-9]+(e-?[0-9]+)?",
        threads: THREADS
        resources:
            **cluster_resources("sweep_prune"),
        params:
            cfg=lambda wc: untracked_json(sweep_config("prune", wc)),
            config_key=lambda wc: apcfg.stage_key(sweep_config("prune", wc)),
            method_code=lambda wc: METHOD_CODE[wc.method],
            s2ap="on",
            search_seed=lambda wc: wc.seed,
            dense=dense_arg,
            state="work/{preset}/state/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}",
            method_file=method_file_args,
        shell:
            PRUNE_CMD

    rule sweep_finetune:
        input:
            search="work/{preset}/sweep/gamma{gamma}/prune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/search.pt",
        output:
            "work/{preset}/sweep/gamma{gamma}/finetune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}/model.pt",
        log:
            "work/{preset}/logs/sweep_finetune/gamma{gamma}/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}.log",
        wildcard_constraints:
            gamma=r"[0-9]+\.[0-9]+(e-?[0-9]+)?",
        threads: THREADS
        resources:
            **cluster_resources("sweep_finetune"),
        params:
            cfg=lambda wc: untracked_json(sweep_config("finetune", wc)),
            config_key=lambda wc: apcfg.stage_key(sweep_config("finetune", wc)),
            method_code=lambda wc: METHOD_CODE[wc.method],
            s2ap="score",
            state="work/{preset}/state/sweep/gamma{gamma}/finetune/{dataset}/{arch}/{method}/sp{sparsity}/seed{seed}",
            method_file=method_file_args,
        shell:
            FINETUNE_CMD

    rule gamma_sweep:
        input:
            SWEEP_MODELS,
        output:
            csv=f"{RESULTS}/gamma_sweep.csv",
            seeds=f"{RESULTS}/gamma_sweep_seeds.csv",
            md=f"{RESULTS}/gamma_sweep.md",
        log:
            f"{WORK}/logs/gamma_sweep.log",
        threads: 1
        resources:
            **cluster_resources("gamma_sweep"),
        params:
            models=quoted_inputs,
        shell:
            SWEEP_REPORT_CMD
