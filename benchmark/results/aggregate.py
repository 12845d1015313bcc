"""Leaderboard tables from result JSONs (docs/design.md, "Result JSON").

``aggregate(runs_dir, out_dir, reference_csv=None)`` reads every ``*.json`` under runs_dir and
writes ``leaderboard.csv`` and ``leaderboard.md`` (and ``s2ap_paired.csv`` when the S2AP table
exists, ``excluded.csv`` when files were excluded) atomically into out_dir. Torch-free, so the
aggregation job starts in a second.

Nothing on disk is believed unchecked. Every file goes through ``benchmark.core.result_file.read_result``
(the schema, then counts against flags, per-image implications, the eps of every attack, the
protocol against the preset, the sparsity counts), and the results of one dataset's table must
share eps, image counts and images. A file that breaks a rule stops the aggregation with its path
and the rule, before anything is written (the previous leaderboard stays in place); with
``exclude_invalid=True`` (CLI ``--exclude-invalid``) it is left out and listed as excluded in the
leaderboard instead. No file is skipped silently.

Rows: per (dataset, arch) the dense model first, then one row per (method, s2ap, nominal sparsity)
and configuration hash (config without seed). Seeds of one row are pooled:

- accuracies in %, mean over seeds, with the std across seeds (NaN in the CSV, "—" in the
  markdown for a single seed);
- a Wilson 95 % interval on the counts pooled over seeds (clean and AutoAttack);
- pooling is refused (ValueError) when the seeds differ in eps, AutoAttack version or attack set,
  the number of images, or the batching of their attacks (batch sizes chosen from free memory
  differ between machines, and AutoAttack's random draws follow its batches): their numbers
  measure different things.

Sparsity: ``sparsity`` is the nominal value of the cell (percent, sp90), ``sparsity_measured`` the
zero weights of the evaluated model, ``sparsity_mask`` the mask count, both in percent.

Flags of a row: AutoAttack warnings, attacks after APGD that still broke images, a non-standard
attack set, images robust to AutoAttack but broken by PGD (legitimate, counted in
``aa_robust_pgd_broken``), a result made from a dirty tree (``dirty``) or by stage code other than
the current one (``stale``), an external submission (``submission``) and its claims our
measurement does not confirm. ``benchmark.results.flags`` holds their letters and legend.

``published_csv`` (CLI ``--published``): the published run's leaderboard
(``results/published/<preset>/leaderboard.csv``); each row gets the ``published_*`` columns of
``benchmark.results.published`` (the published value, this run minus it, and whether it lies inside this
run's interval).

The markdown: a header naming the revision(s) that produced the results and whether the tree was
dirty, then per (dataset, arch) the compact table (method, S2AP, sparsity, clean, AutoAttack with
its interval, Δ vs Orig., Published AA when there is a published run, flags as letters) with the
legend of the letters it uses; every other column is in the CSV. No timestamp: the same inputs
give the same bytes, which ``python -m benchmark publish`` checks.

Failed runs are shown but are not data points. A result is ``degenerate`` when its final clean
accuracy, or (for a learned mask only) its mask's clean accuracy on the validation slice right
after the search, is at most ``DEGENERATE_MARGIN`` (2 points) above the share of the most frequent
class in that set (the result records both shares): such a model learned nothing. Fixed-rule masks
(magnitude, LAMP, random) are judged after finetuning only. Rows count them (``degenerate:K/N``);
a HARP search that ended over budget and was projected onto it is flagged ``projected:K/N``; an S2AP
search whose score step flipped no mask entry in more than half of its post-warm-up steps is
flagged ``s2ap-inactive:K/N`` (it did nothing there: under the straight-through estimator a step
that flips nothing is the plain method's step).

Below it, per S2AP row, the share of kept weights the score step's perturbation flipped in each
search epoch (the evidence that the step acted; from the results' diagnostics).

The S2AP table (paper layout: Orig., S2AP, delta) appears when some cell has both s2ap 'off' and
'on' results, for AutoAttack and for PGD. Degenerate seeds are left out of it (and listed). Orig.
and S2AP are the means over the remaining seeds, delta their difference. Two statistics stand
beside it, for two different questions:

- the seed-level t-interval (95 %) of the mean of the per-seed differences (seed s of 'on' minus
  seed s of 'off'), "—" below 3 paired seeds: whether S2AP changes the METHOD's accuracy, the
  variation between searches and dense models included. This is the one to read for the effect;
- an exact McNemar test on the per-image flags of the seeds both sides share (concatenated):
  whether these particular models differ on these test images. With 10,000 images it calls
  differences of a point "significant" that the next seed reverses; it measures test-image noise
  only.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from benchmark.core.io import atomic_write_text
from benchmark.results import flags as flag_legend
from benchmark.results.leaderboard_file import read_leaderboard
from benchmark.results.loading import METRICS, AggregationError, load_checked, load_runs  # noqa: F401 - the aggregation's API
from benchmark.results.markdown import excluded_md, flips_md, header_md, leaderboard_md, pairs_md
from benchmark.results.pooling import group_key, pool_seeds, row_sort_key, s2ap_pairs
from benchmark.results.published import add_published, load_published
from benchmark.results.reference import add_reference, load_reference
from benchmark.results.staleness import CurrentCode

# ---------------------------------------------------------------- entry point
# The leaderboard's first words for a preset whose numbers are not results (the preset's
# ``purpose``), so that nobody quotes them.
PURPOSE_NOTES = {
    "plumbing": ("> **Plumbing only.** Preset `{preset}` checks that every stage runs end to end "
                 "(a few hundred images, one epoch per stage, an AutoAttack subset on a handful "
                 "of images): its numbers mean nothing and must not be compared or quoted. For a "
                 "meaningful result in minutes run `make run PRESET=standard`; for robustness "
                 "against sparsity, `make quick`."),
}


def build_tables(runs_dir: str | Path | list, reference_csv: str | Path | None = None, *,
                 exclude_invalid: bool = False, published_csv: str | Path | None = None,
                 purpose: str = "benchmark"
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(leaderboard, S2AP paired table or None, markdown text) without writing anything.

    The files excluded under ``exclude_invalid`` are in ``leaderboard.attrs["excluded"]``
    ({file, rule, detail} each) and in the markdown's last section. ``published_csv``: the
    published run's leaderboard, compared cell by cell (benchmark.results.published)."""
    records, excluded = load_checked(runs_dir, exclude_invalid=exclude_invalid)
    current = CurrentCode()
    for r in records:
        # the row's own scope: an edit to one method's file marks that method's rows only
        r["stale"] = r["stage_code"] != current.of_scope(r["code_scope"])
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[group_key(r)].append(r)
    rows = sorted((pool_seeds(k, v) for k, v in groups.items()), key=row_sort_key)
    ref_note = None
    if reference_csv is not None:
        ref, ref_note = load_reference(reference_csv)
        add_reference(rows, ref)
    published_note = None
    if published_csv is not None:
        published = load_published(published_csv)
        add_published(rows, published)
        revs = sorted({str(v)[:12] for v in published.get("revision", []) if isinstance(v, str) and v})
        published_note = f"{published_csv}" + (f", revision {', '.join(revs)}" if revs else "")
    pairs = s2ap_pairs(rows)
    df = pd.DataFrame([{k: v for k, v in row.items() if k != "_runs"} for row in rows])
    if df.empty:
        df = pd.DataFrame(columns=["dataset", "arch", "method", "s2ap", "sparsity", "n_seeds"])
    else:
        diag_cols = sorted(c for c in df.columns if c.startswith("diag."))
        df = df[[c for c in df.columns if not c.startswith("diag.")] + diag_cols]
    df.attrs["excluded"] = excluded

    folder = Path(runs_dir) if not isinstance(runs_dir, (list, tuple)) else None
    preset = next((r["preset"] for r in records if r.get("preset")), None) or (
        "" if folder is None else folder.parent.name if folder.name == "runs" else folder.name)
    md = [header_md(df, preset, records, published_note) if not df.empty
          else f"# Leaderboard: {preset}\n\nNo results.\n"]
    if purpose in PURPOSE_NOTES:  # right under the title, before any number
        title, _, rest = md[0].partition("\n")
        md[0] = f"{title}\n\n{PURPOSE_NOTES[purpose].format(preset=preset)}\n{rest}"
    if not df.empty:
        table, used = leaderboard_md(df, reference_csv is not None, pairs, published_note is not None)
        md += ["## Leaderboard", "", table]
        if used:
            md += ["Flags (the `flag` column of leaderboard.csv has each one's detail):", "",
                   flag_legend.legend_markdown(used), ""]
    if ref_note is not None:
        md += [f"Ref. columns: published numbers ({ref_note}), shown for the original method "
               "only where dataset, architecture, method, structure, sparsity, eps and the number "
               "of AutoAttack images all match (benchmark/results/reference.py); — where nothing does.", ""]
    if pairs is not None:
        md += ["## S2AP: original vs S2AP (AutoAttack and PGD accuracy)", "",
               "Δ = S2AP − original in percentage points, over the seeds that are not degenerate "
               "(left-out seeds are listed). Which number to trust: the 95% CI over seeds (a "
               "Student-t interval of the mean of the per-seed Δs, — below 3 paired seeds) is the "
               "evidence for or against a METHOD effect, because it includes how much a result "
               "moves from one seed (dense model, search) to the next. The McNemar p (exact test "
               "on the per-image flags of the paired seeds) only says whether these particular "
               "models differ on these test images; with thousands of images it is tiny for "
               "differences the next seed reverses, so do not read it as the effect of S2AP. "
               "n/a: the method learns no scores, so S2AP does not apply.", "",
               pairs_md(pairs), ""]
    flips = None if df.empty else flips_md(df)
    if flips is not None:
        md += ["## S2AP's score step: mask flips per search epoch", "",
               "Share of the kept weights whose mask entry the score perturbation z flips, "
               "|M(s+z) xor M(s)| / (2 · kept), mean over the epoch's steps, then over seeds "
               "(— in the warm-up, where the step does not run). Under the straight-through "
               "estimator a step that flips nothing is the plain method's step: a run with more "
               "than half of its steps without a flip is flagged S2AP inactive. Per seed: the "
               "`diag.s2ap_*` columns of the result files.", "", flips, ""]
    if excluded:
        md += excluded_md(excluded)
    return df, pairs, "\n".join(md)


def aggregate(runs_dir: str | Path | list, out_dir: str | Path,
              reference_csv: str | Path | None = None, *,
              exclude_invalid: bool = False, published_csv: str | Path | None = None,
              purpose: str = "benchmark") -> pd.DataFrame:
    """Reads the result JSONs under runs_dir, writes leaderboard.csv and leaderboard.md (and
    s2ap_paired.csv when S2AP pairs exist, excluded.csv when files were excluded) atomically into
    out_dir; returns the leaderboard. Raises AggregationError (a ValueError) rather than pool
    incomparable results or believe a file that breaks a rule; nothing is written then."""
    df, pairs, md = build_tables(runs_dir, reference_csv, exclude_invalid=exclude_invalid,
                                 published_csv=published_csv, purpose=purpose)
    excluded = df.attrs.get("excluded") or []
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "leaderboard.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / "leaderboard.md", md)
    # a table from an earlier aggregation would contradict this leaderboard
    if pairs is not None:
        atomic_write_text(out_dir / "s2ap_paired.csv", pairs.to_csv(index=False))
    else:
        (out_dir / "s2ap_paired.csv").unlink(missing_ok=True)
    if excluded:
        atomic_write_text(out_dir / "excluded.csv", pd.DataFrame(excluded).to_csv(index=False))
    else:
        (out_dir / "excluded.csv").unlink(missing_ok=True)
    return df


def runs_frame(runs_dir: str | Path | list, *, exclude_invalid: bool = False) -> pd.DataFrame:
    """One row per result file (per seed), diagnostics flattened: the input of plot_diagnostics
    when per-seed detail is wanted."""
    rows = []
    for r in load_runs(runs_dir, exclude_invalid=exclude_invalid):
        row = {k: v for k, v in r.items() if k not in ("diagnostics", "code_scope")
               and not k.endswith("_flags")}
        for name in METRICS:
            if r[f"{name}_n"]:
                row[name] = 100.0 * r[f"{name}_correct"] / r[f"{name}_n"]
        row.update(r["diagnostics"])
        rows.append(row)
    return pd.DataFrame(rows)


__all__: Iterable[str] = ("aggregate", "build_tables", "read_leaderboard", "load_runs", "load_checked",
                          "load_reference", "s2ap_pairs", "runs_frame", "AggregationError")

