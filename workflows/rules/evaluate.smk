# Evaluation of exported plain models: one result JSON per model. The evaluate sub-config is the
# only preset section in these params besides data/model/runtime, so editing it reruns evaluation
# and nothing upstream.


rule evaluate:
    input:
        model=planned("evaluate", "model", one=True),
        seed_stability=planned("evaluate", "seed_stability"),
        shards=planned("evaluate", "shards"),
    output:
        "results/{preset}/runs/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.json",
    log:
        "work/{preset}/logs/evaluate/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    group:
        cell_group
    threads: THREADS
    resources:
        **cluster_resources("evaluate"),
    params:
        cfg=lambda wc: untracked_json(evaluate_config(wc)),
        config_key=lambda wc: apcfg.stage_key(evaluate_config(wc)),
        cell=lambda wc: apcfg.dumps(apcfg.cell_json(CFG, pruned_cell(wc))),
        state="work/{preset}/state/evaluate/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        extra=extra_diagnostics,
    shell:
        EVALUATE_CMD


rule evaluate_dense:
    input:
        model=planned("evaluate_dense", "model", one=True),
        shards=planned("evaluate_dense", "shards"),
    output:
        "results/{preset}/runs/{dataset}/{arch}/dense/n-a/sp0/seed{seed}.json",
    log:
        "work/{preset}/logs/evaluate/{dataset}/{arch}/dense/n-a/sp0/seed{seed}.log",
    threads: THREADS
    resources:
        **cluster_resources("evaluate_dense"),
    params:
        cfg=lambda wc: untracked_json(evaluate_config(wc)),
        config_key=lambda wc: apcfg.stage_key(evaluate_config(wc)),
        cell=lambda wc: apcfg.dumps(apcfg.cell_json(CFG, dense_cell(wc))),
        state="work/{preset}/state/evaluate/{dataset}/{arch}/dense/n-a/sp0/seed{seed}",
        extra="",
    shell:
        EVALUATE_CMD


# One AutoAttack shard of an evaluation, as a job of its own (runtime.autoattack_shard_jobs): it
# writes the shard into the evaluation's state folder, where the evaluate job finds it done.
rule autoattack_shard:
    input:
        model=planned("autoattack_shard", "model", one=True),
    output:
        "work/{preset}/autoattack_shards/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/shard{shard}.json",
    log:
        "work/{preset}/logs/autoattack_shard/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/shard{shard}.log",
    wildcard_constraints:
        method=_alternation([*TRAITS, "dense"]),
        shard=r"[0-9]+",
    threads: THREADS
    resources:
        **cluster_resources("autoattack_shard"),
    params:
        cfg=lambda wc: untracked_json(evaluate_config(wc)),
        config_key=lambda wc: apcfg.stage_key(evaluate_config(wc)),
        cell=lambda wc: apcfg.dumps(apcfg.cell_json(CFG, shard_cell(wc))),
        state="work/{preset}/state/evaluate/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
    shell:
        AUTOATTACK_SHARD_CMD
