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
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input),
        out=RESULTS,
        reference=(f"--reference {shlex.quote(CFG['reference_csv'])}" if CFG.get("reference_csv") else ""),
    threads: 1
    shell:
        BENCH + " aggregate --runs {params.runs} --out {params.out:q} {params.reference} > {log:q} 2>&1"
