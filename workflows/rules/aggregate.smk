# Leaderboard of one preset from its result JSONs.


rule aggregate:
    input:
        RUNS,
    output:
        csv=LEADERBOARD_CSV,
        md=LEADERBOARD_MD,
    log:
        f"{WORK}/logs/aggregate/leaderboard.log",
    params:
        runs=f"{RESULTS}/runs",
        out=RESULTS,
        reference=(f"--reference {shlex.quote(CFG['reference_csv'])}" if CFG.get("reference_csv") else ""),
    threads: 1
    shell:
        BENCH + " aggregate --runs {params.runs:q} --out {params.out:q} {params.reference} > {log:q} 2>&1"


# TODO(lead, issue 3): gamma_sweep target. Intended shape: when the preset has
#   gamma_sweep: {gammas: [...], methods: [...], sparsities: [...]}
# run the mask search (s2ap "score") once per gamma with CFG["s2ap"]["gamma"] overridden, under
#   work/{preset}/sweep/gamma{gamma}/prune/...
# and write results/{preset}/gamma_sweep.csv, selecting gamma on the validation numbers the prune
# stage records (never the test set). `snakemake gamma_sweep` is the target.
if CFG.get("gamma_sweep"):

    rule gamma_sweep:
        output:
            f"{RESULTS}/gamma_sweep.csv",
        shell:
            "echo 'gamma_sweep is not implemented yet (workflows/rules/aggregate.smk)' >&2; exit 1"
