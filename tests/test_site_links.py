"""The published site is one self-contained folder: built over a copy of the committed published
run (results/published/quick: its result JSONs, model manifest and RobustBench export), as
`benchmark publish` builds it, every link and asset of every page names a file inside site/, and
nothing outside the results tree was copied in."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from benchmark.publishing import site_links
from benchmark.publishing.site import build_site

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "results" / "published" / "quick"


@pytest.fixture
def published_copy(tmp_path):
    if not (PUBLISHED / "runs").is_dir():
        pytest.skip("no published quick run in this checkout")
    root = tmp_path / "results" / "published" / "quick"
    shutil.copytree(PUBLISHED / "runs", root / "runs")
    shutil.copytree(PUBLISHED / "export", root / "export")
    return root


def test_every_link_of_the_published_site_resolves_inside_it(published_copy, tmp_path):
    root = published_copy
    # a file outside the results tree that a page would link to (a log under work/)
    logs = tmp_path / "work" / "quick" / "logs"
    (logs / "evaluate" / "fashion-mnist" / "small_cnn" / "dense" / "n-a" / "sp0").mkdir(parents=True)
    (logs / "evaluate" / "fashion-mnist" / "small_cnn" / "dense" / "n-a" / "sp0" / "seed0.log").write_text("log")
    site = root / "site"
    build_site(root / "runs", site, models_manifest=root / "export" / "models" / "manifest.json",
               robustbench_dir=root / "export" / "robustbench", logs_dir=logs)
    assert site_links.link_problems(site) == []
    files = [p for p in site.rglob("*") if p.is_file()]
    assert not any(p.is_symlink() for p in site.rglob("*"))
    # the result JSONs the entry pages link to were copied in; the log was not (outside results/)
    copied = [p for p in files if site_links.FILES in p.relative_to(site).parts]
    assert any(p.suffix == ".json" for p in copied)
    assert not any(p.suffix == ".log" for p in copied)
    for p in copied:
        rel = p.relative_to(site / site_links.FILES)
        assert (root / rel).read_bytes() == p.read_bytes()  # a copy of the results tree's file


def test_the_checker_finds_links_that_leave_the_site(tmp_path):
    site = tmp_path / "site"
    (site / "entries").mkdir(parents=True)
    (tmp_path / "outside.json").write_text("{}")
    (site / "assets").mkdir()
    (site / "assets" / "style.css").write_text("")
    os.symlink(tmp_path / "outside.json", site / "assets" / "link.json")
    (site / "index.html").write_text('<a href="../outside.json">x</a><link href="assets/style.css">'
                                     '<a href="assets/link.json">l</a><a href="https://example.org">e</a>'
                                     '<img src="entries/missing.png"><a href="#top">t</a>')
    problems = site_links.link_problems(site)
    assert len(problems) == 3, problems
    assert any("../outside.json leaves the site" in p for p in problems)
    assert any("assets/link.json" in p for p in problems)
    assert any("missing.png names no file" in p for p in problems)


def test_bundling_copies_only_from_the_results_tree(tmp_path):
    root = tmp_path / "results" / "p"
    site = root / "site"
    (site / "entries").mkdir(parents=True)
    (root / "runs").mkdir()
    (root / "runs" / "r.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("not for the site")
    (site / "entries" / "e.html").write_text('<a href="../../runs/r.json">r</a>'
                                             '<a href="../../../../secret.txt">s</a>')
    counts = site_links.bundle(site, root)
    assert counts == {"inside": 0, "copied": 1, "unlinked": 1}
    assert (site / "files" / "runs" / "r.json").read_text() == "{}"
    assert not any(p.name == "secret.txt" for p in site.rglob("*"))
    assert site_links.link_problems(site) == []


def test_markdown_cells_carry_no_markup():
    from benchmark.results import md_escape

    md = md_escape.table([{"method": "<img src=x onerror=alert(1)>", "note | pipe": "a | b\nc & d"}])
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "a \\| b c &amp; d" in md and "note \\| pipe" in md
    # one header, one rule, one row: the pipe and the newline did not add cells or lines
    assert len(md.splitlines()) == 3
    assert all(len(re.split(r"(?<!\\)\|", line)) == 4 for line in md.splitlines())
