# Seed stability (diagnostics.seed_stability: true): for every score-learning cell, a second mask
# search with another search seed on the SAME dense model, and the flip fraction / Jaccard index
# between the two masks. The evaluate rule records the figures with the cell's result.


rule prune_second_seed:
    input:
        dense=planned("prune_second_seed", "dense", one=True),
    output:
        "work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search_seed2.pt",
    log:
        "work/{preset}/logs/prune_second_seed/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off",
    group:
        cell_group
    threads: THREADS
    resources:
        **cluster_resources("prune_second_seed"),
    params:
        cfg=lambda wc: untracked_json(cell_stage_config("prune", wc)),
        config_key=lambda wc: apcfg.stage_key(cell_stage_config("prune", wc)),
        method_code=lambda wc: METHOD_CODE[wc.method],
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        search_seed=lambda wc: int(wc.seed) + SEARCH_SEED_OFFSET,
        dense=dense_arg,
        state="work/{preset}/state/prune_second_seed/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        method_file=method_file_args,
    shell:
        PRUNE_CMD


rule seed_stability:
    input:
        a="work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search.pt",
        b="work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search_seed2.pt",
    output:
        "work/{preset}/seed_stability/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.json",
    log:
        "work/{preset}/logs/seed_stability/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off",
    threads: 1
    shell:
        SEED_STABILITY_CMD
