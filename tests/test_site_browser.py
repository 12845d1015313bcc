"""The static leaderboard in a real browser: playwright driving Debian's chromium, from file://.

Marked ``browser`` (deselect with ``-m 'not browser'``). Outside CI a missing playwright or
chromium skips these tests with the reason; in CI (env ``CI`` set, or ``APBENCH_REQUIRE_BROWSER``
set to a non-empty value) it fails them: a CI that cannot run them must not report green. The
browser binary is ``$APBENCH_CHROMIUM``, else ``chromium`` on PATH (scripts/install.sh installs it
when run as root). A screenshot of the page goes to ``$APBENCH_ARTIFACTS`` (default
``build/test-artifacts/``).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest

from benchmark.publishing.site import build_site
from benchmark.results.aggregate import aggregate, read_leaderboard

# a browser start takes seconds: make test-fast leaves these out
pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]




def _required() -> bool:
    def on(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")

    return on("CI") or on("APBENCH_REQUIRE_BROWSER")


def _unavailable(reason: str):
    if _required():
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str | None:
    explicit = os.environ.get("APBENCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        _unavailable("playwright is not installed (pip install -e '.[browser]')")
    exe = _chromium()
    if exe is None:
        _unavailable("chromium not found (apt-get install -y chromium, or set APBENCH_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    runs = root / "results" / "fixture" / "runs"
    fx.write_result(runs, method="dense", sparsity=0, clean=8800, aa=4500)
    # AutoAttack 9.50 % and 10.20 %: text order would put "10.20" first
    fx.write_result(runs, method="hydra", s2ap="off", sparsity=90, aa=950, clean=7000)
    fx.write_result(runs, method="hydra", s2ap="on", sparsity=90, aa=1020, clean=7100)
    fx.write_result(runs, method="harp", s2ap="off", sparsity=95, aa=4000, clean=8000)
    fx.write_result(runs, method="harp", s2ap="on", sparsity=95, aa=4120, clean=8100,
                    warnings=["There are 1 points with zero gradient!"], lowered_by=["square"])
    fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=99, aa=2500, clean=6000)
    fx.write_result(runs, method="random", s2ap="n/a", sparsity=99, no_autoattack=True, clean=1000,
                    preset="noaa")
    # another preset (AutoAttack on 100 images): its own leaderboard and table
    fx.write_result(runs, method="hydra", s2ap="off", sparsity=99, aa_n=100, aa=20, clean=5000,
                    preset="subset")
    out = root / "results" / "fixture" / "site"
    build_site(runs, out)
    # each preset's leaderboard, as the site shows them
    boards = []
    for preset in ("fixture", "noaa", "subset"):
        files = [f for f in runs.rglob("*.json") if json.loads(f.read_text())["cell"]["preset"] == preset]
        aggregate(files, root / "agg" / preset)
        boards.append(read_leaderboard(root / "agg" / preset / "leaderboard.csv"))
    return {"out": out, "index": out / "index.html", "runs": runs,
            "csv": pd.concat(boards, ignore_index=True)}


@pytest.fixture
def page(browser, site):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors = []
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} ({r.failure})"))
    pg.goto(site["index"].as_uri())
    pg.errors = errors
    yield pg
    context.close()


def visible_rows(pg, table: str | None = None) -> list[dict]:
    return pg.evaluate("""(sel) => Array.from(document.querySelectorAll(sel + ' tbody tr'))
        .filter(tr => !tr.hidden)
        .map(tr => ({id: tr.dataset.id, method: tr.dataset.method, s2ap: tr.dataset.s2ap,
                     sparsity: tr.dataset.sparsity,
                     cells: Array.from(tr.cells).map(td => td.textContent.trim())}))""",
                       table or "table.lb")


def column_values(pg, table: str, col: int) -> list[str]:
    return [r["cells"][col] for r in visible_rows(pg, table)]


def as_number(text: str) -> float | None:
    head = text.split()[0] if text.split() else ""
    return None if head in ("—", "") else float(head)


def test_sorting_is_numeric_and_missing_sorts_last(page):
    table = "#table-0"
    heads = page.locator(f"{table} thead th")
    aa_col = 5
    heads.nth(aa_col).click()
    values = [as_number(v) for v in column_values(page, table, aa_col)]
    numbers = [v for v in values if v is not None]
    assert numbers == sorted(numbers) and 9.5 in numbers and 10.2 in numbers
    assert numbers.index(9.5) < numbers.index(10.2)
    assert heads.nth(aa_col).get_attribute("aria-sort") == "ascending"
    heads.nth(aa_col).click()
    numbers = [as_number(v) for v in column_values(page, table, aa_col)]
    assert numbers == sorted(numbers, reverse=True)
    delta_col = 6  # "—" except on the S2AP rows: it sorts last in both directions
    for direction in ("ascending", "descending"):
        heads.nth(delta_col).click()
        assert heads.nth(delta_col).get_attribute("aria-sort") == direction
        values = [as_number(v) for v in column_values(page, table, delta_col)]
        k = sum(v is not None for v in values)
        assert k == 2 and all(v is None for v in values[k:])
        assert values[:k] == sorted(values[:k], reverse=direction == "descending")
    heads.nth(3).click()  # sparsity: 0, 90, 95, 99 as numbers
    sparsities = [float(v) for v in column_values(page, table, 3)]
    assert sparsities == sorted(sparsities)
    heads.nth(0).click()  # text column: alphabetical
    methods = column_values(page, table, 0)
    assert methods == sorted(methods)
    assert page.errors == []


def test_filters_and_search_reduce_the_rows(page, site):
    total = len(visible_rows(page))
    assert total == len(site["csv"]) == 8
    page.select_option("#filter-method", "hydra")
    rows = visible_rows(page)
    assert 0 < len(rows) < total and {r["method"] for r in rows} == {"hydra"}
    page.select_option("#filter-s2ap", "on")
    rows = visible_rows(page)
    assert [(r["method"], r["s2ap"]) for r in rows] == [("hydra", "on")]
    assert page.locator("#count").text_content().startswith("1 of 8")
    page.select_option("#filter-method", "")
    page.select_option("#filter-s2ap", "")
    page.fill("#search", "lowered")  # flags are searchable by name
    assert [r["method"] for r in visible_rows(page)] == ["harp"]
    page.fill("#search", "")
    page.check("#full-aa")
    rows = visible_rows(page)
    assert len(rows) < total and all(r["sparsity"] != "99" or r["method"] == "lwm" for r in rows)
    # the tables without full standard AutoAttack have no row left and say so
    assert page.locator("#board-1 .empty").is_visible() and page.locator("#board-2 .empty").is_visible()
    page.uncheck("#full-aa")
    assert len(visible_rows(page)) == total
    assert page.errors == []


def _download(page, button: str) -> str:
    with page.expect_download() as info:
        page.click(button)
    return Path(info.value.path()).read_text()


def test_downloaded_csv_and_json_equal_the_visible_rows(page, site):
    page.select_option("#filter-sparsity", "90")
    page.locator("#table-0 thead th").nth(4).click()  # sort by clean accuracy
    shown = visible_rows(page)
    assert len(shown) == 2
    rows = list(csv.DictReader(io.StringIO(_download(page, "#download-csv"))))
    assert [r["entry"] for r in rows] == [r["id"] for r in shown]
    ref = site["csv"]
    for row in rows:
        match = ref[(ref["method"] == row["method"]) & (ref["s2ap"] == row["s2ap"])
                    & (ref["sparsity"] == float(row["sparsity"]))]
        assert len(match) == 1
        for col in ("clean", "autoattack", "autoattack_lo", "autoattack_hi", "sparsity_measured"):
            assert float(row[col]) == pytest.approx(float(match.iloc[0][col])), col
        assert row["config_hash"] == match.iloc[0]["config_hash"]
    as_json = json.loads(_download(page, "#download-json"))
    assert [r["entry"] for r in as_json] == [r["id"] for r in shown]
    assert page.errors == []


def test_entry_links_resolve(page, site):
    links = page.eval_on_selector_all("a.entry-link", "els => els.map(a => a.href)")
    assert len(links) == 8
    for href in links:
        page.goto(href)
        assert page.locator("h1").count() == 1
        result_links = page.eval_on_selector_all("a.result-link", "els => els.map(a => a.href)")
        assert result_links
        for target in result_links:
            assert target.startswith("file://")
            assert Path(target[len("file://"):]).is_file(), target
        page.click("text=← leaderboard")
        page.wait_for_load_state("load")
        assert page.url == site["index"].as_uri()
    assert page.errors == []


def test_no_console_errors_and_a_screenshot(page):
    page.hover("#table-0 .flag >> nth=0")
    artifacts = Path(os.environ.get("APBENCH_ARTIFACTS") or REPO / "build" / "test-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "site-index.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.errors == []


def test_plots_render_and_name_each_row(page):
    """The inline matplotlib SVG is drawn (markers through their href, text as text), and a
    script finds each table row's plot artists by the row's data-id (what filters will use)."""
    found = page.evaluate("""() => Array.from(document.querySelectorAll('section.board')).map(sec => {
        const rows = Array.from(sec.querySelectorAll('tbody tr'))
            .filter(tr => tr.querySelector('[data-col=autoattack] .v').textContent.trim() !== '—');
        return {
          svgs: Array.from(sec.querySelectorAll('svg.plot')).map(s => ({
            ns: s.namespaceURI, w: s.getBoundingClientRect().width,
            texts: Array.from(s.querySelectorAll('text')).map(t => t.textContent)})),
          rows: rows.map(tr => {
            const marks = sec.querySelectorAll('svg.plot [data-row="' + CSS.escape(tr.dataset.id) + '"]');
            const point = sec.querySelector('svg.plot .point[data-row="' + CSS.escape(tr.dataset.id) + '"]');
            const box = point ? point.getBBox() : null;
            return {id: tr.dataset.id, marks: marks.length, drawn: box ? box.width * box.height : 0};
          })};
    })""")
    assert any(sec["svgs"] for sec in found) and sum(len(sec["rows"]) for sec in found) >= 6
    for sec in found:
        for svg in sec["svgs"]:
            assert svg["ns"].endswith("/2000/svg") and svg["w"] > 200
            assert any("accuracy (%)" in t or "percentage points" in t for t in svg["texts"]), svg["texts"]
        for row in sec["rows"]:
            assert row["marks"] > 0 and row["drawn"] > 0, row
@pytest.fixture(scope="module")
def ranked_site(tmp_path_factory):
    """A site whose entries have exported models (the ranked board's load snippets)."""
    import torch

    from benchmark.core.datasets import get_info
    from benchmark.core.model_files import export_models
    from benchmark.core.models import build_model

    root = tmp_path_factory.mktemp("ranked")
    runs = root / "runs"
    cells = [dict(method="hydra", s2ap="off", sparsity=90, aa=3000, clean=7000),
             dict(method="hydra", s2ap="on", sparsity=90, aa=3200, clean=7100),
             dict(method="random", s2ap="n/a", sparsity=90, aa=2000, clean=7500)]
    for i, cell in enumerate(cells):
        torch.manual_seed(i)
        net = build_model("small_cnn", get_info("fashion-mnist"), width=1.0)
        model = root / "work" / f"model{i}.pt"
        model.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict(), "masks": None, "meta": json.dumps({})}, model)
        fx.write_result(runs, dataset="fashion-mnist", arch="small_cnn", eps=0.1, preset="rb",
                        model_file=model, **cell)
    export_models(runs, root / "export")
    build_site(runs, root / "site", models_manifest=[root / "export" / "manifest.json"])
    return root / "site"


def test_the_ranked_board_ranks_names_papers_and_shows_the_load_snippet(browser, site, ranked_site):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # the index links to it
    pg.goto(site["index"].as_uri())
    pg.click("#ranked-link")
    assert pg.url.endswith("/ranked.html")
    assert pg.locator("section.ranked").count() >= 4  # per table and sparsity
    pg.goto((ranked_site / "ranked.html").as_uri())
    rows = pg.evaluate("""() => Array.from(document.querySelectorAll('#ranked-table-0 tbody tr'))
        .map(tr => ({rank: tr.cells[0].textContent.trim(), method: tr.dataset.method,
                     s2ap: tr.dataset.s2ap, aa: parseFloat(tr.cells[4].textContent),
                     papers: Array.from(tr.querySelectorAll('a.paper-link')).map(a => a.href)}))""")
    assert [(r["rank"], r["method"], r["s2ap"]) for r in rows] == [
        ("1", "hydra", "on"), ("2", "hydra", "off"), ("3", "random", "n/a")]
    assert [r["aa"] for r in rows] == sorted((r["aa"] for r in rows), reverse=True)
    assert len(rows[0]["papers"]) == 2 and "arxiv.org" in rows[0]["papers"][0]
    snippet = pg.locator("#ranked-table-0 tbody tr").first.locator("pre.snippet")
    assert not snippet.is_visible()
    pg.locator("#ranked-table-0 tbody tr").first.locator("details.load summary").click()
    assert snippet.is_visible()
    text = snippet.inner_text()
    assert "load_from_manifest(" in text and "fashion-mnist/small_cnn/hydra/on/sp90/seed0" in text
    assert errors == []
    context.close()


def test_the_plots_follow_the_filters(page):
    def shown_points():
        return page.evaluate("""() => Array.from(document.querySelectorAll('#board-0 svg [data-row]'))
            .filter(el => getComputedStyle(el).display !== 'none').map(el => el.dataset.row)""")

    def shown_rows():
        return {r["id"] for r in visible_rows(page, "#table-0")}

    everything = shown_points()
    assert everything and set(everything) == shown_rows()
    page.select_option("#filter-method", "hydra")
    points = shown_points()
    assert points and set(points) == shown_rows() and all("hydra" in p for p in points)
    assert len(points) < len(everything)
    # a line through a hidden point goes with it
    page.select_option("#filter-method", "")
    page.select_option("#filter-sparsity", "90")
    assert set(shown_points()) == shown_rows()
    hidden_lines = page.evaluate("""() => Array.from(document.querySelectorAll('#board-0 svg [data-rows]'))
        .filter(el => getComputedStyle(el).display === 'none').length""")
    total_lines = page.locator("#board-0 svg [data-rows]").count()
    assert total_lines == 0 or hidden_lines >= 1
    page.select_option("#filter-sparsity", "")
    assert sorted(shown_points()) == sorted(everything)
    assert page.errors == []
