# Evaluation of exported plain models: one result JSON per model. The evaluate sub-config is the
# only preset section in these params besides data/model/runtime, so editing it reruns evaluation
# and nothing upstream.

DENSE_BY_KEY = {(c["dataset"], c["arch"], str(c["seed"])): c for c in DENSE}
CELL_BY_KEY = {(c["dataset"], c["arch"], c["method"], apcfg.s2ap_to_path(c["s2ap"]), c["sparsity"],
                str(c["seed"])): c for c in CELLS}


def _eval_cfg(wc):
    return apcfg.dumps(apcfg.stage_config(CFG, "evaluate", dataset=wc.dataset, arch=wc.arch))


def _pruned_cell(wc):
    key = (wc.dataset, wc.arch, wc.method, wc.s2ap, wc.sparsity, wc.seed)
    if key not in CELL_BY_KEY:
        raise ValueError(f"{'/'.join(key)} is not a cell of preset {PRESET}")
    return CELL_BY_KEY[key]


rule evaluate:
    input:
        model=lambda wc: model_path(wc.dataset, wc.arch, wc.method, apcfg.s2ap_from_path(wc.s2ap),
                                    wc.sparsity, wc.seed),
        stability=stability_inputs,
    output:
        "results/{preset}/runs/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.json",
    log:
        "work/{preset}/logs/evaluate/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}.log",
    params:
        cfg=_eval_cfg,
        cell=lambda wc: apcfg.dumps(apcfg.cell_json(CFG, _pruned_cell(wc))),
        state="work/{preset}/state/evaluate/{dataset}/{arch}/{method}/{s2ap}/sp{sparsity}/seed{seed}",
        extra=lambda wc, input: " ".join(f"--extra-diagnostics {shlex.quote(str(f))}"
                                         for f in input.stability),
    threads: THREADS
    shell:
        BENCH + " evaluate --config {params.cfg:q} --model {input.model:q} --cell {params.cell:q}"
        " --out {output:q} --state-dir {params.state:q} {params.extra} > {log:q} 2>&1"


rule evaluate_dense:
    input:
        model=lambda wc: dense_path(wc.dataset, wc.arch,
                                    DENSE_BY_KEY[(wc.dataset, wc.arch, wc.seed)]["recipe"], wc.seed),
    output:
        "results/{preset}/runs/{dataset}/{arch}/dense/n-a/sp0/seed{seed}.json",
    log:
        "work/{preset}/logs/evaluate/{dataset}/{arch}/dense/n-a/sp0/seed{seed}.log",
    params:
        cfg=_eval_cfg,
        cell=lambda wc: apcfg.dumps(apcfg.cell_json(CFG, DENSE_BY_KEY[(wc.dataset, wc.arch, wc.seed)])),
        state="work/{preset}/state/evaluate/{dataset}/{arch}/dense/n-a/sp0/seed{seed}",
    threads: THREADS
    shell:
        BENCH + " evaluate --config {params.cfg:q} --model {input.model:q} --cell {params.cell:q}"
        " --out {output:q} --state-dir {params.state:q} > {log:q} 2>&1"
