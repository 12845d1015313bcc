# The paper's tables and figures (benchmark/results/tables.py; docs/paper_tables.md says which preset feeds
# which): one target each, needing exactly the results its cells read.
#   snakemake table_main --configfile presets/paper_cifar10.yaml
#   snakemake table_main --configfile presets/paper_cifar10.yaml presets/smoke.yaml   (smoke form)
# -> results/<preset>/tables/main.md and main.csv (figures also .png)


rule table:
    input:
        runs=planned("table", "runs"),
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
        runs=planned("figure", "runs"),
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


# One target per declared table or figure (benchmark/core/paper_tables.py KINDS: table_main,
# figure_sharpness, ...), written out nowhere else; a local rule, bookkeeping only.
for _kind in tables.KINDS.values():

    rule:
        name:
            _kind.target
        input:
            table_files(_kind.name),
        localrule: True
