# External submissions: every folder submissions/<name>/ whose submission.yaml names this preset
# is evaluated with the preset's protocol into results/<preset>/submissions/<name>.json, which the
# leaderboard includes (python -m benchmark submit; benchmark/publishing/submission.py).
#   snakemake submissions --profile workflows/profiles/local --configfile presets/quick.yaml


rule submission:
    input:
        spec="submissions/{name}/submission.yaml",
        model=submission_model,
    output:
        f"{RESULTS}/submissions/{{name}}.json",
    log:
        f"{WORK}/logs/submission/{{name}}.log",
    threads: THREADS
    resources:
        **cluster_resources("submission"),
    params:
        folder=lambda wc, input: os.path.dirname(input.spec),
        preset=str(PRESET_FILE),
        state=f"{WORK}/state/submission/{{name}}",
    shell:
        SUBMIT_CMD


rule submissions:
    input:
        SUBMISSION_RESULTS,
        LEADERBOARD_STAMP,
