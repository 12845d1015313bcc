"""The static leaderboard without a browser: rows, values, escaping, offline-ness, entry pages,
the CLI command and the Snakemake target."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest

from benchmark.cli import main as cli_main
from benchmark.core.io import replace_dir
from benchmark.publishing import site_links
from benchmark.publishing.site import build_site, site_data
from benchmark.publishing.site.generator import inline_json
from benchmark.results.aggregate import AggregationError, aggregate, read_leaderboard

REPO = Path(__file__).resolve().parent.parent




class Page(HTMLParser):
    """Rows of the leaderboard tables (data-* attributes and cell texts), links, scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.links, self.srcs, self.scripts = [], [], [], []
        self._row = self._cell = self._script = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-id" in a:
            self._row = {"attrs": a, "cells": []}
        elif tag == "td" and self._row is not None:
            self._cell = {"attrs": a, "text": ""}
        for key in ("href", "src", "action", "data", "poster"):
            if key in a:
                (self.links if key == "href" else self.srcs).append(a[key])
        if tag == "script":
            self._script = {"attrs": a, "text": ""}

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "script" and self._script is not None:
            self.scripts.append(self._script)
            self._script = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._script is not None:
            self._script["text"] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    return page


def grid(runs: Path) -> list[Path]:
    """One seed per cell: dense, hydra/harp off+on, lwm and random, on CIFAR-10 and ResNet-18."""
    files = [fx.write_result(runs, method="dense", sparsity=0, clean=8800, aa=4500)]
    for i, (method, s2ap) in enumerate([("hydra", "off"), ("hydra", "on"), ("harp", "off"),
                                        ("harp", "on"), ("lwm", "n/a"), ("random", "n/a")]):
        for sp in (90, 99):
            files.append(fx.write_result(runs, method=method, s2ap=s2ap, sparsity=sp,
                                         clean=8000 - 100 * i - sp, aa=4000 - 37 * i - 3 * sp))
    return files


@pytest.fixture
def site(tmp_path):
    runs = tmp_path / "results" / "fixture" / "runs"
    files = grid(runs)
    out = tmp_path / "results" / "fixture" / "site"
    build_site(runs, out)
    return {"runs": runs, "files": files, "out": out, "index": out / "index.html", "tmp": tmp_path}


def test_one_row_per_result_file(site):
    page = parse(site["index"])
    assert len(page.rows) == len(site["files"]) == 13
    ids = [r["attrs"]["data-id"] for r in page.rows]
    assert len(set(ids)) == len(ids)
    # every result file is linked from exactly one entry page, through its copy in the site
    linked = []
    for entry in (site["out"] / "entries").glob("*.html"):
        for href in parse(entry).links:
            target = (entry.parent / href).resolve()
            if target.suffix == ".json" and target.is_file():
                linked.append(target)
    copies = site["out"] / site_links.FILES
    assert sorted(linked) == sorted(copies / f.resolve().relative_to(site["out"].parent.resolve())
                                    for f in site["files"])
    assert all(t.read_bytes() == (site["out"].parent / t.relative_to(copies)).read_bytes() for t in linked)


def test_values_equal_the_leaderboard_csv(site):
    aggregate(site["runs"], site["tmp"] / "agg")
    csv = read_leaderboard(site["tmp"] / "agg" / "leaderboard.csv")
    page = parse(site["index"])
    shown = {r["attrs"]["data-id"]: r for r in page.rows}
    data = json.loads(next(s["text"] for s in page.scripts if s["attrs"].get("id") == "leaderboard-data"))
    inline = {r["id"]: r["values"] for r in data["rows"]}
    assert len(csv) == len(shown) == len(inline)
    for rec in csv.to_dict("records"):
        entry = next(i for i, v in inline.items() if v["method"] == rec["method"] and v["s2ap"] == rec["s2ap"]
                     and v["sparsity"] == rec["sparsity"])
        cells = {c["attrs"].get("data-col"): c for c in shown[entry]["cells"]}
        assert cells["clean"]["text"].strip() == f"{rec['clean']:.2f}"
        assert cells["autoattack"]["text"].split()[0] == f"{rec['autoattack']:.2f}"
        assert cells["autoattack"]["text"].split("[")[1].startswith(f"{rec['autoattack_lo']:.1f}, ")
        assert float(cells["clean"]["attrs"]["data-v"]) == pytest.approx(rec["clean"])
        for col, value in rec.items():  # the download data is the CSV row, column by column
            got = inline[entry][col]
            if isinstance(value, float) and value != value:  # an empty CSV field
                assert got in (None, ""), col
            elif isinstance(value, float):
                assert got == pytest.approx(value), col
            else:
                assert str(got) == str(value), col


def test_tables_never_mix_eps_or_image_counts(tmp_path):
    # three presets, three protocols: each preset is its own leaderboard, each table one protocol
    runs = tmp_path / "runs"
    fx.write_result(runs / "a", method="hydra", sparsity=90, eps=0.031, aa_n=10_000, preset="a")
    fx.write_result(runs / "a", method="lwm", s2ap="n/a", sparsity=90, eps=0.031, aa_n=10_000, preset="a")
    fx.write_result(runs / "b", method="hydra", sparsity=95, eps=8 / 255, aa_n=10_000, aa=3000, preset="b")
    fx.write_result(runs / "c", method="hydra", sparsity=99, eps=0.031, aa_n=1000, aa=300, preset="c")
    data = site_data(runs)
    assert len(data["tables"]) == 3
    for table in data["tables"]:
        keys = {(e["row"]["eps"], e["row"]["autoattack_n"], e["preset"]) for e in table["entries"]}
        assert len(keys) == 1, table["title"]
    titles = [t["title"] for t in data["tables"]]
    assert any("1,000 images" in t for t in titles) and any("ε = 0.031" in t for t in titles)
    assert all(t.split(":")[0] in ("a", "b", "c") for t in titles)  # several presets: named
    # entry pages of different presets never share a file name
    assert len({e["slug"] for e in data["entries"]}) == len(data["entries"]) == 4


def test_one_preset_mixing_eps_is_refused_as_the_aggregation_refuses_it(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", sparsity=90, eps=0.031)
    odd = fx.write_result(runs, method="hydra", sparsity=95, eps=8 / 255)
    with pytest.raises(AggregationError, match=f"{odd}: rule 'table'"):
        build_site(runs, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_a_file_that_breaks_a_rule_stops_the_site_or_is_listed_as_excluded(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", sparsity=90)
    bad = fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=90)
    record = json.loads(bad.read_text())
    record["metrics"]["clean"]["correct"] += 1
    bad.write_text(json.dumps(record))
    with pytest.raises(AggregationError, match=f"{bad}: rule 'acc'"):
        build_site(runs, tmp_path / "site")
    build_site(runs, tmp_path / "site", exclude_invalid=True)
    page = parse(tmp_path / "site" / "index.html")
    assert [r["attrs"]["data-method"] for r in page.rows] == ["hydra"]
    text = (tmp_path / "site" / "index.html").read_text()
    assert "Excluded result files" in text and str(bad) in text and "acc" in text


def test_flags_of_the_leaderboard_with_their_reasons(tmp_path):
    runs = tmp_path / "runs"
    # 3 images robust to AutoAttack that PGD broke
    fx.write_result(runs, method="hydra", sparsity=90, pgd_broke=3, dirty=True)
    fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=90, stage_code="0" * 16)
    fx.write_result(runs, method="random", s2ap="n/a", sparsity=90, dirty=None, revision="unknown")
    data = site_data(runs)
    flags = {e["method"]: {f["code"]: f["reason"] for f in e["flags"]} for e in data["entries"]}
    assert flags["hydra"]["P"] == "3 image(s) robust to AutoAttack were broken by PGD"
    assert "uncommitted changes" in flags["hydra"]["D"]
    assert "0" * 16 in flags["lwm"]["X"] and "D" not in flags["lwm"]
    assert "outside a git checkout" in flags["random"]["U"]
    legend = {code for code, _, _ in data["legend"]}
    assert {"P", "D", "X", "U", "S", "W", "L", "N", "E", "C"} <= legend


def test_published_column_compares_with_the_published_leaderboard(tmp_path):
    pub_runs, runs = tmp_path / "pub" / "runs", tmp_path / "runs"
    fx.write_result(pub_runs, method="hydra", sparsity=90, aa=4100)
    fx.write_result(pub_runs, method="lwm", s2ap="n/a", sparsity=90, aa=3000)
    aggregate(pub_runs, tmp_path / "pub")
    fx.write_result(runs, method="hydra", sparsity=90, aa=4150)   # inside this run's interval
    fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=90, aa=4000)  # far outside
    fx.write_result(runs, method="harp", sparsity=90, aa=4000)    # not published
    build_site(runs, tmp_path / "site", published_csv=tmp_path / "pub" / "leaderboard.csv")
    rows = {r["attrs"]["data-method"]: r for r in parse(tmp_path / "site" / "index.html").rows}
    cells = {m: {c["attrs"].get("data-col"): c["text"].split() for c in r["cells"]} for m, r in rows.items()}
    assert cells["hydra"]["published"] == ["41.00", "(+0.50,", "inside)"]
    assert cells["lwm"]["published"] == ["30.00", "(+10.00,", "outside)"]
    assert cells["harp"]["published"] == ["—"]


def test_names_are_escaped(tmp_path):
    runs = tmp_path / "runs"
    evil = "<script>alert(1)</script>"
    fx.write_result(runs, method="hydra", arch=evil, sparsity=90)
    fx.write_result(runs, method="lwm", s2ap="n/a", arch="</script><img src=x onerror=alert(2)>",
                    sparsity=90, warnings=["<b>bold</b> warning"])
    out = tmp_path / "site"
    build_site(runs, out)
    for page in [out / "index.html", *(out / "entries").glob("*.html")]:
        text = page.read_text()
        assert evil not in text and "<img src=x" not in text and "<b>bold</b>" not in text, page.name
    index = (out / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    # the inline JSON block survives: nothing in it can close the <script> element
    page = parse(out / "index.html")
    block = next(s["text"] for s in page.scripts if s["attrs"].get("id") == "leaderboard-data")
    assert "</" not in block and "<" not in block
    archs = {r["values"]["arch"] for r in json.loads(block)["rows"]}
    assert evil in archs
    # file names of entry pages hold no markup either
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", p.name) for p in (out / "entries").iterdir())


def test_inline_json_cannot_close_its_script_block():
    text = inline_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)


def test_no_external_url_in_the_site(site):
    files = list(site["out"].rglob("*"))
    for path in files:
        if path.suffix not in (".html", ".js", ".css"):
            continue
        text = path.read_text()
        assert "@import" not in text and "url(" not in text, path
        if path.suffix == ".html":
            page = parse(path)
            # the ranked board links each method's paper (a link, never a loaded resource)
            papers = set(re.findall(r'class="paper-link" href="([^"]+)"', text)) \
                if path.name == "ranked.html" else set()
            for ref in page.srcs:
                assert not _EXTERNAL.match(ref), f"{path.name}: {ref}"
            for ref in page.links:
                assert not _EXTERNAL.match(ref) or ref in papers, f"{path.name}: {ref}"
            for script in page.scripts:
                assert not _EXTERNAL.match(script["attrs"].get("src", "")), path
    for path in [site["index"], *(site["out"] / "assets").iterdir()]:
        assert "http:" not in path.read_text() and "https:" not in path.read_text(), path


def test_entry_page_holds_recipe_provenance_links_and_command(tmp_path):
    runs = tmp_path / "results" / "fixture" / "runs"
    path = fx.write_result(runs, method="hydra", s2ap="on", sparsity=90, dirty=True,
                           warnings=["There are 1 points with zero gradient!"],
                           lowered_by=["fab-t"], aa_n=100, aa=41,
                           diagnostics={"mask_robust_acc": 0.4, "stability_random_r0.05": 0.02})
    logs = tmp_path / "work" / "fixture" / "logs"
    log = logs / "evaluate" / "cifar10/resnet18/hydra/on/sp90/seed0.log"
    log.parent.mkdir(parents=True)
    log.write_text("evaluate log")
    manifest = tmp_path / "models" / "manifest.json"
    manifest.parent.mkdir()
    (tmp_path / "models" / "m.safetensors").write_bytes(b"x")
    manifest.write_text(json.dumps({"format": "apbench-model-manifest", "version": 1, "models": [
        {"model": "cifar10/resnet18/hydra/on/sp90/seed0", "entry": "e", "preset": "fixture", "files": {
            "safetensors": {"path": "m.safetensors", "sha256": "ab" * 32, "size": 1}}}]}))
    out = tmp_path / "results" / "fixture" / "site"
    # '{preset}': one site over several presets finds each result's logs
    build_site(runs, out, models_manifest=[manifest], logs_dir=tmp_path / "work" / "{preset}" / "logs")
    (entry,) = (out / "entries").glob("*.html")
    text = entry.read_text()
    result = json.loads(path.read_text())
    assert result["config_hash"] in text
    for stage in ("pretrain", "prune", "finetune", "evaluate"):
        assert f"<h3>{stage}</h3>" in text
    assert "after fab-t" in text and "after apgd-ce" in text  # per-attack accuracy
    assert "mask_robust_acc" in text and "stability_random_r0.05" in text  # diagnostics
    assert result["provenance"]["git"]["revision"] in text and "uncommitted changes" in text
    assert "torch 2.14.1" in text
    assert "ab" * 32 in text  # the model's sha256
    assert ("git checkout " + result["provenance"]["git"]["revision"]) in text
    assert ("--configfile presets/fixture.yaml --forceall "
            "results/fixture/runs/cifar10/resnet18/hydra/on/sp90/seed0.json") in text
    assert "zero gradient" in text and "fab-t" in text  # the flags' reasons
    hrefs = parse(entry).links
    # the result JSON is copied into the site; the log (under work/) and the model file (outside
    # the results tree) are named, not linked: the site is one self-contained folder
    href = next(h for h in hrefs if h.endswith("seed0.json"))
    assert (entry.parent / href).resolve().is_file() and "/files/" in "/" + href, href
    assert not any(h.endswith(("seed0.log", "m.safetensors")) for h in hrefs), hrefs
    assert "seed0.log" in text and "m.safetensors" in text
    assert site_links.link_problems(out) == []
    # RobustBench: the entry page says why it is not exported
    assert "not exported" in text and "100 of the 10,000" in text


def test_full_standard_autoattack_switch_data_and_flags(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", sparsity=90, aa_n=10_000)
    fx.write_result(runs, method="hydra", sparsity=95, aa_n=500, aa=200, preset="subset")
    fx.write_result(runs, method="hydra", sparsity=99, aa_n=10_000, attacks=["apgd-ce", "apgd-t"],
                    preset="apgd")
    build_site(runs, tmp_path / "site")
    rows = {r["attrs"]["data-sparsity"]: r for r in parse(tmp_path / "site" / "index.html").rows}
    assert rows["90"]["attrs"]["data-fullaa"] == "1"
    assert rows["95"]["attrs"]["data-fullaa"] == "0"
    data = site_data(runs)
    flags = {e["sparsity_text"]: {f["code"] for f in e["flags"]} for e in data["entries"]}
    assert flags["90"] == set() and "S" in flags["95"] and "N" in flags["99"]
    assert rows["99"]["attrs"]["data-fullaa"] == "0"


def test_delta_vs_original_on_the_s2ap_row(site):
    data = site_data(site["runs"])
    by = {(e["method"], e["s2ap"], e["sparsity_text"]): e for e in data["entries"]}
    on, off = by[("hydra", "on", "90")], by[("hydra", "off", "90")]
    assert off["delta"] is None
    assert on["delta"]["value"] == pytest.approx(on["row"]["autoattack"] - off["row"]["autoattack"])


def test_replace_dir_drops_stale_files_and_keeps_old_on_failure(tmp_path):
    out = tmp_path / "site"
    replace_dir(out, lambda d: (d / "a.html").write_text("a"))
    replace_dir(out, lambda d: (d / "b.html").write_text("b"))
    assert sorted(p.name for p in out.iterdir()) == ["b.html"]

    def broken(d):
        (d / "c.html").write_text("c")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        replace_dir(out, broken)
    assert sorted(p.name for p in out.iterdir()) == ["b.html"]
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temporary folder left


def test_site_command(tmp_path, capsys):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", sparsity=90)
    assert cli_main(["site", "--runs", str(runs), "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "index.html").is_file()
    assert "site:" in capsys.readouterr().out


def test_no_result_files_is_a_clear_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="no result files"):
        build_site(tmp_path / "runs", tmp_path / "s")


@pytest.mark.slow
def test_site_target_in_the_workflow(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "site", "-n", "-p", "--cores", "1", "--configfile", str(REPO / "presets" / "quick.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for rule in ("export_models", "export_robustbench", "site"):
        assert re.search(rf"^(local)?rule {rule}:$", out, re.M), rule
    assert "-m benchmark site --runs" in out and "--out results/quick/site" in out
    assert "--models results/quick/export/models/manifest.json" in out
    assert "-m benchmark export models" in out and "--out results/quick/export/models" in out


def test_an_entry_page_shows_the_interval_over_seeds_as_the_one_to_read(tmp_path):
    runs = tmp_path / "results" / "fixture" / "runs"
    for seed, (off, on) in enumerate([(4000, 4100), (4050, 4000), (3980, 4150)]):
        fx.write_result(runs, method="hydra", s2ap="off", sparsity=90, seed=seed, aa=off)
        fx.write_result(runs, method="hydra", s2ap="on", sparsity=90, seed=seed, aa=on)
    data = site_data(runs)
    on = next(e for e in data["entries"] if e["s2ap"] == "on")
    deltas = [1.0, -0.5, 1.7]  # per seed, in points
    mean = sum(deltas) / 3
    sd = (sum((d - mean) ** 2 for d in deltas) / 2) ** 0.5
    half = 4.302652729911275 * sd / 3 ** 0.5  # t(0.975, 2)
    assert on["delta"]["seed_ci"] == pytest.approx((mean - half, mean + half))
    out = tmp_path / "site"
    build_site(runs, out)
    page = (out / on["page"]).read_text()
    assert f"95 % CI over seeds: [{mean - half:+.2f}, {mean + half:+.2f}] pp" in page
    assert "read this one for the effect of S2AP" in page
