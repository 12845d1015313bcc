# Publishing one preset: model files with checksums, RobustBench entries, the static web site.
#   snakemake site --profile workflows/profiles/local --configfile presets/quick.yaml
#     -> results/quick/site/index.html (opens from file://, no network)
# Not a target of `all`: the leaderboard does not wait for it, and it reads every model file.

EXPORT = f"{RESULTS}/export"
SITE = f"{RESULTS}/site"
MODELS_MANIFEST = f"{EXPORT}/models/manifest.json"
METHOD_FILE_ARGS = " ".join(f"--method-file {shlex.quote(p)}" for p in METHOD_FILES)
REFERENCE_ARG = f"--reference {shlex.quote(REFERENCE_CSV)}" if REFERENCE_CSV else ""


localrules:
    export_robustbench,
    site,


rule export_models:
    input:
        runs=RUNS + SUBMISSION_RESULTS,
        models=MODEL_FILES,
    output:
        MODELS_MANIFEST,
    log:
        f"{WORK}/logs/export/models.log",
    threads: 1
    resources:
        **cluster_resources("export_models"),
    params:
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        # each result names the model file it evaluated (its "model" field)
        bench("export models --runs {params.runs} --out {params.out:q}")


rule export_robustbench:
    input:
        RUNS + SUBMISSION_RESULTS,
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
        runs=RUNS + SUBMISSION_RESULTS,
        models=MODELS_MANIFEST,
        robustbench=f"{EXPORT}/robustbench",
        published=PUBLISHED_INPUT,
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
        published=published_arg,
    shell:
        bench(
            "site --runs {params.runs} --out {output:q} --models {input.models:q}"
            " --robustbench {input.robustbench:q} --logs {params.logs:q} {params.method_files}"
            " {params.reference} {params.published}"
        )
