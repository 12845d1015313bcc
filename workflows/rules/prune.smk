# Mask search. Its s2ap wildcard is the search half of the grid value (on | off | n-a): "on" and
# "score" share one search, as do "off" and "awp".


def _prune_dense(wc):
    if not TRAITS[wc.method]["needs_pretrain"]:
        return []
    return dense_path(wc.dataset, wc.arch, recipe_of(wc), wc.seed)


rule prune:
    input:
        dense=_prune_dense,
    output:
        "work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search.pt",
    log:
        "work/{preset}/logs/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off|n-a",
    params:
        cfg=lambda wc: apcfg.dumps(apcfg.stage_config(
            CFG, "prune", dataset=wc.dataset, arch=wc.arch, method=wc.method,
            s2ap=apcfg.s2ap_from_path(wc.s2ap), traits=TRAITS[wc.method])),
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        # methods that start from random weights (RST) get no dense model
        dense=lambda wc, input: input.dense if input.dense else "none",
        state="work/{preset}/state/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        plugins=PLUGIN_ARGS,
    threads: THREADS
    shell:
        BENCH + " prune --config {params.cfg:q} --dataset {wildcards.dataset:q}"
        " --arch {wildcards.arch:q} --method {wildcards.method:q} --s2ap {params.s2ap:q}"
        " --sparsity {wildcards.sparsity} --seed {wildcards.seed} --dense {params.dense:q}"
        " --out {output:q} --state-dir {params.state:q} {params.plugins} > {log:q} 2>&1"
