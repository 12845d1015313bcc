"""The publishing commands of the CLI (registered by benchmark.cli):

  python -m benchmark site --runs results/quick/runs --out results/quick/site
        [--reference CSV] [--models results/quick/export/models/manifest.json]
        [--logs work/quick/logs] [--robustbench results/quick/export/robustbench] [--method-file F]
  python -m benchmark export robustbench --runs results/quick/runs --out results/quick/export/robustbench
        [--reference CSV] [--method-file F]
  python -m benchmark export models --runs results/quick/runs --out results/quick/export/models
        [--work work/quick]
  python -m benchmark export verify --manifest results/quick/export/models/manifest.json
  python -m benchmark publish --preset quick      (results/quick -> results/published/quick)
  python -m benchmark submit submissions/NAME [--preset presets/quick.yaml] [--out FILE]
  python -m benchmark make-submission --manifest M --model KEY [--out submissions/NAME] [--name T]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.core.model_files import export_models, verify_manifest
from benchmark.publishing.export_robustbench import export_robustbench
from benchmark.publishing.make_submission import make_submission
from benchmark.publishing.publish import archive_published, check_run, publish
from benchmark.publishing.submission import submit

COMMANDS = ("site", "export", "publish", "submit", "make-submission")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("site", help="static web leaderboard (HTML, no network) from result JSONs")
    p.add_argument("--runs", required=True, nargs="+", help="result files or folders of them")
    p.add_argument("--out", required=True, help="site folder (replaced as a whole)")
    p.add_argument("--reference", default=None, help="published reference CSV (reference vs ours plot)")
    p.add_argument("--models", action="append", default=None,
                   help="model manifest.json (links and sha256 of model files); once per preset")
    p.add_argument("--logs", default=None,
                   help="logs folder of the run (work/<preset>/logs); '{preset}' stands for each result's preset")
    p.add_argument("--robustbench", default=None,
                   help="folder written by 'export robustbench'; '{preset}' as for --logs")
    p.add_argument("--method-file", action="append", default=[], help="extra method file")
    p.add_argument("--title", default=None)
    p.add_argument("--exclude-invalid", action="store_true",
                   help="list result files that break a rule as excluded (on the page) instead of stopping")
    p.add_argument("--published", default=None,
                   help="published leaderboard.csv to compare with; '{preset}' as for --logs")

    p = sub.add_parser("export", help="RobustBench entries, model files with checksums")
    what = p.add_subparsers(dest="export_kind", required=True)
    q = what.add_parser("robustbench", help="RobustBench model-info JSONs (<out>/<dataset>/Linf/<key>.json)")
    q.add_argument("--runs", required=True, nargs="+")
    q.add_argument("--out", required=True)
    q.add_argument("--reference", default=None, help="published reference CSV ('reported' field)")
    q.add_argument("--method-file", action="append", default=[], help="extra method file")
    q = what.add_parser("models", help="safetensors + state_dict per result, and manifest.json")
    q.add_argument("--runs", required=True, nargs="+")
    q.add_argument("--out", required=True)
    q.add_argument("--work", default=None, help="the run's work folder (default work/<preset>)")
    q = what.add_parser("verify", help="check every file of a model manifest (size, sha256)")
    q.add_argument("--manifest", required=True)

    p = sub.add_parser("publish", help="copy a finished, checked run to results/published/<preset>/")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", help="preset name (presets/<name>.yaml, results/<name>/)")
    which.add_argument("--archive", metavar="PRESET",
                       help="mark results/published/PRESET as archived (made at its revision, not "
                            "republished after its code changed): shown apart, under a banner")
    p.add_argument("--reason", default="Too long to recompute at every change of its code.",
                   help="with --archive: why it is archived rather than republished")
    p.add_argument("--root", default=".", help="the repository (default: the current folder)")
    p.add_argument("--check-only", action="store_true", help="run the checks, publish nothing")
    p.add_argument("--reattack-batches", type=int, default=None, metavar="N",
                   help="PGD batches of each result attacked again with its saved model, whose "
                        "per-image results must be the recorded ones (default 1; 0 skips)")

    p = sub.add_parser("submit", help="evaluate an external submission (submissions/<name>/) "
                                      "with a preset's protocol")
    p.add_argument("folder", help="the submission folder (submission.yaml and the model file)")
    p.add_argument("--preset", default=None,
                   help="the preset file (default: presets/<preset named in submission.yaml>.yaml)")
    p.add_argument("--out", default=None,
                   help="result JSON (default results/<preset>/submissions/<name>.json)")
    p.add_argument("--state-dir", default=None, help="AutoAttack resume files")

    p = sub.add_parser("make-submission", help="a submission folder from one of our exported "
                                               "models (then: python -m benchmark submit FOLDER)")
    p.add_argument("--manifest", required=True, help="model manifest.json (export models, or a "
                                                     "published preset's export/models/)")
    p.add_argument("--model", required=True, help="model key, e.g. fashion-mnist/small_cnn/hydra/"
                                                  "on/sp90/seed0 (or an entry id with one model)")
    p.add_argument("--out", default=None, help="the folder (default submissions/<method>-<s2ap>-"
                                               "sp<sparsity>-seed<seed>); its name is the entry's id")
    p.add_argument("--name", default=None, help="the entry's name on its row (default: the folder's)")
    p.add_argument("--method-file", action="append", default=[], help="method file (its paper)")


def run(args: argparse.Namespace) -> int:
    if args.command == "site":
        from benchmark.publishing.site import build_site  # deferred: pandas

        index = build_site(args.runs, args.out, reference_csv=args.reference,
                           models_manifest=args.models, logs_dir=args.logs,
                           robustbench_dir=args.robustbench, method_files=args.method_file,
                           title=args.title, exclude_invalid=args.exclude_invalid,
                           published_csv=args.published)
        print(f"site: {index}")
        return 0
    if args.command == "publish":

        if args.archive:
            rec = archive_published(args.archive, reason=args.reason, root=args.root)
            print(f"archived: results/published/{args.archive} (made at revision "
                  f"{str(rec['revision'])[:12]}, {rec['stale_results']} stale result(s)); commit "
                  f"results/published/{args.archive} (archived.json, its bannered tables and site) and "
                  "results/published/site")
            return 0
        reattack = {} if args.reattack_batches is None else {"reattack_batches": args.reattack_batches}
        if args.check_only:
            chk = check_run(args.preset, root=args.root, **reattack)
            if chk.problems:
                raise chk.error()
            print(f"results/{args.preset}: every check passed")
            return 0
        folder = publish(args.preset, root=args.root, **reattack)
        print(f"published: {folder} (and {Path(args.root) / 'results' / 'published' / 'site'}); "
              f"commit it: git add {folder} {Path(args.root) / 'results' / 'published' / 'site'}")
        return 0
    if args.command == "make-submission":

        folder = make_submission(args.manifest, args.model, out=args.out, name=args.name,
                                 method_files=args.method_file)
        print(f"submission folder: {folder} (evaluate it: python -m benchmark submit {folder})")
        return 0
    if args.command == "submit":

        record = submit(args.folder, preset_file=args.preset, out=args.out, state_dir=args.state_dir)
        sub = record["submission"]
        m = sub["measured"]
        aa = "—" if m["autoattack"] is None else f"{m['autoattack']:.2f}"
        print(f"submission {sub['name']}: sparsity {m['sparsity']:.2f} % (claimed "
              f"{sub['claims']['sparsity']:g}), clean {m['clean']:.2f} %, AutoAttack {aa} %"
              + (f"; claims outside our interval: {', '.join(sub['outside'])}" if sub["outside"]
                 else "; every claim confirmed"))
        return 0
    if args.export_kind == "robustbench":

        summary = export_robustbench(args.runs, args.out, method_files=args.method_file,
                                     reference_csv=args.reference)
        for _, entry in summary.written:
            print(f"exported {entry}")
        for path, reason in summary.skipped:
            print(f"not exported {path}: {reason}")
        print(f"robustbench: {len(summary.written)} entries, {len(summary.skipped)} not exported -> {args.out}")
        return 0
    if args.export_kind == "models":

        manifest = export_models(args.runs, args.out, work_dir=args.work)
        print(f"models: {len(manifest['models'])} -> {Path(args.out) / 'manifest.json'}")
        return 0
    if args.export_kind == "verify":

        problems = verify_manifest(args.manifest)
        for line in problems:
            print(line)
        print(f"{args.manifest}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    raise AssertionError(args)
