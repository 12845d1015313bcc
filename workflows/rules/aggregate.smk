# Leaderboard of one preset from its result JSONs (and its submissions'). The declared output is
# the stamp the aggregation writes last: Snakemake deletes a job's outputs before running it, and
# the leaderboard files beside the stamp must survive an aggregation that fails.


rule aggregate:
    input:
        runs=RUNS + SUBMISSION_RESULTS,
        published=PUBLISHED_INPUT,
    output:
        LEADERBOARD_STAMP,
    log:
        f"{WORK}/logs/aggregate/leaderboard.log",
    threads: 1
    params:
        runs=lambda wc, input: " ".join(shlex.quote(str(f)) for f in input.runs),
        out=lambda wc, output: os.path.dirname(output[0]),
        reference=f"--reference {shlex.quote(REFERENCE_CSV)}" if REFERENCE_CSV else "",
        published=published_arg,
        purpose=CFG["purpose"],
    shell:
        AGGREGATE_CMD
