# One dense model per (dataset, arch, pretrain recipe, seed), shared by every method, sparsity and
# S2AP setting whose pretrain stage config hashes the same (the recipe in its path).


rule pretrain:
    output:
        "work/{preset}/pretrain/{dataset}/{arch}/{recipe}/seed{seed}/dense.pt",
    log:
        "work/{preset}/logs/pretrain/{dataset}/{arch}/{recipe}/seed{seed}.log",
    threads: PRETRAIN_THREADS
    resources:
        **cluster_resources("pretrain"),
    params:
        cfg=lambda wc: untracked_json(recipe_config(wc)),
        config_key=lambda wc: apcfg.stage_key(recipe_config(wc)),
        # resume state lives outside declared outputs: Snakemake deletes those when a job fails
        state="work/{preset}/state/pretrain/{dataset}/{arch}/{recipe}/seed{seed}",
    shell:
        PRETRAIN_CMD


# A dense model trained elsewhere (external_dense): checked by sha256, converted into a dense.pt
# of this suite, one for every seed. Its recipe hash is the checksum's.
rule import_dense:
    output:
        "work/{preset}/external/{dataset}/{arch}/{recipe}/dense.pt",
    log:
        "work/{preset}/logs/import_dense/{dataset}/{arch}/{recipe}.log",
    threads: 1
    resources:
        **cluster_resources("import_dense"),
    params:
        entry=lambda wc: untracked_json(external_entry(wc)),
        model=apcfg.dumps(CFG["model"]),
    shell:
        IMPORT_DENSE_CMD
