# The paper's tables and figures (benchmark/results/tables.py; docs/paper_tables.md says which preset feeds
# which): one target each, needing exactly the results its cells read.
#   snakemake table_main --configfile presets/paper_cifar10.yaml
#   snakemake table_main --configfile presets/paper_cifar10.yaml presets/smoke.yaml   (smoke form)
# -> results/<preset>/tables/main.md and main.csv (figures also .png)


rule table:
    input:
        runs=table_runs,
        reference=TABLE_REFERENCE,
    output:
        md="results/{preset}/tables/{table}.md",
        csv="results/{preset}/tables/{table}.csv",
    log:
        "work/{preset}/logs/tables/{table}.log",
    wildcard_constraints:
        table=_alternation(TABLE_NAMES) or NO_NAME,
    threads: 1
    params:
        spec=table_spec,
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        out=lambda wc, output: os.path.dirname(output.md),
    shell:
        TABLE_CMD


rule figure:
    input:
        runs=table_runs,
        reference=TABLE_REFERENCE,
    output:
        md="results/{preset}/tables/{table}.md",
        csv="results/{preset}/tables/{table}.csv",
        png="results/{preset}/tables/{table}.png",
    log:
        "work/{preset}/logs/tables/{table}.log",
    wildcard_constraints:
        table=_alternation(FIGURE_NAMES) or NO_NAME,
    threads: 1
    params:
        spec=table_spec,
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        out=lambda wc, output: os.path.dirname(output.md),
    shell:
        TABLE_CMD


rule table_main:
    input:
        table_files("main"),


rule table_structured:
    input:
        table_files("structured"),


rule table_vit:
    input:
        table_files("vit"),


rule table_imagenet:
    input:
        table_files("imagenet"),


rule table_baselines:
    input:
        table_files("baselines"),


rule table_ablation:
    input:
        table_files("ablation"),


rule figure_sharpness:
    input:
        table_files("sharpness"),


rule figure_stability:
    input:
        table_files("stability"),


rule table_overhead:
    input:
        table_files("overhead"),
