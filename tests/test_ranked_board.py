"""The ranked board (benchmark/publishing/ranked_board.py, the site's ranked.html): one ranking per dataset x
threat model x sparsity, the paper from the method's registration, and a load snippet that runs."""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest
import torch

from benchmark.core.datasets import get_info
from benchmark.core.model_files import export_models
from benchmark.core.models import build_model
from benchmark.core.papers import method_paper, s2ap_paper
from benchmark.publishing.ranked_board import _ranks
from benchmark.publishing.site import build_site

REPO = Path(__file__).resolve().parent.parent


def _model_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_model("small_cnn", get_info("fashion-mnist"), width=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "masks": None, "meta": json.dumps({})}, path)
    return path


CELLS = [dict(method="dense", sparsity=0, aa=4500, clean=8800),
         dict(method="hydra", s2ap="off", sparsity=90, aa=3000, clean=7000),
         dict(method="hydra", s2ap="on", sparsity=90, aa=3200, clean=7100),
         dict(method="random", s2ap="n/a", sparsity=90, aa=3000, clean=7500),
         dict(method="harp", s2ap="off", sparsity=95, aa=2000, clean=6000)]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranked")
    old = Path.cwd()
    os.chdir(root)
    try:
        runs = Path("results") / "rb" / "runs"
        for i, cell in enumerate(CELLS):
            model = _model_file(Path("work") / "rb" / f"model{i}.pt", i)
            fx.write_result(runs, dataset="fashion-mnist", arch="small_cnn", eps=0.1, preset="rb",
                            model_file=model, **cell)
        manifest = Path("results") / "rb" / "export" / "models"
        export_models(runs, manifest)
        build_site(runs, Path("results") / "rb" / "site",
                   models_manifest=[manifest / "manifest.json"])
    finally:
        os.chdir(old)
    return {"root": root, "page": (root / "results" / "rb" / "site" / "ranked.html").read_text()}


def _boards(page: str) -> list[dict]:
    out = []
    for sec in re.findall(r'<section class="ranked".*?</section>', page, re.S):
        title = html.unescape(re.search(r"<h2>(.*?)</h2>", sec).group(1))
        rows = []
        for tr in re.findall(r'<tr data-id=.*?</tr>', sec, re.S):
            rows.append({"rank": re.search(r'class="n rank">(.*?)<', tr).group(1),
                         "method": re.search(r'data-method="(.*?)"', tr).group(1),
                         "s2ap": re.search(r'data-s2ap="(.*?)"', tr).group(1),
                         "papers": re.findall(r'class="paper-link" href="(.*?)"', tr),
                         "code": [html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", tr, re.S)]})
        out.append({"title": title, "rows": rows})
    return out


def test_one_board_per_sparsity_ranked_by_autoattack_ties_sharing_a_rank(ranked):
    boards = _boards(ranked["page"])
    assert [b["title"].rsplit("· ", 1)[1] for b in boards] == ["sparsity 0 %", "sparsity 90 %",
                                                               "sparsity 95 %"]
    ninety = boards[1]["rows"]
    # AA 32.00 (hydra+S2AP), then 30.00 twice: random (clean 75) before hydra (clean 70), one rank
    assert [(r["method"], r["s2ap"], r["rank"]) for r in ninety] == [
        ("hydra", "on", "1"), ("random", "n/a", "2"), ("hydra", "off", "2")]
    assert _ranks([5.0, 4.0, 4.0, 3.0, None]) == [1, 2, 2, 4, None]


def test_the_paper_comes_from_the_methods_registration(ranked):
    rows = {(r["method"], r["s2ap"]): r for b in _boards(ranked["page"]) for r in b["rows"]}
    assert rows[("hydra", "off")]["papers"] == [method_paper("hydra")["link"]]
    assert rows[("hydra", "on")]["papers"] == [method_paper("hydra")["link"], s2ap_paper()["link"]]
    assert rows[("harp", "off")]["papers"] == [method_paper("harp")["link"]]
    assert "arxiv.org/abs/1706.06083" in rows[("dense", "n/a")]["papers"][0]  # Madry et al.
    assert "NeurIPS 2020" in ranked["page"]


def test_the_load_snippet_of_every_entry_runs_and_gives_the_model(ranked):
    codes = [r["code"][0] for b in _boards(ranked["page"]) for r in b["rows"]]
    assert len(codes) == len(CELLS)
    hydra = next(c for c in codes if "hydra/on/sp90" in c)
    check = hydra + ("import torch\nx = torch.zeros(2, 1, 28, 28)\n"
                     "print(type(model).__name__, tuple(model(x).shape), model.training)\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=ranked["root"], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["2,", "10)", "False"] or "(2, 10) False" in proc.stdout


def test_the_paper_is_declared_in_the_registration_and_read_without_running_the_file(tmp_path):
    from benchmark.core.registry import MethodFileError, read_method_file, register_method

    f = tmp_path / "mine.py"
    paper = {"key": "Me2026Mine", "name": "Mine", "authors": "Me", "venue": "arXiv 2026",
             "link": "https://example.org/mine"}
    f.write_text("from benchmark.core.registry import register_method\n\n"
                 f"@register_method('mine', learns_scores=False, paper={paper!r})\n"
                 "class Mine:\n    pass\n")
    assert read_method_file(f)[0].traits["learns_scores"] is False
    assert method_paper("mine", [f]) == paper
    f.write_text("@register_method('mine', paper=dict(key='x'))\nclass Mine:\n    pass\n")
    with pytest.raises(MethodFileError, match=r"mine\.py:1: paper= must be a literal dict"):
        read_method_file(f)
    f.write_text("@register_method('mine', paper={'key': 'x'})\nclass Mine:\n    pass\n")
    with pytest.raises(MethodFileError, match="lacks non-empty string"):
        read_method_file(f)

    stated = dict(paper)

    class Twice:
        paper = stated
    with pytest.raises(Exception, match="keep the decorator's"):
        register_method("twice", paper=paper)(Twice)

    class Once:
        pass
    assert register_method("once", paper=paper)(Once).paper == paper


def test_every_built_in_papered_method_declares_it_in_its_registration():
    import ast

    for path in sorted((REPO / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(getattr(d, "func", None), "id", None) == "register_method" for d in node.decorator_list):
                assert not any(isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "paper" for t in s.targets)
                               for s in node.body), f"{path.name}: {node.name} states paper in its body"
