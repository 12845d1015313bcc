# Leaderboard of one preset from its result JSONs.


rule aggregate:
    input:
        RUNS,
    output:
        csv=LEADERBOARD_CSV,
        md=LEADERBOARD_MD,
    log:
        f"{WORK}/logs/aggregate/leaderboard.log",
    threads: 1
    params:
        runs=quoted_inputs,
        out=lambda wc, output: os.path.dirname(output.csv),
        reference=f"--reference {shlex.quote(REFERENCE_CSV)}" if REFERENCE_CSV else "",
        purpose=CFG["purpose"],
    shell:
        AGGREGATE_CMD
