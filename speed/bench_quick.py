"""Where a preset's time goes, and whether it fits: a scaled run of its jobs (a benchmark, not a test).

Long because its main prints the six sections of one run side by side, all from the same measured
jobs (the schedule is speed/dag_schedule.py, the ledger speed/ledger.py).

Runs, in this process, on the preset's thread count, the real stage functions of a few cells of a
preset (default presets/quick.yaml): the pretraining, the mask search, finetune and evaluation of
the cells named by --cells, and the dense model's evaluation. Prints, side by side in one run:

  1. job start-up: a job's process start and imports (what Snakemake pays per job);
  2. seconds per stage beside the floor of its model passes (speed/passes.py: every forward and
     backward counted with its batch size and priced by timing the same model alone);
  3. inside AutoAttack, per attack (APGD-CE, APGD-T, FAB-T, Square): seconds, images passed
     forward / forward+backward, floor, and the time beyond the floor;
  4. the fast code paths against the reference ones (benchmark.core.fastpaths) on one pass of each
     kind, and the AutoAttack flags of both on the first images (they must be identical);
  5. the predicted wall time of the preset's whole DAG on --cores cores: every job's cost from the
     measured job of the same stage and method (the nearest sparsity for evaluations), start-up
     added, scheduled greedily as Snakemake's local executor does (the lone pretraining on every
     core when the preset lets it);
  6. the goals, one PASS or FAIL line each.

Timings are CPU seconds of this process (time.process_time), so other people's jobs on a shared
machine inflate them far less than wall time; with one thread per job, CPU seconds are the wall
time of a job on an idle core.

    .venv/bin/python speed/bench_quick.py                       # presets/quick.yaml, ~10 min
    .venv/bin/python speed/bench_quick.py --preset presets/standard.yaml --budget 300
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "speed"))

import torch  # noqa: E402
from dag_schedule import job_cost, preset_jobs, simulate  # noqa: E402
from ledger import Ledger  # noqa: E402
from passes import KINDS, PassPrices, cpu_time  # noqa: E402

from benchmark.core import config as C  # noqa: E402
from benchmark.core import fastpaths  # noqa: E402
from benchmark.core.stats import wilson_interval  # noqa: E402
from benchmark.training import stages  # noqa: E402

ATTACK_ORDER = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


# ---------------------------------------------------------------- the stages of a few cells
def _traits(method: str) -> dict:
    from benchmark.core.registry import method_registry

    cls = method_registry().get(method)
    return {k: bool(getattr(cls, k)) for k in ("learns_scores", "needs_pretrain", "needs_finetune")}


def run_cells(cfg: dict, cells: list[tuple[str, str, str]], work: Path, ledger: Ledger,
              dataset: str, arch: str, seed: int = 0) -> None:
    work.mkdir(parents=True, exist_ok=True)
    dense = work / "dense.pt"
    label = "pretrain"
    with ledger.stage(label):
        stages.pretrain(C.stage_config(cfg, "pretrain", dataset=dataset, arch=arch), dataset=dataset,
                        arch=arch, seed=seed, out=dense)
    ecfg = C.stage_config(cfg, "evaluate", dataset=dataset, arch=arch)
    label = "evaluate/dense"
    with ledger.stage(label):
        ledger.results[label] = stages.evaluate(
            ecfg, model_path=dense, out=work / "result_dense.json",
            cell={"dataset": dataset, "arch": arch, "method": "dense", "s2ap": "n/a",
                  "sparsity": 0.0, "seed": seed, "preset": cfg["name"]})
    for method, s2ap, sparsity in cells:
        traits = _traits(method)
        tag = f"{method}/{C.s2ap_to_path(s2ap)}/{sparsity}"
        name = tag.replace("/", "_")
        search, model = work / f"search_{name}.pt", work / f"model_{name}.pt"
        label = f"prune/{tag}"
        with ledger.stage(label):
            stages.prune(C.stage_config(cfg, "prune", dataset=dataset, arch=arch, method=method,
                                        s2ap=s2ap, traits=traits),
                         dataset=dataset, arch=arch, method=method, s2ap=s2ap,
                         sparsity=float(sparsity), seed=seed,
                         dense=dense if traits["needs_pretrain"] else None, out=search)
        label = f"finetune/{tag}"
        with ledger.stage(label):
            stages.finetune(C.stage_config(cfg, "finetune", dataset=dataset, arch=arch, method=method,
                                           s2ap=s2ap, traits=traits),
                            dataset=dataset, arch=arch, method=method, s2ap=s2ap,
                            sparsity=float(sparsity), seed=seed, search=search, out=model)
        label = f"evaluate/{tag}"
        with ledger.stage(label):
            ledger.results[label] = stages.evaluate(
                ecfg, model_path=model, out=work / f"result_{name}.json",
                cell={"dataset": dataset, "arch": arch, "method": method, "s2ap": s2ap,
                      "sparsity": float(sparsity), "seed": seed, "preset": cfg["name"]})


# ---------------------------------------------------------------- job start-up
def startup_seconds(reps: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds of starting a job's interpreter with what every stage command imports."""
    code = ("import torch, torchvision, benchmark.cli, benchmark.training.stages, benchmark.evaluation.protocol, "
            "benchmark.core.datasets, benchmark.training.loop")
    walls, cpus = [], []
    for _ in range(reps):
        before = os.times()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        walls.append(time.perf_counter() - t0)
        after = os.times()
        cpus.append((after.children_user - before.children_user)
                    + (after.children_system - before.children_system))
    return statistics.median(walls), statistics.median(cpus)


def snakemake_startup(preset: str) -> float:
    """Wall seconds of Snakemake's own start (parse, validation, DAG) before the first job: a
    dry run in an empty folder."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                        "--cores", "2", "--configfile", str(Path(preset).resolve())],
                       cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - t0


def aggregate_seconds(results: list[Path]) -> float:
    """CPU seconds of the aggregate job (a real one, start-up included) on the results made here."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        before = os.times()
        subprocess.run([sys.executable, "-m", "benchmark", "aggregate", "--runs",
                        *[str(r) for r in results], "--out", tmp], check=True, cwd=REPO,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        after = os.times()
    return (after.children_user - before.children_user) + (after.children_system - before.children_system)


def thread_speedup(build, input_shape, num_classes, cores: int, steps: int, attack_steps: int,
                   batch: int, rounds: int = 5) -> tuple[float, float, float]:
    """(1-thread, cores-thread, speed-up) wall seconds of one PGD-AT training step of this model,
    interleaved rounds, medians: what giving the lone pretraining every core buys."""
    from torch.utils.data import TensorDataset

    from benchmark.evaluation.attacks import AttackConfig
    from benchmark.training.loop import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *input_shape), generator=g)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    model = build()
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=batch, attack=AttackConfig(0.1, attack_steps, 0.025),
                      val_attack_steps=0)
    trainer = Trainer(model, list(model.parameters()), cfg, train_set=TensorDataset(x, y), val_set=None,
                      device=torch.device("cpu"), seed=0)
    old = torch.get_num_threads()
    times = {1: [], cores: []}
    try:
        for r in range(rounds):
            for t in ((1, cores) if r % 2 else (cores, 1)):
                torch.set_num_threads(t)
                trainer.train_step(x, y)
                t0 = time.perf_counter()
                for _ in range(steps):
                    trainer.train_step(x, y)
                times[t].append((time.perf_counter() - t0) / steps)
    finally:
        torch.set_num_threads(old)
    one, many = statistics.median(times[1]), statistics.median(times[cores])
    return one, many, one / many


# ---------------------------------------------------------------- fast against reference paths
def path_ratios(build, input_shape, num_classes, reps: int = 9) -> dict[str, tuple[float, float]]:
    """Per kind, (reference, fast) median CPU seconds of one pass at batch 100, interleaved."""
    out = {}
    for kind in KINDS:
        times = {True: [], False: []}
        prices = {ref: PassPrices(build, input_shape, num_classes, reps=1) for ref in (True, False)}
        for r in range(reps):
            for ref in ((True, False) if r % 2 else (False, True)):
                with fastpaths.reference_paths(ref):
                    times[ref].append(prices[ref]._measure(kind, 100))
        out[kind] = (statistics.median(times[True]), statistics.median(times[False]))
    return out


def flags_identical(model_path: Path, cfg: dict, dataset: str, arch: str, n: int) -> tuple[bool, float, float]:
    """AutoAttack (the preset's version, batch and seed) on the first n test images, on the fast
    and on the reference paths: identical flags? (and the CPU seconds of each)."""
    from benchmark.evaluation.autoattack import run_autoattack
    from benchmark.evaluation.protocol import first_n, prepare_for_eval

    info = stages.dataset_info(dataset)
    model, _, _ = stages.load_exported(model_path, arch, info, cfg["model"])
    model = prepare_for_eval(model)
    _, _, test = stages.load_splits(dataset, cfg["data"], augment=False)
    x, y = first_n(test, n)
    aa = cfg["evaluate"]["autoattack"]
    eps = cfg["evaluate"]["eps"] or info.eps
    out, secs = {}, {}
    for ref in (False, True):
        with fastpaths.reference_paths(ref):
            t0 = cpu_time()
            out[ref] = run_autoattack(model, x, y, eps=eps, version=aa["version"], attacks=aa["attacks"],
                                      seed=aa["seed"], batch_size=aa["batch_size"] or 250,
                                      shard_size=aa["shard_size"], progress=False)["flags"]
            secs[ref] = cpu_time() - t0
    return bool(torch.equal(out[False], out[True])), secs[True], secs[False]


# ---------------------------------------------------------------- main
def _goal(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}  {text}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=str(REPO / "presets" / "quick.yaml"))
    ap.add_argument("--cells", default=None,
                    help="method:s2ap:sparsity,... to run (default: the most and least sparse "
                         "cell of the first score-learning method, S2AP on and off, and the "
                         "densest cell of every other method)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--budget", type=float, default=900.0, help="wall seconds the preset must fit")
    ap.add_argument("--margin", type=float, default=0.2,
                    help="the prediction must leave this fraction of the budget free")
    ap.add_argument("--work", default=None, help="folder for the models (default: a temp dir)")
    ap.add_argument("--data-root", default=str(REPO / "data"))
    ap.add_argument("--check-images", type=int, default=20,
                    help="images of the fast-vs-reference AutoAttack comparison")
    ap.add_argument("--results", default=None,
                    help="result JSONs of a full run of the preset (default: results/<preset>/runs "
                         "when it exists) for the per-sparsity separation goals")
    ap.add_argument("--from-ledger", action="store_true",
                    help="reuse the stage measurements saved in --work by an earlier run")
    ap.add_argument("--pretrain-speedup", type=float, default=None,
                    help="speed-up of the lone pretraining on every core (default: measured)")
    args = ap.parse_args(argv)

    import tempfile

    cfg = C.validate(C.with_defaults(C.load_preset(args.preset)))
    cfg = copy.deepcopy(cfg)
    cfg["data"]["root"] = args.data_root
    if args.results is None and (REPO / "results" / cfg["name"] / "runs").is_dir():
        args.results = str(REPO / "results" / cfg["name"] / "runs")
    dataset, arch = cfg["grid"]["datasets"][0], cfg["grid"]["archs"][0]
    threads = int(cfg["runtime"]["threads"])
    torch.set_num_threads(threads)
    os.environ["APBENCH_THREADS"] = str(threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_quick_"))
    cells = _default_cells(cfg) if args.cells is None else [
        tuple(c.split(":")) for c in args.cells.split(",")]
    cells = [(m, s, C.canonical_sparsity(sp)) for m, s, sp in cells]
    print(f"preset {cfg['name']} ({args.preset}); {dataset}/{arch} width {cfg['model']['width']}; "
          f"torch {torch.__version__}, {threads} thread(s) per job; {os.cpu_count()} CPUs here, "
          f"load average {os.getloadavg()[0]:.1f}; models in {work}", flush=True)
    print(f"cells run: {', '.join('/'.join(c) for c in cells)} (+ pretrain, dense evaluation)", flush=True)

    # 1. start-up
    start_wall, start_cpu = startup_seconds()
    snake_s = snakemake_startup(args.preset)
    print(f"\n[1] job start-up (python + imports of a stage command, torch most of it): "
          f"{start_cpu:.2f} s CPU, {start_wall:.2f} s wall; Snakemake's own start (parse, "
          f"validate, DAG): {snake_s:.1f} s wall", flush=True)

    # 2-3. the stages
    ledger_file = work / "ledger.json"
    if args.from_ledger and ledger_file.exists():
        ledger = Ledger.load(ledger_file)
        print(f"    (stages not rerun: the measurements of {ledger_file})", flush=True)
    else:
        ledger = Ledger()
        t_all = time.perf_counter()
        run_cells(cfg, cells, work, ledger, dataset, arch)
        ledger.save(ledger_file)
        print(f"    (stages ran in {time.perf_counter() - t_all:.0f} s wall)", flush=True)
    from benchmark.core.datasets import get_info
    from benchmark.core.models import build_model

    info = get_info(dataset)
    width = float(cfg["model"]["width"])

    def build():
        torch.manual_seed(0)
        return build_model(arch, info, width=width)

    prices = PassPrices(build, (info.in_channels, info.image_size, info.image_size), info.num_classes)
    stage_labels = list(ledger.stages)
    measured: dict[str, float] = {}
    print("\n[2] seconds per stage (CPU, one thread) beside the floor of its model passes")
    print(f"    {'stage':34s} {'seconds':>8s} {'floor':>8s} {'beyond':>7s}   images fwd / attack / train")
    for label in _stage_order(stage_labels):
        sub = [k for k in ledger.seconds if k == label or k.startswith(label + "/")]
        secs = ledger.seconds[label]
        floor = sum(prices.floor(ledger.counter, k) for k in sub)
        imgs = defaultdict(int)
        for k in sub:
            for kind, n in ledger.counter.images(k).items():
                imgs[kind] += n
        measured[label] = secs + start_cpu
        print(f"    {label:34s} {secs:8.1f} {floor:8.1f} {_pct(secs, floor):>7s}   "
              f"{imgs['fwd']:,} / {imgs['attack']:,} / {imgs['train']:,}", flush=True)
        for part in ("clean", "pgd", "validate"):
            k = f"{label}/{part}"
            if k in ledger.seconds:
                fl = prices.floor(ledger.counter, k)
                print(f"      {part:32s} {ledger.seconds[k]:8.1f} {fl:8.1f} {_pct(ledger.seconds[k], fl):>7s}")

    print("\n[3] inside AutoAttack, per attack (CPU seconds; floor = its passes at the measured prices)")
    print(f"    {'evaluation':24s} {'attack':9s} {'seconds':>8s} {'floor':>8s} {'beyond':>7s}   images fwd / fwd+bwd")
    aa_share: dict[str, list[float]] = defaultdict(list)
    for label in _stage_order(stage_labels):
        if not label.startswith("evaluate/"):
            continue
        total = ledger.seconds.get(f"{label}/autoattack/other", 0.0)
        for attack in (*ATTACK_ORDER, "other"):
            k = f"{label}/autoattack/{attack}"
            if k not in ledger.seconds:
                continue
            secs = ledger.seconds[k] if attack != "other" else ledger.seconds[k] - sum(
                ledger.seconds.get(f"{label}/autoattack/{a}", 0.0) for a in ATTACK_ORDER)
            fl = prices.floor(ledger.counter, k)
            imgs = ledger.counter.images(k)
            name = attack if attack != "other" else "rest"
            print(f"    {label:24s} {name:9s} {secs:8.1f} {fl:8.1f} {_pct(secs, fl):>7s}   "
                  f"{imgs['fwd']:,} / {imgs['attack']:,}")
            if attack != "other" and total:
                aa_share[attack].append(secs / total)
    if aa_share:
        print("    share of AutoAttack time: " + ", ".join(
            f"{a} {100 * statistics.mean(v):.0f} %" for a, v in aa_share.items()))

    # 4. fast against reference
    print("\n[4] fast paths against the reference paths (one pass at batch 100, CPU ms, interleaved)")
    ratios = path_ratios(build, (info.in_channels, info.image_size, info.image_size), info.num_classes)
    for kind, (ref, fast) in ratios.items():
        print(f"    {kind:7s} reference {1e3 * ref:7.2f}  fast {1e3 * fast:7.2f}  ratio {fast / ref:.2f}")
    same, ref_s, fast_s = flags_identical(work / "dense.pt", cfg, dataset, arch, args.check_images)
    print(f"    AutoAttack on the first {args.check_images} test images of the dense model: flags "
          f"{'identical' if same else 'DIFFERENT'} (reference {ref_s:.1f} s, fast {fast_s:.1f} s CPU)")

    # 5. the schedule
    jobs = preset_jobs(cfg)
    if args.pretrain_speedup is None:
        train = cfg["pretrain"]
        one, many, speedup = thread_speedup(build, (info.in_channels, info.image_size, info.image_size),
                                            info.num_classes, args.cores, 2,
                                            int(train["attack"]["steps"] or info.steps),
                                            int(train["batch_size"]))
        speedup = min(max(speedup, 1.0), float(args.cores))
        print(f"\n    lone pretraining: a training step takes {1e3 * one:.0f} ms on 1 thread, "
              f"{1e3 * many:.0f} ms on {args.cores} (wall, interleaved medians): speed-up "
              f"{one / many:.2f}, used {speedup:.2f}")
    else:
        speedup = args.pretrain_speedup
    costs, sources = {}, {}
    for j in jobs:
        costs[j["key"]], sources[j["key"]] = job_cost(j, measured)
    results = sorted(work.glob("result_*.json"))
    costs["aggregate"] = aggregate_seconds(results) if results else start_cpu
    threads_of = {j["key"]: (args.cores, speedup) for j in jobs if j["stage"] == "pretrain"}
    best = simulate(jobs, costs, args.cores, threads_of, "critical")
    worst = simulate(jobs, costs, args.cores, threads_of, "worst")
    wall = max(best, worst) + snake_s
    total = sum(costs.values())
    n_models = sum(1 for j in jobs if j["stage"] == "evaluate")
    print(f"\n[5] predicted wall time of the whole preset on {args.cores} cores: {len(jobs)} jobs, "
          f"{n_models} models")
    by_stage = defaultdict(list)
    for j in jobs:
        by_stage[j["stage"]].append(costs[j["key"]])
    for stage, v in by_stage.items():
        print(f"    {stage:10s} {len(v):3d} jobs, {sum(v):7.1f} s CPU (mean {statistics.mean(v):.1f} s, start-up "
              f"{start_cpu:.1f} s each included)")
    print(f"    total {total:.0f} s CPU / {args.cores} cores = {total / args.cores:.0f} s; pretraining alone "
          f"first ({costs[jobs[0]['key']]:.0f} s CPU, speed-up {speedup:.2f} on {args.cores} cores); "
          f"greedy schedule {best:.0f} s (critical path first) to {worst:.0f} s (shortest first), "
          f"+ Snakemake's start {snake_s:.0f} s: predicted {wall:.0f} s = {wall / 60:.1f} min "
          f"(budget {args.budget:.0f} s)")
    unmeasured = sorted({s for s in sources.values() if s.startswith("no measured")})
    for s in unmeasured:
        print(f"    WARNING: {s}")

    # 6. goals
    print("\n[6] goals")
    ev = {k: v for k, v in ledger.results.items()}
    goals = _goals(cfg, jobs, ev, wall, args, same)
    for line in goals:
        print(line)
    return 0 if all(line.startswith("PASS") for line in goals) else 1


def _goals(cfg, jobs, ev, wall, args, same) -> list[str]:
    out = []
    grid = cfg["grid"]
    n_models = sum(1 for j in jobs if j["stage"] == "evaluate")
    aa = cfg["evaluate"]["autoattack"]
    out.append(_goal(wall <= args.budget * (1 - args.margin),
                     f"predicted wall {wall:.0f} s <= {args.budget * (1 - args.margin):.0f} s "
                     f"(budget {args.budget:.0f} s less {100 * args.margin:.0f} % margin)"))
    out.append(_goal(aa["version"] == "standard" and aa["attacks"] is None and aa["n_images"] >= 100,
                     f"AutoAttack {aa['version']}, attacks {aa['attacks'] or 'all'}, on {aa['n_images']} images"))
    out.append(_goal(same, "AutoAttack flags identical on the fast and the reference paths"))
    if cfg["name"] == "quick":
        out.append(_goal(n_models >= 10 and {90, 95, 99} <= {float(s) for s in grid["sparsities"]},
                         f"{n_models} models (>= 10) at sparsities {grid['sparsities']}"))
    dense = ev.get("evaluate/dense")
    if dense is not None:
        m = dense["metrics"]["autoattack"]
        lo, hi = wilson_interval(m["correct"], m["n"])
        out.append(_goal(lo >= 0.25, f"dense AutoAttack accuracy {100 * m['acc']:.0f} % "
                                     f"(Wilson [{100 * lo:.1f}, {100 * hi:.1f}]) far above chance "
                                     f"(10 %): lower bound >= 25 %"))
    # the score-learning method above every baseline at each sparsity both were run at
    out += _separation(ev.values(), "measured here")
    if args.results and Path(args.results).is_dir():
        from benchmark.core.result_file import read_result

        records = [read_result(p) for p in sorted(Path(args.results).rglob("*.json"))]
        out += _separation(records, f"{args.results}")
    return out


def _separation(records, where: str) -> list[str]:
    """A goal line per (score-learning cell, sparsity): its AutoAttack Wilson interval lies above
    the interval of every baseline (learns no scores) at the same sparsity."""
    from benchmark.core.registry import method_registry

    registry = method_registry()
    by_sp: dict[float, list[dict]] = defaultdict(list)
    for r in records:
        if r["cell"]["method"] != "dense" and r["metrics"].get("autoattack"):
            by_sp[float(r["cell"]["sparsity"])].append(r)
    out = []
    for sp, recs in sorted(by_sp.items()):
        learners = [r for r in recs if registry.get(r["cell"]["method"]).learns_scores]
        baselines = [r for r in recs if not registry.get(r["cell"]["method"]).learns_scores]
        for h in learners:
            for b in baselines:
                mh, mb = h["metrics"]["autoattack"], b["metrics"]["autoattack"]
                lh, uh = wilson_interval(mh["correct"], mh["n"])
                lb, ub = wilson_interval(mb["correct"], mb["n"])
                out.append(_goal(lh > ub, (
                    f"{where}, sp{sp:g}: {h['cell']['method']} (S2AP {h['cell']['s2ap']}) AA "
                    f"{100 * mh['acc']:.0f} % [{100 * lh:.1f}, {100 * uh:.1f}] above "
                    f"{b['cell']['method']} AA {100 * mb['acc']:.0f} % [{100 * lb:.1f}, "
                    f"{100 * ub:.1f}]: the Wilson intervals do not overlap")))
    return out


def _default_cells(cfg) -> list[tuple[str, str, str]]:
    from benchmark.core.registry import method_registry

    registry = method_registry()
    sps = sorted(cfg["grid"]["sparsities"], key=float)
    learners = [m for m in cfg["grid"]["methods"] if registry.get(m).learns_scores]
    others = [m for m in cfg["grid"]["methods"] if m not in learners]
    cells = []
    if learners:
        s2 = [s for s in cfg["grid"]["s2ap"] if s != "off"]
        cells.append((learners[0], s2[0] if s2 else "off", str(sps[-1])))
        cells.append((learners[0], "off", str(sps[0])))
    for m in others:  # the baseline at both ends, so each end has a pair to compare
        cells.append((m, "n/a", str(sps[0])))
        cells.append((m, "n/a", str(sps[-1])))
    return list(dict.fromkeys(cells))


def _stage_order(labels):
    order = {"pretrain": 0, "prune": 1, "finetune": 2, "evaluate": 3}
    return sorted(labels, key=lambda k: (order.get(k.split("/")[0], 9), k))


def _pct(secs: float, floor: float) -> str:
    if floor <= 0:
        return "n/a"
    return f"{100 * (secs - floor) / floor:+.0f}%"


if __name__ == "__main__":
    raise SystemExit(main())
