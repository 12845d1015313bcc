"""The Snakemake workflow: dry runs of the shipped presets, the shape of the DAG, and a tiny
end-to-end run (local, and through the cluster executor) that produces a leaderboard row."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PRESETS = REPO / "presets"
SNAKEFILE = REPO / "Snakefile"


def snakemake(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(cwd), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def dry_run_jobs(*args, cwd: Path) -> list[dict]:
    """The jobs of a dry run: rule, output paths, wildcards and shell command of each."""
    proc = snakemake("-n", "-p", "--cores", "2", *args, cwd=cwd)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs, job = [], None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {"rule": m.group(1), "output": [], "wildcards": {}, "shell": ""}
            jobs.append(job)
        elif job is not None and line.startswith("    output: "):
            job["output"] = line.split(": ", 1)[1].split(", ")
        elif job is not None and line.startswith("    wildcards: "):
            job["wildcards"] = dict(kv.split("=", 1) for kv in line.split(": ", 1)[1].split(", "))
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line.split(": ", 1)[1]
    return jobs


def write_preset(path: Path, base: str, **changes) -> Path:
    raw = yaml.safe_load((PRESETS / base).read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ dry runs
@pytest.mark.slow
def test_quick_dry_run(tmp_path):
    jobs = dry_run_jobs("--configfile", PRESETS / "quick.yaml", cwd=tmp_path)
    counts = Counter(j["rule"] for j in jobs)
    # hydra with S2AP off and on, and random, at 90/95/99 %: 9 cells, one dense model shared by
    # all; the on/off cells have a search each (no AWP-only value in quick)
    assert counts["pretrain"] == 1 and counts["evaluate_dense"] == 1
    assert counts["prune"] == counts["finetune"] == counts["evaluate"] == 9
    assert counts["aggregate"] == 1
    outputs = [o for j in jobs for o in j["output"]]
    # the leaderboard files are written beside the stamp, the aggregate rule's declared output
    assert "results/quick/leaderboard.stamp.json" in outputs
    assert "results/quick/runs/fashion-mnist/small_cnn/random/n-a/sp90/seed0.json" in outputs
    assert "results/quick/runs/fashion-mnist/small_cnn/hydra/on/sp99/seed0.json" in outputs
    assert "results/quick/runs/fashion-mnist/small_cnn/dense/n-a/sp0/seed0.json" in outputs
    for j in jobs:
        if j["rule"] in {"pretrain", "prune", "finetune", "evaluate", "evaluate_dense", "aggregate"}:
            assert j["shell"].endswith("2>&1") and "/logs/" in j["shell"], j
            assert "-m benchmark " + j["rule"].replace("_dense", "") in j["shell"]


@pytest.mark.slow
def test_a_fresh_clone_trains_everything_and_compares_with_the_published_run(tmp_path):
    """The published run (results/published/quick/, committed) is never taken for this run's
    outputs; its leaderboard becomes an input of the aggregation, which compares with it."""
    published = tmp_path / "results" / "published" / "quick"
    for rel in ("runs/fashion-mnist/small_cnn/dense/n-a/sp0/seed0.json",
                "runs/fashion-mnist/small_cnn/hydra/on/sp95/seed0.json", "leaderboard.csv",
                "leaderboard.md"):
        (published / rel).parent.mkdir(parents=True, exist_ok=True)
        (published / rel).write_text("{}")
    jobs = dry_run_jobs("--configfile", PRESETS / "quick.yaml", cwd=tmp_path)
    counts = Counter(j["rule"] for j in jobs)
    # HYDRA with S2AP off and on, and random pruning, at 90/95/99 %
    assert counts["pretrain"] == 1 and counts["prune"] == counts["evaluate"] == 9
    (aggregate,) = [j for j in jobs if j["rule"] == "aggregate"]
    assert "--published results/published/quick/leaderboard.csv" in aggregate["shell"]
    assert not any("results/published" in o for j in jobs for o in j["output"])


@pytest.mark.slow
def test_default_preset_is_quick(tmp_path):
    jobs = dry_run_jobs(cwd=tmp_path)
    assert any("results/quick/leaderboard.stamp.json" in j["output"] for j in jobs)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["paper_cifar10_structured.yaml", "paper_svhn_structured.yaml"])
def test_paper_dry_run_has_one_pretrain_per_dataset_arch_seed(tmp_path, preset):
    cfg = yaml.safe_load((PRESETS / preset).read_text())
    jobs = dry_run_jobs("--configfile", PRESETS / preset, cwd=tmp_path)
    pretrain = [j for j in jobs if j["rule"] == "pretrain"]
    keys = [(j["wildcards"]["dataset"], j["wildcards"]["arch"], j["wildcards"]["seed"]) for j in pretrain]
    grid = cfg["grid"]
    expected = {(d, a, str(s)) for d in grid["datasets"] for a in grid["archs"] for s in grid["seeds"]}
    assert sorted(keys) == sorted(expected)  # exactly one each
    # every prune job reads the dense model of its (dataset, arch, seed)
    dense_of = {k: j["output"][0] for k, j in zip(keys, pretrain)}
    prune = [j for j in jobs if j["rule"] == "prune"]
    for j in prune:
        w = j["wildcards"]
        assert f"--dense {dense_of[(w['dataset'], w['arch'], w['seed'])]}" in j["shell"]
    n = len(grid["archs"]) * len(grid["sparsities"]) * len(grid["seeds"])
    # off/awp share one search, on/score another
    assert len(prune) == n * len({"on" if v in ("on", "score") else "off" for v in grid["s2ap"]})
    assert sum(j["rule"] == "evaluate" for j in jobs) == n * len(grid["s2ap"])


@pytest.mark.slow
def test_slurm_profile_dry_run(tmp_path):
    """The resources each job would ask SLURM for: a GPU on a CUDA preset (the paper's), none on a
    CPU preset, the partition from APBENCH_SLURM_PARTITION."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm not installed (pip install -e '.[cluster]')")
    import os

    env = {**os.environ, "APBENCH_SLURM_PARTITION": "gpu"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), "-n",
           "--profile", str(REPO / "workflows/profiles/slurm")]
    proc = subprocess.run([*cmd, "--configfile", str(PRESETS / "paper_cifar10_structured.yaml")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    pretrain = out[out.index("rule pretrain:"):].split("rule ", 2)[1]
    assert "gpu=1" in pretrain and "slurm_partition=gpu" in pretrain and "runtime=" in pretrain
    proc = subprocess.run([*cmd, "--configfile", str(PRESETS / "tiny.yaml")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "mem_mb=" in out and "gpu=" not in out, out


@pytest.mark.slow
def test_non_canonical_sparsity_path_is_not_a_target(tmp_path):
    target = "results/quick/runs/fashion-mnist/small_cnn/hydra/off/sp{}/seed0.json"
    ok = snakemake(target.format("95"), "-n", "--cores", "1", "--configfile", PRESETS / "quick.yaml",
                   cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = snakemake(target.format("95.0"), "-n", "--cores", "1", "--configfile", PRESETS / "quick.yaml",
                    cwd=tmp_path)
    assert bad.returncode != 0 and "MissingRuleException" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_plugin_method_without_pretrain_gets_no_dense_model(tmp_path):
    plugin = tmp_path / "scratch.py"
    plugin.write_text(textwrap.dedent("""\
        from methods.base import PruningMethod
        from benchmark.core.registry import register_method


        @register_method("scratch", learns_scores=True, needs_pretrain=False, needs_finetune=False)
        class Scratch(PruningMethod):
            pass
        """))
    preset = write_preset(tmp_path / "p.yaml", "offline.yaml", grid__methods=["scratch", "lwm"],
                          grid__s2ap=["off", "on"], grid__seeds=[0], method_files=["scratch.py"])
    jobs = dry_run_jobs("--configfile", preset, cwd=tmp_path)
    prune = [j for j in jobs if j["rule"] == "prune"]
    scratch = [j for j in prune if j["wildcards"]["method"] == "scratch"]
    assert len(scratch) == 3 * 2 and all("--dense none" in j["shell"] for j in scratch)
    # the method file goes to its own method's jobs only
    assert all(f"--method-file {plugin}" in j["shell"] for j in scratch)
    lwm = [j for j in prune if j["wildcards"]["method"] == "lwm"]
    assert not any("--method-file" in j["shell"] for j in lwm)
    assert {j["wildcards"]["s2ap"] for j in lwm} == {"n-a"} and len(lwm) == 3
    finetune = [j for j in jobs if j["rule"] == "finetune" and j["wildcards"]["method"] == "scratch"]
    assert finetune and all('"epochs":0' in j["shell"] for j in finetune)
    assert sum(j["rule"] == "pretrain" for j in jobs) == 1  # lwm's, also the dense row's


# ------------------------------------------------------------------ end to end
@pytest.mark.e2e
def test_tiny_end_to_end(tmp_path):
    """Pretrain -> HYDRA search -> finetune -> evaluate -> leaderboard (its time is the speed
    scripts' business, not a test's)."""
    proc = snakemake("--profile", REPO / "workflows/profiles/local", "--cores", "2",
                     "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]

    results = tmp_path / "results" / "tiny"
    assert (results / "leaderboard.md").is_file()
    with open(results / "leaderboard.csv") as fh:
        rows = list(csv.DictReader(fh))
    methods = {row.get("method", row.get("Method")) for row in rows}
    assert {"dense", "hydra"} <= methods, rows
    for rule in ("pretrain", "prune", "finetune", "evaluate", "aggregate"):
        logs = list((tmp_path / "work" / "tiny" / "logs" / rule).rglob("*.log"))
        assert logs, f"no log for {rule}"

    # editing the evaluation section reruns evaluation and aggregation only
    edited = write_preset(tmp_path / "tiny_eval.yaml", "tiny.yaml", evaluate__pgd_steps=3)
    rules = Counter(j["rule"] for j in dry_run_jobs("--configfile", edited, cwd=tmp_path))
    assert set(rules) == {"evaluate", "evaluate_dense", "aggregate", "all"}, rules
    # ... and the finetune section reruns nothing upstream of it
    edited = write_preset(tmp_path / "tiny_ft.yaml", "tiny.yaml", finetune__lr=0.02)
    rules = Counter(j["rule"] for j in dry_run_jobs("--configfile", edited, cwd=tmp_path))
    assert set(rules) == {"finetune", "evaluate", "aggregate", "all"}, rules
    # and an unchanged preset is up to date
    proc = snakemake("-n", "--cores", "1", "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path)
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # the publishing target: model files with checksums, RobustBench export, the static site
    proc = snakemake("site", "--cores", "2", "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert (results / "site" / "index.html").is_file()
    manifest = json.loads((results / "export" / "models" / "manifest.json").read_text())
    assert {m["method"] for m in manifest["models"]} >= {"dense", "hydra"}
    assert (results / "export" / "robustbench").is_dir()  # fashion-mnist: nothing to export
    from benchmark.core.model_files import load_from_manifest, verify_manifest

    assert verify_manifest(results / "export" / "models" / "manifest.json") == []
    hydra = next(m for m in manifest["models"] if m["method"] == "hydra")
    assert load_from_manifest(results / "export" / "models" / "manifest.json", hydra["model"]) is not None

    # a submission round trip: the exported model, submitted back, reproduces its entry exactly
    exported = results / "export" / "models" / hydra["files"]["safetensors"]["path"]
    folder = tmp_path / "submissions" / "roundtrip"
    folder.mkdir(parents=True)
    shutil.copyfile(exported, folder / "model.safetensors")
    (folder / "submission.yaml").write_text(yaml.safe_dump({
        "preset": "tiny", "dataset": "fashion-mnist", "arch": "small_cnn", "width": 0.5, "eps": 0.1,
        "method": "the tiny preset's HYDRA model, exported and submitted back",
        "model": {"file": "model.safetensors", "sha256": hydra["files"]["safetensors"]["sha256"]},
        "claims": {"sparsity": 90}}))
    proc = snakemake("submissions", "--cores", "2", "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    entry = json.loads((results / "runs" / (hydra["model"] + ".json")).read_text())
    submitted = json.loads((results / "submissions" / "roundtrip.json").read_text())
    assert submitted["flags"] == entry["flags"] and submitted["protocol"] == entry["protocol"]
    for name in ("clean", "pgd", "autoattack"):
        assert submitted["metrics"][name]["correct"] == entry["metrics"][name]["correct"], name
    assert submitted["sparsity"]["measured"] == entry["sparsity"]["measured"]
    with open(results / "leaderboard.csv") as fh:
        assert "roundtrip" in {row["method"] for row in csv.DictReader(fh)}

    # a failed aggregation keeps the previous leaderboard, also under Snakemake (which deletes a
    # job's declared outputs first: the stamp is the aggregate rule's only one)
    board = {n: (results / n).read_bytes() for n in ("leaderboard.csv", "leaderboard.md")}
    result = results / "runs" / (hydra["model"] + ".json")
    original = result.read_text()
    tampered = json.loads(original)
    tampered["metrics"]["clean"]["correct"] += 1
    result.write_text(json.dumps(tampered))
    proc = snakemake("--cores", "1", "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "rule aggregate" in out, out[-5000:]
    assert "rule 'acc'" in (tmp_path / "work" / "tiny" / "logs" / "aggregate" / "leaderboard.log").read_text()
    assert {n: (results / n).read_bytes() for n in board} == board
    assert not (results / "leaderboard.stamp.json").exists()
    result.write_text(original)
    proc = snakemake("--cores", "1", "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path)
    assert proc.returncode == 0 and (results / "leaderboard.stamp.json").is_file()


@pytest.mark.e2e
def test_cluster_code_path(tmp_path):
    """The cluster-generic executor with bash as its submit command: jobscripts, the job-side
    Snakemake and the finished markers, on one machine (pretrain + dense evaluation)."""
    if importlib.util.find_spec("snakemake_executor_plugin_cluster_generic") is None:
        pytest.skip("snakemake-executor-plugin-cluster-generic not installed (pip install -e '.[cluster]')")
    target = "results/tiny/runs/fashion-mnist/small_cnn/dense/n-a/sp0/seed0.json"
    # the target goes first: --configfile takes every word after it
    proc = snakemake(target, "--profile", REPO / "workflows/profiles/cluster-generic-local",
                     "--configfile", PRESETS / "tiny.yaml", cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    # really went through the submit command: a remote executor, and a job-side Snakemake per job
    assert "Provided remote nodes" in out
    assert out.count("Workflow ID:") >= 3, out[-5000:]
    assert (tmp_path / target).is_file()
