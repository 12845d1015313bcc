# Finetune with the mask fixed; AWP when the grid value is "on" or "awp". Methods that need no
# finetune (RST) still pass through here with 0 epochs, so every cell exports the same way.


rule finetune:
    input:
        search=lambda wc: search_path(wc.dataset, wc.arch, wc.method, apcfg.s2ap_from_path(wc.s2ap),
                                      wc.sparsity, wc.seed),
    output:
        "work/{preset}/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/model.pt",
    log:
        "work/{preset}/logs/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    params:
        cfg=lambda wc: apcfg.dumps(apcfg.stage_config(
            CFG, "finetune", dataset=wc.dataset, arch=wc.arch, method=wc.method,
            s2ap=apcfg.s2ap_from_path(wc.s2ap), traits=TRAITS[wc.method])),
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        state="work/{preset}/state/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        plugins=PLUGIN_ARGS,
    threads: THREADS
    shell:
        BENCH + " finetune --config {params.cfg:q} --dataset {wildcards.dataset:q}"
        " --arch {wildcards.arch:q} --method {wildcards.method:q} --s2ap {params.s2ap:q}"
        " --sparsity {wildcards.sparsity} --seed {wildcards.seed} --search {input.search:q}"
        " --out {output:q} --state-dir {params.state:q} {params.plugins} > {log:q} 2>&1"
