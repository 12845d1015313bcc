"""Command line: every stage of the pipeline is a command of its own; the Snakemake rules call them.

  python -m benchmark pretrain  --config JSON --dataset D --arch A --seed S --out dense.pt
  python -m benchmark prune     --config JSON ... --method M --s2ap off --sparsity 90 --dense dense.pt --out search.pt
  python -m benchmark finetune  --config JSON ... --search search.pt --out model.pt
  python -m benchmark evaluate  --config JSON --model model.pt --cell JSON --out result.json
  python -m benchmark aggregate --runs results/quick/runs --out results/quick
  python -m benchmark table     --spec JSON --runs r1.json ... --out results/<preset>/tables
  python -m benchmark import-dense --entry JSON --dataset D --arch A --out dense.pt
  python -m benchmark estimate  --configfile presets/X.yaml [presets/smoke.yaml] [--device cuda]
  python -m benchmark methods   (lists the registered methods and their traits)
  python -m benchmark site / export robustbench|models|verify   (publishing: benchmark/publishing/cli.py)

``--config`` takes the stage's sub-config as a JSON string or ``@file.json``.

Expected failures (bad config, missing or corrupt files, a checkpoint that does not fit, an unknown
name) end with one message on stderr and exit status 2; ``--debug`` (or APBENCH_DEBUG=1 in the
environment, which Snakemake jobs inherit) adds the traceback. Anything else is a bug and keeps its
traceback. SIGTERM/SIGINT stop a training job at the next safe point, keeping its checkpoint (exit
status 143/130). Progress and diagnostics go to stderr through ``logging``; a command's result goes
to stdout.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from benchmark.core.choices import PURPOSES
from benchmark.core.errors import DEBUG_ENV, Interrupted, MissingFileError, UserError
from benchmark.core.external_dense import import_dense
from benchmark.core.registry import UnknownNameError, method_registry
from benchmark.planning.estimate import main as estimate_main
from benchmark.planning.gpu_sharing import main as sharing_main
from benchmark.publishing.cli import COMMANDS as PUBLISH_COMMANDS
from benchmark.publishing.cli import add_commands as add_publish_commands
from benchmark.publishing.cli import run as run_publish
from benchmark.results.leaderboard_stamp import write_stamp
from benchmark.results.loading import result_files
from benchmark.results.tables import write as write_table
from benchmark.runtime.gpu_slots import claim_from_env
from benchmark.runtime.signals import raise_on_stop_signals

# the registry's UnknownNameError predates UserError; both are the user's to fix
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (UserError, UnknownNameError)


def _json_arg(text: str) -> dict:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror or exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _cell_args(p: argparse.ArgumentParser, *, method: bool) -> None:
    p.add_argument("--config", type=_json_arg, required=True, help="stage sub-config (JSON or @file)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--state-dir", default=None, help="resume checkpoints (kept outside declared outputs)")
    if method:
        p.add_argument("--method", required=True)
        p.add_argument("--s2ap", default="off")
        p.add_argument("--sparsity", type=float, required=True, help="nominal sparsity in percent")
        _method_file_arg(p)


def _method_file_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method-file", dest="method_files", action="append", default=[],
                   metavar="FILE", help="a method file outside methods/ (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the command; SUPPRESS keeps the subcommand's default
    # from overwriting a --debug given before it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=f"print the traceback of expected errors too (or set {DEBUG_ENV}=1)")
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__, parents=[debug],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(sub.add_parser, parents=[debug])

    p = command("pretrain", help="dense robust pretraining")
    _cell_args(p, method=False)
    p.add_argument("--out", required=True)

    p = command("prune", help="mask search")
    _cell_args(p, method=True)
    p.add_argument("--dense", default="none", help="dense.pt from pretrain, or 'none'")
    p.add_argument("--search-seed", type=int, default=None,
                   help="seed of the mask search when it differs from the dense model's (seed stability)")
    p.add_argument("--out", required=True)

    p = command("finetune", help="finetune the kept weights and export the plain model")
    _cell_args(p, method=True)
    p.add_argument("--search", required=True)
    p.add_argument("--out", required=True)

    p = command("evaluate", help="clean, PGD and AutoAttack accuracy of an exported model")
    p.add_argument("--config", type=_json_arg, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--cell", type=_json_arg, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--extra-diagnostics", action="append", default=[],
                   help="JSON file of diagnostics to record with the result (seed stability)")

    p = command("autoattack-shard", help="one AutoAttack shard of an evaluation (a GPU's share); "
                                         "the evaluate command then finds it done")
    p.add_argument("--config", type=_json_arg, required=True, help="the evaluate stage's config")
    p.add_argument("--model", required=True)
    p.add_argument("--cell", type=_json_arg, required=True, help="the evaluate command's --cell")
    p.add_argument("--shard", type=int, required=True, help="shard index, from 0")
    p.add_argument("--state-dir", required=True, help="the evaluate command's --state-dir")
    p.add_argument("--out", required=True, help="a receipt (JSON) for the workflow")

    p = command("stability", help="seed stability: compare the masks of two mask searches")
    p.add_argument("--a", required=True, help="search.pt of the first search seed")
    p.add_argument("--b", required=True, help="search.pt of the second search seed")
    p.add_argument("--out", required=True)

    p = command("sweep-report", help="select S2AP's gamma on validation numbers")
    p.add_argument("--models", required=True, nargs="+", help="model.pt files of the sweep")
    p.add_argument("--out", required=True, help="CSV; a markdown report and the per-seed CSV "
                   "(<stem>_seeds.csv) are written beside it")

    p = command("aggregate", help="leaderboard tables and plots from result JSONs")
    p.add_argument("--runs", required=True, nargs="+",
                   help="a folder of result JSONs, or the result files themselves")
    p.add_argument("--out", required=True)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--reference", default=None, help="published reference CSV to show beside")
    p.add_argument("--exclude-invalid", action="store_true",
                   help="list result files that break a rule as excluded instead of stopping")
    p.add_argument("--published", default=None,
                   help="the published run's leaderboard.csv (results/published/<preset>/): "
                        "adds the 'published' columns, cell by cell")
    p.add_argument("--purpose", default="benchmark", choices=PURPOSES,
                   help="the preset's purpose; 'plumbing' heads the leaderboard with a note that "
                        "its numbers mean nothing")

    p = command("table", help="one paper table or figure from result files (benchmark/results/tables.py)")
    p.add_argument("--spec", type=_json_arg, required=True,
                   help="the table, its rows and columns (benchmark.results.tables.spec), JSON or @file")
    p.add_argument("--runs", required=True, nargs="+", help="the result files the table reads")
    p.add_argument("--out", required=True, help="folder for <table>.md and .csv (.png for figures)")
    p.add_argument("--reference", default=None,
                   help="reference CSV (default: the AP benchmark shipped with the package)")

    p = command("import-dense", help="check and convert a dense model trained elsewhere")
    p.add_argument("--entry", type=_json_arg, required=True,
                   help="the preset's external_dense entry (path resolved), JSON or @file")
    p.add_argument("--dataset", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--model", type=_json_arg, default={}, help="the preset's model section")
    p.add_argument("--out", required=True)

    p = command("estimate", help="jobs and compute time of a preset before it runs")
    p.add_argument("--configfile", required=True, nargs="+", metavar="PRESET",
                   help="preset file(s); later ones overlay earlier ones, as for snakemake")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="the device to estimate for (default: the preset's; auto counts as cuda)")
    p.add_argument("--target", action="append", default=[],
                   help="a Snakemake target (all, table_main, ...; repeatable); default all")
    p.add_argument("--calibration", default=None,
                   help="calibration file (default: benchmark/calibration/calibration.json)")
    p.add_argument("--cores", type=int, default=None,
                   help="CPU cores the run gets, for the wall time (default: this machine's)")
    p.add_argument("--jobs-per-gpu", type=int, default=None, metavar="K",
                   help="price K jobs per card (default: the preset's runtime.jobs_per_gpu)")

    p = command("methods", help="list registered methods")
    _method_file_arg(p)

    # publishing: site, export robustbench|models|verify (benchmark/publishing/cli.py)

    add_publish_commands(sub)
    return parser


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class _Formatter(logging.Formatter):
    """``12:03:04 message`` for progress, with the level named when it is not INFO."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno != logging.INFO:
            stamp, _, rest = text.partition(" ")
            text = f"{stamp} {record.levelname}: {rest}"
        return text


def configure_logging(debug: bool = False) -> None:
    """Library code logs; the command line shows INFO and above on stderr (a job's log file)."""
    root = logging.getLogger()
    if not any(getattr(h, "_apbench", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._apbench = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("benchmark", "methods"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the aggregate command records its own arguments (benchmark.results.leaderboard_stamp)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    configure_logging(debug)
    raise_on_stop_signals()
    try:
        return run(args)
    except EXPECTED_ERRORS as exc:
        code = exc.exit_code if isinstance(exc, UserError) else 2
        return _report(args, exc, f"error: {exc}", code, debug, hint=True)
    except Interrupted as exc:
        return _report(args, exc, str(exc), exc.exit_code, debug)
    except KeyboardInterrupt as exc:  # a second Ctrl-C, or one before our handler was in place
        return _report(args, exc, "interrupted", 130, debug)


def _report(args: argparse.Namespace, exc: BaseException, message: str, code: int, debug: bool,
            hint: bool = False) -> int:
    sys.stdout.flush()
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    elif hint:
        message += f"\n(rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
    print(f"python -m benchmark {args.command}: {message}", file=sys.stderr, flush=True)
    return code


# the commands that train or attack a model: on a multi-GPU workstation each claims a card of its
# own before CUDA starts (benchmark.runtime.gpu_slots; APBENCH_GPU_SLOTS, set by the workflow)
GPU_COMMANDS = ("pretrain", "prune", "finetune", "evaluate", "autoattack-shard")


def run(args: argparse.Namespace) -> int:
    """The command's work; expected failures propagate as UserError."""

    if args.command in GPU_COMMANDS:

        claim_from_env()

    if args.command in PUBLISH_COMMANDS:
        return run_publish(args)
    if args.command == "methods":

        reg = method_registry(args.method_files)
        for name in reg.names():
            cls = reg.get(name)
            print(f"{name:10s} learns_scores={cls.learns_scores} needs_pretrain={cls.needs_pretrain} "
                  f"needs_finetune={cls.needs_finetune}")
        return 0
    if args.command == "stability":
        from benchmark.training.stages import seed_stability  # deferred: pyautoattack, torch, tqdm

        record = seed_stability(args.a, args.b, args.out)
        print(f"seed stability: flip fraction {record['seed_flip_fraction']:.4f}, "
              f"jaccard {record['seed_jaccard']:.4f}")
        return 0
    if args.command == "sweep-report":
        from benchmark.planning.sweep import sweep_report  # deferred: pandas

        table = sweep_report(args.models, args.out)
        print(table.to_string(index=False))
        return 0
    if args.command == "table":

        try:
            written = write_table(args.spec, args.runs, args.out, reference_csv=args.reference)
        except FileNotFoundError as exc:
            raise MissingFileError(str(exc)) from exc
        print(f"{args.spec['table']}: " + ", ".join(str(p) for p in written))
        return 0
    if args.command == "import-dense":

        import_dense(args.entry, dataset=args.dataset, arch=args.arch, model_cfg=args.model,
                     out=args.out)
        print(f"dense model: {args.out}")
        return 0
    if args.command == "estimate":

        print(estimate_main(args.configfile, device=args.device, targets=args.target or ["all"],
                            calibration=args.calibration, cores=args.cores), end="")
        print(sharing_main(args.configfile, device=args.device, targets=args.target or ["all"],
                           calibration=args.calibration, jobs_per_gpu=args.jobs_per_gpu), end="")
        return 0
    if args.command == "aggregate":
        from benchmark.results.aggregate import aggregate, runs_frame  # deferred: pandas

        runs = args.runs[0] if len(args.runs) == 1 and Path(args.runs[0]).is_dir() else args.runs
        if args.published is not None and not Path(args.published).is_file():
            raise MissingFileError(f"--published {args.published}: no such file")
        try:
            table = aggregate(runs, args.out, reference_csv=args.reference,
                              exclude_invalid=args.exclude_invalid, published_csv=args.published,
                              purpose=args.purpose)
        except FileNotFoundError as exc:
            raise MissingFileError(str(exc)) from exc
        print(f"leaderboard: {len(table)} rows -> {Path(args.out) / 'leaderboard.md'}")
        if table.attrs.get("excluded"):
            print(f"excluded: {len(table.attrs['excluded'])} result file(s) that break a rule "
                  f"-> {Path(args.out) / 'excluded.csv'}")
        if not args.no_plots:
            from benchmark.results.plots import plot_diagnostics, plot_leaderboard  # deferred: pandas

            written = list(plot_leaderboard(table, Path(args.out) / "plots") or [])
            written += list(plot_diagnostics(runs_frame(runs, exclude_invalid=args.exclude_invalid),
                                             Path(args.out) / "plots") or [])
            print(f"plots: {len(written)} files -> {Path(args.out) / 'plots'}")
        # last: the stamp says the tables beside it are complete (Snakemake's output of the rule)
        write_stamp(args.out, argv=args.argv, cwd=os.getcwd(), inputs=result_files(runs))
        return 0

    from benchmark.training import stages  # deferred: pyautoattack, torch, tqdm

    if args.command == "pretrain":
        stages.pretrain(args.config, dataset=args.dataset, arch=args.arch, seed=args.seed,
                        out=args.out, state_dir=args.state_dir)
    elif args.command == "prune":
        stages.prune(args.config, dataset=args.dataset, arch=args.arch, method=args.method,
                     s2ap=args.s2ap, sparsity=args.sparsity, seed=args.seed, dense=args.dense,
                     out=args.out, state_dir=args.state_dir, method_files=args.method_files,
                     search_seed=args.search_seed)
    elif args.command == "finetune":
        stages.finetune(args.config, dataset=args.dataset, arch=args.arch, method=args.method,
                        s2ap=args.s2ap, sparsity=args.sparsity, seed=args.seed, search=args.search,
                        out=args.out, state_dir=args.state_dir, method_files=args.method_files)
    elif args.command == "evaluate":
        record = stages.evaluate(args.config, model_path=args.model, cell=args.cell, out=args.out,
                                 state_dir=args.state_dir, extra_diagnostics=args.extra_diagnostics)
        parts = [f"{k}={v['acc']:.4f}" for k, v in record["metrics"].items() if v]
        print(" ".join(parts + [f"sparsity={record['sparsity']['measured']:.4f}"]))
    elif args.command == "autoattack-shard":
        receipt = stages.autoattack_shard(args.config, model_path=args.model, cell=args.cell,
                                          shard=args.shard, out=args.out, state_dir=args.state_dir)
        print(f"AutoAttack shard {args.shard}: {'done' if receipt['shards'] else 'no images'} "
              f"({receipt['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
