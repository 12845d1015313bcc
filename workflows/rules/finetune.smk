# Finetune with the mask fixed; AWP when the grid value is "on" or "awp". Methods that need no
# finetune (RST) still pass through here with 0 epochs, so every cell exports the same way.


rule finetune:
    input:
        search=planned("finetune", "search", one=True),
    output:
        "work/{preset}/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}/model.pt",
    log:
        "work/{preset}/logs/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    group:
        cell_group
    threads: THREADS
    resources:
        **cluster_resources("finetune"),
    params:
        cfg=lambda wc: untracked_json(cell_stage_config("finetune", wc)),
        config_key=lambda wc: apcfg.stage_key(cell_stage_config("finetune", wc)),
        method_code=lambda wc: METHOD_CODE[wc.method],
        s2ap=lambda wc: apcfg.s2ap_from_path(wc.s2ap),
        state="work/{preset}/state/finetune/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        method_file=method_file_args,
    shell:
        FINETUNE_CMD
