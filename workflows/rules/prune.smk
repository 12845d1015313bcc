# Mask search. Its s2ap wildcard is the search half of the grid value (on | off | n-a): "on" and
# "score" share one search, as do "off" and "awp".


rule prune:
    input:
        # none for a method that prunes random weights (RST)
        dense=planned("prune", "dense", one=True),
    output:
        "work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search.pt",
    log:
        "work/{preset}/logs/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off|n-a",
    group:
        cell_group
    threads: THREADS
    resources:
        **cluster_resources("prune"),
    params:
        cfg=lambda wc: untracked_json(cell_stage_config("prune", wc)),
        config_key=lambda wc: apcfg.stage_key(cell_stage_config("prune", wc)),
        method_code=lambda wc: METHOD_CODE[wc.method],
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        search_seed=lambda wc: wc.seed,
        dense=dense_arg,
        # resume state lives outside declared outputs: Snakemake deletes those when a job fails
        state="work/{preset}/state/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        method_file=method_file_args,
    shell:
        PRUNE_CMD
