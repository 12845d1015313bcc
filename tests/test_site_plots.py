"""The site's plots (benchmark.results.site_plots): the PNG plots' matplotlib figures as inline
SVG, with their intervals, text as text, no URL, the same bytes every build, and each leaderboard
row's artists marked with the row's id."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from html.parser import HTMLParser

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)

from benchmark.publishing.site import build_site
from benchmark.results.site_plots import (
    accuracy_vs_sparsity,
    clean_vs_robust,
    method_colors,
    reference_vs_ours,
    s2ap_difference,
)


def marked(svg: str, cls: str) -> dict[str, list[ET.Element]]:
    """The groups of class ``cls``, by their data-row."""
    out: dict[str, list[ET.Element]] = {}
    for el in ET.fromstring(svg).iter("g"):
        if el.get("class") == cls:
            out.setdefault(el.get("data-row"), []).append(el)
    return out


def whisker_span(group: ET.Element) -> float:
    (path,) = group.iter("path")
    (y0, y1) = (float(v) for v in re.fullmatch(r"M [0-9.]+ ([0-9.]+) L [0-9.]+ ([0-9.]+)", path.get("d")).groups())
    return abs(y1 - y0)


def bar(groups: list[ET.Element]) -> ET.Element:
    return next(g for g in groups if "--bar" in g.get("id"))


ROWS = [{"dataset": "cifar10", "arch": "a", "method": m, "s2ap": "off", "sparsity": 90.0, "config_hash": "h",
         "autoattack": 41.0, "autoattack_lo": 31.9, "autoattack_hi": 50.8, "autoattack_n": 100}
        for m in ("x", "y")]


def test_svg_whiskers_for_one_seed_and_dodged_equal_points():
    svg = accuracy_vs_sparsity(ROWS, method_colors(["x", "y"]))
    whiskers = marked(svg, "whisker")
    assert sorted(whiskers) == ["cifar10/a/x/off/sp90/h", "cifar10/a/y/off/sp90/h"]
    spans = {whisker_span(bar(g)) for g in whiskers.values()}
    assert len(spans) == 1 and spans.pop() > 0  # one seed still has its Wilson interval
    xs = {use.get("x") for gs in marked(svg, "point").values() for g in gs for use in g.iter("use")}
    assert len(xs) == 2, "equal points must not sit on top of each other"


def test_the_s2ap_plot_draws_the_interval_over_seeds_and_falls_back_to_a_dashed_per_image_one():
    three = {"method": "hydra", "sparsity": 90.0, "delta": 1.5, "delta_lo": -2.0, "delta_hi": 5.0,
             "b": 40, "c": 55, "n_paired": 30_000, "p_value": 0.15}
    one = {"method": "harp", "sparsity": 90.0, "delta": -1.0, "delta_lo": None, "delta_hi": None,
           "b": 60, "c": 50, "n_paired": 10_000, "p_value": 0.39}
    svg = s2ap_difference([three, one], method_colors(["hydra", "harp"]))
    seed, image = marked(svg, "whisker seed-ci"), marked(svg, "whisker image-ci")
    assert len(seed) == 1 and len(image) == 1
    assert "dasharray" in bar(*image.values()).find("path").get("style")
    assert "dasharray" not in bar(*seed.values()).find("path").get("style")
    assert "95 % CI over seeds [-2.0, +5.0] (the effect)" in svg
    assert "no interval over seeds (below 3 seeds)" in svg
    assert "whiskers: 95 % CI over seeds; dashed: per-image interval (below 3 seeds)" in svg
    only_seed = s2ap_difference([three], method_colors(["hydra"]))
    assert "image-ci" not in only_seed and "whiskers: 95 % CI over seeds" in only_seed
    # the seed interval, not the far narrower per-image one (+/- 0.09 pp here), spans the whisker
    without = s2ap_difference([{**three, "delta_lo": None, "delta_hi": None}], method_colors(["hydra"]))
    (seed_bar,) = marked(only_seed, "whisker seed-ci").values()
    (image_bar,) = marked(without, "whisker image-ci").values()
    assert whisker_span(bar(seed_bar)) > 10 * whisker_span(bar(image_bar))


def test_svg_is_the_same_every_time_keeps_text_as_text_and_holds_no_url():
    rows = [{**r, "clean": 80.0, "clean_lo": 79.0, "clean_hi": 81.0, "ref_autoattack": 44.0} for r in ROWS]
    colors = method_colors(["x", "y"])
    for plot in (accuracy_vs_sparsity, clean_vs_robust, reference_vs_ours):
        svg = plot(rows, colors)
        assert svg == plot(rows, colors), plot.__name__
        assert svg.startswith("<svg ") and "<?xml" not in svg and "<metadata" not in svg
        assert "url(" not in svg and "http" not in svg, plot.__name__
        texts = {t.text for t in ET.fromstring(svg).iter("text")}
        assert "AutoAttack accuracy (%)" in texts or "our AutoAttack accuracy (%)" in texts, texts
        assert not re.search(r'id="DejaVu', svg)  # no glyphs drawn as paths
        # a tooltip per row, on the row's point
        tips = [g.find("title").text for gs in marked(svg, "point").values() for g in gs]
        assert len(tips) == 2 and all("x" in t or "y" in t for t in tips)


class Plots(HTMLParser):
    def __init__(self):
        super().__init__()
        self.row_ids, self.ids, self.data_rows = [], [], Counter()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-id" in a:
            self.row_ids.append(a["data-id"])
        if "id" in a:
            self.ids.append(a["id"])
        if "data-row" in a and a.get("class") == "point":
            self.data_rows[a["data-row"]] += 1


def test_each_row_of_the_page_has_plot_artists_named_by_its_id(tmp_path):
    runs = tmp_path / "results" / "fixture" / "runs"
    fx.write_result(runs, method="dense", sparsity=0, clean=8800, aa=4500)
    for seed in range(2):
        for s2ap, aa in (("off", 4000), ("on", 4100)):
            for sp in (90, 99):
                fx.write_result(runs, method="hydra", s2ap=s2ap, sparsity=sp, seed=seed, aa=aa - sp)
    build_site(runs, tmp_path / "site")
    page = Plots()
    page.feed((tmp_path / "site" / "index.html").read_text())
    assert len(page.ids) == len(set(page.ids)), "ids repeat across the page's plots"
    pruned = [r for r in page.row_ids if "/dense/" not in r]
    assert len(pruned) == 4 and set(page.row_ids) <= set(page.data_rows)
    for rid in pruned:  # accuracy vs sparsity and clean vs AutoAttack, and the S2AP difference for 'on'
        assert page.data_rows[rid] == (3 if "/on/" in rid else 2), (rid, page.data_rows)
