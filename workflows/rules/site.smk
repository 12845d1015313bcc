# Publishing one preset: model files with checksums, RobustBench entries, the static web site.
#   snakemake site --profile workflows/profiles/local --configfile presets/quick.yaml
#     -> results/quick/site/index.html (opens from file://, no network)
# Not a target of `all`: the leaderboard does not wait for it, and it reads every model file.

EXPORT = f"{RESULTS}/export"
SITE = f"{RESULTS}/site"
MODELS_MANIFEST = f"{EXPORT}/models/manifest.json"
METHOD_FILE_ARGS = " ".join(f"--method-file {shlex.quote(p)}" for p in METHOD_FILES)
REFERENCE_ARG = f"--reference {shlex.quote(REFERENCE_CSV)}" if REFERENCE_CSV else ""


def _model_file(cell):
    if cell["method"] == "dense":
        return dense_path(cell["dataset"], cell["arch"], cell["recipe"], cell["seed"])
    return model_path(
        cell["dataset"], cell["arch"], cell["method"], cell["s2ap"], cell["sparsity"], cell["seed"]
    )


MODEL_FILES = [_model_file(c) for c in DENSE] + [_model_file(c) for c in CELLS]


localrules:
    export_robustbench,
    site,


rule export_models:
    input:
        runs=RUNS,
        models=MODEL_FILES,
    output:
        MODELS_MANIFEST,
    log:
        f"{WORK}/logs/export/models.log",
    threads: 1
    params:
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        out=f"{EXPORT}/models",
        work=WORK,
    shell:
        bench("export models --runs {params.runs} --out {params.out:q} --work {params.work:q}")


rule export_robustbench:
    input:
        RUNS,
    output:
        directory(f"{EXPORT}/robustbench"),
    log:
        f"{WORK}/logs/export/robustbench.log",
    threads: 1
    params:
        runs=quoted_inputs,
        method_files=METHOD_FILE_ARGS,
        reference=REFERENCE_ARG,
    shell:
        bench(
            "export robustbench --runs {params.runs} --out {output:q} {params.method_files}"
            " {params.reference}"
        )


rule site:
    input:
        runs=RUNS,
        models=MODELS_MANIFEST,
        robustbench=f"{EXPORT}/robustbench",
    output:
        directory(SITE),
    log:
        f"{WORK}/logs/export/site.log",
    threads: 1
    params:
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        logs=f"{WORK}/logs",
        method_files=METHOD_FILE_ARGS,
        reference=REFERENCE_ARG,
    shell:
        bench(
            "site --runs {params.runs} --out {output:q} --models {input.models:q}"
            " --robustbench {input.robustbench:q} --logs {params.logs:q} {params.method_files}"
            " {params.reference}"
        )
