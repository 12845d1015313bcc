"""What a job asks a SLURM cluster for (benchmark/planning/slurm_resources.py) and the checks before the first
submission, against canned answers of scontrol / sinfo / sacctmgr (tests/test_slurm_cluster.py
runs them against a real cluster)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from benchmark.core import config as apcfg
from benchmark.planning import calibration
from benchmark.planning import slurm_resources as slurm
from benchmark.planning.estimate import Job

REPO = Path(__file__).resolve().parent.parent
UP = "Slurmctld(primary) at vm is UP\n"
NODES = "vm|debug*|2|22899|(null)\ng1|gpu|32|500000|gpu:4,shard:8\n"


def fake(answers: dict):
    """A subprocess.run stand-in: the first word(s) of a command -> (exit status, stdout)."""

    def run(cmd, **kwargs):
        for prefix, (rc, out) in answers.items():
            if " ".join(cmd).startswith(prefix):
                if rc == "timeout":
                    raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))
                return subprocess.CompletedProcess(cmd, rc, out, "" if rc == 0 else out)
        raise AssertionError(f"unexpected command {cmd}")

    return run


def problems(requests, *, env=None, k=1, **answers):
    table = {"scontrol ping": (0, UP), "sinfo": (0, NODES), "sacctmgr": (1, "no accounting")}
    table.update({k.replace("_", " "): v for k, v in answers.items()})
    return slurm.cluster_problems(requests, environ=env or {}, jobs_per_gpu=k, runner=fake(table))


def test_a_job_that_fits_the_default_partition_is_no_problem():
    assert problems([("pretrain", 1, {"mem_mb": 4000})]) == []


def test_a_partition_the_cluster_lacks_is_named_with_those_it_has():
    out = problems([("pretrain", 1, {})], env={slurm.PARTITION_ENV: "big"})
    assert out == ["APBENCH_SLURM_PARTITION=big: the cluster has no such partition (it has: debug, gpu)"]


def test_more_cpus_or_gpus_than_any_node_has_is_refused_once_per_request():
    reqs = [("pretrain", 8, {"mem_mb": 4000}), ("prune", 8, {"mem_mb": 4000}),
            ("evaluate", 1, {"mem_mb": 4000, "gpu": 1})]
    out = problems(reqs)
    assert len(out) == 2
    assert out[0].startswith("rules pretrain, prune: no node of partition debug can run a job asking 8 CPUs")
    assert "1 GPU" in out[1] and "its largest node vm has 2 CPUs" in out[1]
    assert problems(reqs, env={slurm.PARTITION_ENV: "gpu"}) == []


def test_an_account_the_cluster_lacks_is_refused_where_accounting_exists():
    env = {slurm.ACCOUNT_ENV: "nobody"}
    out = problems([("pretrain", 1, {})], env=env, sacctmgr=(0, "physics\nbio\n"))
    assert out == ["APBENCH_SLURM_ACCOUNT=nobody: the cluster has no such account (it has: bio, physics)"]
    assert problems([("pretrain", 1, {})], env={slurm.ACCOUNT_ENV: "bio"}, sacctmgr=(0, "physics\nbio\n")) == []
    # no accounting database: SLURM checks no account, so none is wrong
    assert problems([("pretrain", 1, {})], env=env) == []


@pytest.mark.parametrize("answer", [(1, "Slurmctld(primary) at vm is DOWN\n****\n"), ("timeout", "")])
def test_an_unreachable_controller_is_one_clear_problem(answer):
    out = problems([("pretrain", 1, {})], scontrol_ping=answer)
    assert len(out) == 1 and out[0].startswith("the SLURM controller does not answer")


def test_k_jobs_per_gpu_needs_k_shards_per_card():
    reqs = [("finetune", 4, {"mem_mb": 4000, "gres": "shard:1"})]
    env = {slurm.PARTITION_ENV: "gpu"}
    assert problems(reqs, env=env, k=2) == []
    out = problems(reqs, env=env, k=3)
    assert out and "split each card into 2 shard(s)" in out[0]
    out = problems(reqs, k=2)  # the default partition has no GPUs at all
    assert any("offers GPU shards" in p for p in out)


def _cfg(preset: str, **runtime):
    cfg = apcfg.validate(apcfg.load_presets([REPO / "presets" / preset]), search_dirs=[REPO])
    cfg["runtime"].update(runtime)
    return cfg


def test_resources_follow_the_preset_gpu_only_on_cuda_and_time_from_the_estimate(monkeypatch):
    monkeypatch.delenv(slurm.PARTITION_ENV, raising=False)
    monkeypatch.delenv(slurm.ACCOUNT_ENV, raising=False)
    cal = calibration.load()
    cfg = _cfg("paper_cifar10.yaml")
    assert slurm.plan_device(cfg, cal) == "cuda"
    cell = {"traits": {"learns_scores": True, "needs_pretrain": True, "needs_finetune": True}}
    job = Job("finetune", "cifar10", "resnet18", "hydra", "off", cell)
    res = slurm.job_resources(cfg, "finetune", job, device="cuda", cal=cal)
    assert res["gpu"] == 1 and "gres" not in res
    assert res["runtime"] > slurm.RUNTIME_FLOOR_MIN and res["mem_mb"] > slurm.PROCESS_MB
    # k jobs per card: a shard of a card instead of a card
    res2 = slurm.job_resources(_cfg("paper_cifar10.yaml", jobs_per_gpu=2), "finetune", job,
                               device="cuda", cal=cal)
    assert res2["gres"] == "shard:1" and "gpu" not in res2
    # a CPU preset asks for no GPU; partition and account come from the environment
    monkeypatch.setenv(slurm.PARTITION_ENV, "short")
    tiny = _cfg("tiny.yaml")
    assert slurm.plan_device(tiny, cal) == "cpu"
    res = slurm.job_resources(tiny, "evaluate", Job("evaluate", "fashion-mnist", "small_cnn", "hydra", "off"),
                              device="cpu", cal=cal)
    assert "gpu" not in res and "gres" not in res and res["slurm_partition"] == "short"
    assert "slurm_account" not in res


def test_profile_sets_squeue_status_a_short_first_check_and_keeps_logs():
    profile = yaml.safe_load((REPO / "workflows" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert profile["slurm-init-seconds-before-status-checks"] <= 10
    assert profile["slurm-keep-successful-logs"] is True
    # nothing per rule or per site in a tracked file: the preset and the environment decide
    assert "set-resources" not in profile and "default-resources" not in profile
    assert "CHANGE_ME" not in (REPO / "workflows" / "profiles" / "slurm" / "config.yaml").read_text()


@pytest.mark.parametrize("preset, device", [
    ("tiny.yaml", "cpu"), ("quick.yaml", "cpu"), ("offline.yaml", "cpu"),
    ("paper_cifar10.yaml", "cuda"), ("paper_imagenet.yaml", "cuda"), ("paper_svhn.yaml", "cuda")])
def test_auto_presets_ask_for_a_gpu_unless_sized_for_cpus(preset, device):
    assert slurm.plan_device(_cfg(preset), calibration.load()) == device
