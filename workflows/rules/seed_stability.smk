# Seed stability (diagnostics.seed_stability: true): for every score-learning cell, a second mask
# search with another search seed on the SAME dense model, and the flip fraction / Jaccard index
# between the two masks. The evaluate rule records the figures with the cell's result.

SEED_STABILITY = bool(CFG["diagnostics"].get("seed_stability"))
# an offset far from any grid seed, so the second search never coincides with another cell's
SEARCH_SEED_OFFSET = 1000


def stability_path(dataset, arch, method, s2ap, sparsity, seed):
    s = apcfg.s2ap_to_path(apcfg.s2ap_search_value(s2ap))
    return f"{WORK}/stability/{dataset}/{arch}/{method}/{s}/sp{sparsity}/seed{seed}.json"


def stability_inputs(wc):
    """The stability file of an evaluated cell, when the preset asks for it and the method learns
    scores (a fixed rule such as lwm gives the same mask for every seed)."""
    if not SEED_STABILITY or not TRAITS[wc.method]["learns_scores"]:
        return []
    return [stability_path(wc.dataset, wc.arch, wc.method, apcfg.s2ap_from_path(wc.s2ap),
                           wc.sparsity, wc.seed)]


rule prune_second_seed:
    input:
        dense=_prune_dense,
    output:
        "work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search_seed2.pt",
    log:
        "work/{preset}/logs/prune_second_seed/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off",
    params:
        cfg=lambda wc: apcfg.dumps(apcfg.stage_config(
            CFG, "prune", dataset=wc.dataset, arch=wc.arch, method=wc.method,
            s2ap=apcfg.s2ap_from_path(wc.s2ap), traits=TRAITS[wc.method])),
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        dense=lambda wc, input: input.dense if input.dense else "none",
        search_seed=lambda wc: int(wc.seed) + SEARCH_SEED_OFFSET,
        state="work/{preset}/state/prune_second_seed/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        plugins=PLUGIN_ARGS,
    threads: THREADS
    shell:
        BENCH + " prune --config {params.cfg:q} --dataset {wildcards.dataset:q}"
        " --arch {wildcards.arch:q} --method {wildcards.method:q} --s2ap {params.s2ap:q}"
        " --sparsity {wildcards.sparsity} --seed {wildcards.seed} --search-seed {params.search_seed}"
        " --dense {params.dense:q} --out {output:q} --state-dir {params.state:q} {params.plugins}"
        " > {log:q} 2>&1"


rule seed_stability:
    input:
        a="work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search.pt",
        b="work/{preset}/prune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/search_seed2.pt",
    output:
        "work/{preset}/stability/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.json",
    log:
        "work/{preset}/logs/seed_stability/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    wildcard_constraints:
        s2ap="on|off",
    threads: 1
    shell:
        BENCH + " stability --a {input.a:q} --b {input.b:q} --out {output:q} > {log:q} 2>&1"
