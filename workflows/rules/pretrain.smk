# One dense model per (dataset, arch, pretrain recipe, seed), shared by every method, sparsity and
# S2AP setting whose pretrain stage config hashes the same.


def _recipe_config(wc):
    recipe = RECIPES.get(wc.recipe)
    if recipe is None or (recipe["dataset"], recipe["arch"]) != (wc.dataset, wc.arch):
        raise ValueError(f"no pretrain recipe {wc.recipe} for {wc.dataset}/{wc.arch} in preset {PRESET}")
    return apcfg.dumps(recipe["config"])


rule pretrain:
    output:
        "work/{preset}/pretrain/{dataset}/{arch}/{recipe}/seed{seed}/dense.pt",
    log:
        "work/{preset}/logs/pretrain/{dataset}/{arch}/{recipe}/seed{seed}.log",
    params:
        cfg=_recipe_config,
        # resume state lives outside declared outputs: Snakemake deletes those when a job fails
        state="work/{preset}/state/pretrain/{dataset}/{arch}/{recipe}/seed{seed}",
    threads: THREADS
    shell:
        BENCH + " pretrain --config {params.cfg:q} --dataset {wildcards.dataset:q}"
        " --arch {wildcards.arch:q} --seed {wildcards.seed} --out {output:q}"
        " --state-dir {params.state:q} > {log:q} 2>&1"
