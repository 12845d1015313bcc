"""The markdown leaderboard: the header names the revision (and dirty state) that produced it, the
main table is the compact one (the wide table is the CSV), flags are letters with their legend;
the aggregation's stamp; the published-run comparison matches only like with like."""
from __future__ import annotations

import json
import math
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest

from benchmark.cli import main as cli_main
from benchmark.results.aggregate import aggregate, build_tables, read_leaderboard
from benchmark.results.leaderboard_stamp import STAMP_NAME, read_stamp
from benchmark.results.published import add_published, match_key

REV_A, REV_B = "a" * 40, "b" * 40


def header(md: str) -> str:
    return md.split("## Leaderboard")[0]


def test_the_header_names_the_revision_of_a_clean_run(tmp_path):
    fx.write_result(tmp_path, method="dense", sparsity=0, revision=REV_A)
    fx.write_result(tmp_path, method="hydra", sparsity=90, revision=REV_A)
    _, _, md = build_tables(tmp_path)
    assert f"Produced at revision `{REV_A}` from a clean tree (2 result files)." in header(md)


def test_the_header_says_when_the_tree_was_dirty_or_the_revisions_differ(tmp_path):
    fx.write_result(tmp_path, method="dense", sparsity=0, revision=REV_A)
    fx.write_result(tmp_path, method="hydra", sparsity=90, revision=REV_A, dirty=True)
    _, _, md = build_tables(tmp_path)
    assert (f"Produced at revision `{REV_A}` with uncommitted changes in 1 of 2 result files "
            "(dirty tree") in header(md)
    fx.write_result(tmp_path, method="lwm", s2ap="n/a", sparsity=90, revision=REV_B)
    _, _, md = build_tables(tmp_path)
    assert f"Produced at revisions `{REV_A}` (2 files), `{REV_B}` (1 files)" in header(md)
    fx.write_result(tmp_path, method="random", s2ap="n/a", sparsity=90, revision="unknown", dirty=None)
    _, _, md = build_tables(tmp_path)
    assert "1 of 4 result files were made outside a git checkout" in header(md)


def test_the_header_counts_results_of_stale_stage_code(tmp_path):
    fx.write_result(tmp_path, method="hydra", sparsity=90, revision=REV_A, stage_code="0" * 16)
    _, _, md = build_tables(tmp_path)
    assert "1 of them were made by stage code other than the current one" in header(md)


def test_the_main_table_is_compact_and_the_csv_is_wide(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="dense", sparsity=0)
    fx.write_result(runs, method="hydra", s2ap="off", sparsity=90, aa=4000)
    fx.write_result(runs, method="hydra", s2ap="on", sparsity=90, aa=4250, pgd_broke=2)
    fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=90, aa=3000)
    df = aggregate(runs, tmp_path / "out")
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    table = md.split("## Leaderboard")[1]
    head = next(line for line in table.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "Method", "S2AP", "Sparsity (%)", "Clean (%)", "AutoAttack (%) [95% CI]", "Δ vs Orig. (pp)",
        "Flags"]
    assert "### cifar10 · resnet18" in table
    on = next(line for line in table.splitlines() if line.startswith("| hydra") and "| on " in line)
    cells = [c.strip() for c in on.strip("|").split("|")]
    row = df[(df["method"] == "hydra") & (df["s2ap"] == "on")].iloc[0]
    assert cells[4] == f"42.50 [{row['autoattack_lo']:.1f}, {row['autoattack_hi']:.1f}]"
    assert cells[5] == "+2.50" and cells[6] == "P"
    lwm = next(line for line in table.splitlines() if line.startswith("| lwm"))
    assert [c.strip() for c in lwm.strip("|").split("|")][5] == "—"
    # the legend lists the letters the table uses, and only those
    assert "- **P** (pgd-broke-aa-robust)" in md and "**D** (dirty-tree)" not in md
    # the wide table is the CSV
    csv = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    for col in ("sparsity_measured", "sparsity_mask", "pgd", "clean_lo", "clean_hi", "n_seeds",
                "aa_robust_pgd_broken", "dirty", "stale", "revision", "flag", "submission"):
        assert col in csv.columns, col
    # the per-dataset tables are compact (the S2AP comparison below them adds PGD on purpose)
    main_tables = table.split("\n## ")[0]
    assert "Measured (%)" not in main_tables and "PGD (%)" not in main_tables


def test_the_aggregate_command_writes_its_stamp_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [fx.write_result(Path("runs"), method="hydra", sparsity=90),
             fx.write_result(Path("runs"), method="lwm", s2ap="n/a", sparsity=90)]
    argv = ["aggregate", "--runs", *map(str, files), "--out", "out", "--no-plots"]
    assert cli_main(argv) == 0
    stamp = read_stamp(tmp_path / "out")
    assert stamp["argv"] == argv and stamp["cwd"] == str(tmp_path.resolve())
    assert stamp["inputs"] == {str(f): fx.results_sha256(f) for f in files}
    assert stamp["outputs"]["leaderboard.csv"] == fx.results_sha256(tmp_path / "out" / "leaderboard.csv")
    # a failed aggregation leaves the old tables and no stamp claiming they are current
    (tmp_path / "out" / STAMP_NAME).unlink()
    record = json.loads(files[0].read_text())
    record["metrics"]["pgd"]["correct"] += 1
    files[0].write_text(json.dumps(record))
    before = (tmp_path / "out" / "leaderboard.csv").read_bytes()
    assert cli_main(argv) == 2
    assert not (tmp_path / "out" / STAMP_NAME).exists()
    assert (tmp_path / "out" / "leaderboard.csv").read_bytes() == before


def test_a_published_value_is_compared_only_under_the_same_protocol(tmp_path):
    pub = tmp_path / "pub"
    fx.write_result(pub / "runs", method="hydra", sparsity=90, aa=4100)
    published = aggregate(pub / "runs", pub)
    base = dict(published.iloc[0])
    rows = []
    for change in ({}, {"eps": 8 / 255}, {"autoattack_n": 1000}, {"structure": "structured"},
                   {"s2ap": "on"}, {"sparsity": 95.0}):
        row = {**base, **change}
        rows.append(row)
    add_published(rows, read_leaderboard(pub / "leaderboard.csv"))
    assert rows[0]["published_autoattack"] == pytest.approx(41.0)
    assert rows[0]["published_autoattack_in_ci"] is True
    assert rows[0]["published_autoattack_diff"] == pytest.approx(0.0)
    for row in rows[1:]:
        assert math.isnan(row["published_autoattack"]), row
        assert match_key(row) != match_key(rows[0])
