"""What each job asks a SLURM cluster for, and the cluster checks made before the first sbatch.

The workflow's rules take their resources from :func:`job_resources` (workflows/rules/common.smk)
when a cluster executor runs them, so the profile (workflows/profiles/slurm) holds no per-rule
numbers that could disagree with the preset:

- CPUs: the rule's threads, i.e. the preset's ``runtime.threads`` (the executor turns threads into
  ``--cpus-per-task``);
- GPU: one card for a job that trains or attacks, only when the preset runs on CUDA
  (``runtime.device`` cuda, or auto unless the preset is sized for CPUs: see plan_device; the
  paper presets ask for GPUs, quick/standard/offline do not); with ``runtime.jobs_per_gpu``
  k > 1, one GPU shard (``--gres=shard:1``) instead, on a cluster that splits each card into k
  shards;
- run time: the estimate of the job (benchmark/planning/estimate.py, from the calibration) times
  RUNTIME_MARGIN plus RUNTIME_FLOOR_MIN, for a slower card than the calibrated one and for start-up;
  no limit (the partition's default) where the calibration has no figure for the job;
- memory: PROCESS_MB for the interpreter, torch and a CUDA context (an allowance, not a
  measurement) plus the dataset held in memory as float32 tensors, times MEMORY_MARGIN.

Partition and account are settings, not edits of a tracked file: APBENCH_SLURM_PARTITION and
APBENCH_SLURM_ACCOUNT (unset: the cluster's default partition, no account).

:func:`cluster_problems` runs on the submitting machine before any job: an unreachable
controller, a partition or account the cluster does not have, and a request no node of the
partition can ever satisfy (SLURM itself refuses too much memory at submission but queues too
many CPUs forever) are each one clear message, never a job pending for good.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.core.datasets import get_info
from benchmark.planning import calibration as _cal
from benchmark.planning import estimate as _est
from benchmark.planning.jobgraph import JobGraph

PARTITION_ENV = "APBENCH_SLURM_PARTITION"
ACCOUNT_ENV = "APBENCH_SLURM_ACCOUNT"

# rules whose jobs train or attack a model: the ones that need a GPU on a CUDA preset
GPU_RULES = ("pretrain", "prune", "prune_second_seed", "finetune", "evaluate", "evaluate_dense",
             "autoattack_shard", "sweep_prune", "sweep_finetune", "submission")
# rules that read files only (cluster jobs, but small)
LIGHT_MEM_MB = 4000
LIGHT_RUNTIME_MIN = 60

RUNTIME_MARGIN = 3.0
RUNTIME_FLOOR_MIN = 15
PROCESS_MB = 3072
MEMORY_MARGIN = 1.5
# the controller answers in well under a second; a silent one is unreachable
PING_TIMEOUT_S = 20


@dataclass(frozen=True)
class Settings:
    partition: str | None
    account: str | None


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    return Settings(partition=(env.get(PARTITION_ENV) or "").strip() or None,
                    account=(env.get(ACCOUNT_ENV) or "").strip() or None)


# ---------------------------------------------------------------- what a job asks for
CPU_JOB_LIMIT_H = 24


def plan_device(cfg: Mapping[str, Any], cal=None, plan=None) -> str:
    """'cuda' or 'cpu': where the preset's jobs run on a cluster. runtime.device auto asks for a
    GPU unless the preset is sized for CPUs: the calibration prices every one of its jobs on a
    CPU and none takes more than CPU_JOB_LIMIT_H hours there (quick, standard, offline)."""
    device = str(cfg["runtime"]["device"])
    if device.startswith("cuda"):
        return "cuda"
    if device != "auto":
        return "cpu"
    cal = _cal.load() if cal is None else cal
    cost, longest = _est.Cost(), 0.0
    plan = JobGraph(cfg).full_plan() if plan is None else plan
    for jobs in plan.jobs.values():
        for job in jobs:
            try:
                longest = max(longest, _est.job_seconds(cfg, job, cal, "cpu", cost))
            except _est.NoCalibration:
                return "cuda"
    return "cpu" if longest <= CPU_JOB_LIMIT_H * 3600 else "cuda"


def memory_mb(cfg: Mapping[str, Any], dataset: str) -> int:
    info = get_info(dataset)
    data = cfg["data"]
    pixels = info.in_channels * info.image_size * info.image_size
    if dataset == "imagenet":
        # read from disk per batch: the loader workers' batches in flight (two each)
        held = max(1, int(data.get("num_workers") or 0)) * 2 * int(data["batch_size"]) * pixels * 4
    else:
        train = info.train_size if data.get("train_subset") is None else int(data["train_subset"])
        test = info.test_size if data.get("test_subset") is None else int(data["test_subset"])
        held = (train + int(data["val_size"]) + test) * pixels * 4
    return int(math.ceil((PROCESS_MB + held / 2**20) * MEMORY_MARGIN))


def runtime_min(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    return int(math.ceil(seconds * RUNTIME_MARGIN / 60)) + RUNTIME_FLOOR_MIN


def gpu_request(device: str, jobs_per_gpu: int) -> dict[str, Any]:
    if device != "cuda":
        return {}
    if jobs_per_gpu > 1:
        return {"gres": "shard:1"}
    return {"gpu": 1}


def job_resources(cfg: Mapping[str, Any], rule: str, job, *, device: str, cal) -> dict[str, Any]:
    """The SLURM resources of one job (``job``: a benchmark.planning.estimate.Job, or None for a light
    rule): mem_mb, runtime (minutes; absent without a calibration figure), gpu or gres, and
    slurm_partition / slurm_account from the settings."""
    out: dict[str, Any] = {}
    s = settings()
    if s.partition:
        out["slurm_partition"] = s.partition
    if s.account:
        out["slurm_account"] = s.account
    if rule not in GPU_RULES or job is None:
        out.update(mem_mb=LIGHT_MEM_MB, runtime=LIGHT_RUNTIME_MIN)
        return out
    out["mem_mb"] = memory_mb(cfg, job.dataset)
    seconds = None
    # the cost model prices the grid's stages; a sweep or submission job keeps the partition's limit
    if rule in _est.COMPUTE_RULES:
        try:
            seconds = _est.job_seconds(cfg, job, cal, device, _est.Cost())
        except _est.NoCalibration:
            seconds = None
    minutes = runtime_min(seconds)
    if minutes is not None:
        out["runtime"] = minutes
    out.update(gpu_request(device, int(cfg["runtime"].get("jobs_per_gpu") or 1)))
    return out


# ---------------------------------------------------------------- the cluster, before submitting
Runner = Callable[..., subprocess.CompletedProcess]


def _run(cmd: list[str], runner: Runner, timeout: float = PING_TIMEOUT_S) -> subprocess.CompletedProcess:
    try:
        return runner(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"no answer in {timeout:.0f} s")
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: command not found")


@dataclass(frozen=True)
class Node:
    name: str
    partitions: tuple[str, ...]
    cpus: int
    mem_mb: int
    gres: str  # e.g. "gpu:4,shard:16" or "(null)"

    def count(self, kind: str) -> int:
        total = 0
        for item in self.gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == kind:
                try:
                    total += int(parts[-1])
                except ValueError:
                    total += 1
        return total


def parse_nodes(text: str) -> list[Node]:
    """``sinfo -h -N -o '%N|%P|%c|%m|%G'`` -> one Node per node (its partitions merged)."""
    nodes: dict[str, Node] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, part, cpus, mem, gres = fields
        part = part.rstrip("*")
        try:
            cpus_i, mem_i = int(cpus.rstrip("+")), int(mem.rstrip("+"))
        except ValueError:
            continue
        old = nodes.get(name)
        parts = (old.partitions if old else ()) + (part,)
        nodes[name] = Node(name, parts, cpus_i, mem_i, gres)
    return list(nodes.values())


def default_partition(text: str) -> str | None:
    for line in text.splitlines():
        part = line.strip().split("|")[1] if "|" in line else ""
        if part.endswith("*"):
            return part[:-1]
    return None


def cluster_problems(requests: Iterable[tuple[str, int, Mapping[str, Any]]], *,
                     environ: Mapping[str, str] | None = None, jobs_per_gpu: int = 1,
                     runner: Runner = subprocess.run) -> list[str]:
    """Problems that would make a submission fail or a job wait forever; [] when none.
    ``requests``: (rule, threads, resources) of each job to submit."""
    if shutil.which("sbatch") is None and runner is subprocess.run:
        return ["sbatch is not on PATH: this machine is no SLURM submit host (load the cluster's "
                "slurm module, or run on the login node)"]
    ping = _run(["scontrol", "ping"], runner)
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        said = [ln.strip() for ln in (ping.stdout + "\n" + ping.stderr).splitlines()
                if ln.strip() and not set(ln.strip()) <= {"*"}]
        env = os.environ if environ is None else environ
        return [f"the SLURM controller does not answer (scontrol ping: "
                f"{'; '.join(said) or 'exit ' + str(ping.returncode)}); check SLURM_CONF "
                f"({env.get('SLURM_CONF', 'unset: /etc/slurm/slurm.conf')}) and that slurmctld runs"]
    s = settings(environ)
    info = _run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"], runner)
    if info.returncode != 0:
        return [f"sinfo failed: {info.stderr.strip()}"]
    nodes = parse_nodes(info.stdout)
    partitions = sorted({p for n in nodes for p in n.partitions})
    partition = s.partition or default_partition(info.stdout)
    problems = []
    if s.partition and s.partition not in partitions:
        return [f"{PARTITION_ENV}={s.partition}: the cluster has no such partition (it has: "
                f"{', '.join(partitions) or 'none'})"]
    if partition is None:
        return [f"the cluster has no default partition: set {PARTITION_ENV} (one of: "
                f"{', '.join(partitions)})"]
    if s.account:
        problems += _account_problems(s.account, runner)
    members = [n for n in nodes if partition in n.partitions]
    if jobs_per_gpu > 1 and members:
        problems += _shard_problems(members, partition, jobs_per_gpu, requests)
    asks: dict[tuple, list[str]] = {}
    for rule, threads, res in requests:
        key = (int(threads), int(res.get("mem_mb") or 0), int(res.get("gpu") or 0),
               1 if str(res.get("gres", "")).startswith("shard") else 0)
        if rule not in asks.setdefault(key, []):
            asks[key].append(rule)
    biggest = max(members, key=lambda n: (n.count("gpu"), n.cpus, n.mem_mb), default=None)
    offer = (f"its largest node {biggest.name} has {biggest.cpus} CPUs, {biggest.mem_mb} MB, "
             f"GRES {biggest.gres}") if biggest else "it has no nodes"
    for (threads, mem, gpus, shards), rules in asks.items():
        if any(n.cpus >= threads and n.mem_mb >= mem and n.count("gpu") >= gpus
               and n.count("shard") >= shards for n in members):
            continue
        ask = f"{threads} CPUs (runtime.threads), {mem} MB"
        ask += f", {gpus} GPU" if gpus else ""
        ask += ", 1 GPU shard" if shards else ""
        problems.append(f"rule{'s' if len(rules) > 1 else ''} {', '.join(rules)}: no node of "
                        f"partition {partition} can run a job asking {ask}: {offer}; such a job "
                        "would wait forever")
    return problems


def _account_problems(account: str, runner: Runner) -> list[str]:
    proc = _run(["sacctmgr", "-n", "-P", "show", "associations", "format=account"], runner)
    if proc.returncode != 0:
        # no accounting database: SLURM checks no account, so none is wrong
        return []
    known = {line.strip().lower() for line in proc.stdout.splitlines() if line.strip()}
    if known and account.lower() not in known:
        return [f"{ACCOUNT_ENV}={account}: the cluster has no such account (it has: "
                f"{', '.join(sorted(known))})"]
    return []


def _shard_problems(members: list[Node], partition: str, k: int, requests) -> list[str]:
    if not any(str(res.get("gres", "")).startswith("shard") for _, _, res in requests):
        return []
    sharing = [n for n in members if n.count("shard") and n.count("gpu")]
    if not sharing:
        return [f"runtime.jobs_per_gpu is {k}, but no node of partition {partition} offers GPU "
                "shards (GRES shard): run one job per card (jobs_per_gpu: 1), or ask the admins "
                f"for {k} shards per GPU"]
    per_card = {n.count("shard") // n.count("gpu") for n in sharing}
    if per_card != {k}:
        return [f"runtime.jobs_per_gpu is {k}, but the nodes of partition {partition} split each "
                f"card into {', '.join(map(str, sorted(per_card)))} shard(s): set jobs_per_gpu to "
                "that number"]
    return []


# the executor plugin's warnings when no account is given: it guesses one from sacct and says so on
# every run, also on clusters that need no account; ours says it once (check_slurm_cluster)
_ACCOUNT_GUESS = ("No SLURM account given, trying to guess", "Unable to guess SLURM account",
                  "No account was given, not able to get a SLURM account")


class _AccountGuessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ACCOUNT_GUESS)


def quiet_account_guess(environ: Mapping[str, str] | None = None) -> None:
    """With no account set, the plugin's guessing is noise: sbatch uses the user's default
    account (or none). Drops its warnings and logs one line instead."""
    if settings(environ).account:
        return
    log = logging.getLogger("snakemake.logging")  # the logger Snakemake hands its executors
    if not any(isinstance(f, _AccountGuessFilter) for f in log.filters):
        log.addFilter(_AccountGuessFilter())
        log.info(f"SLURM account: the cluster's default for this user ({ACCOUNT_ENV} unset)")
