"""Your run and the published run: `python -m benchmark publish` copies a finished run to
results/published/<preset>/ only after its integrity checks pass, refuses a dirty tree and a run
that fails a check (saying which), and the next run's leaderboard compares itself with it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest
import torch
import yaml

from benchmark.cli import main as cli_main
from benchmark.core import config as apcfg
from benchmark.core import strict_yaml
from benchmark.core.datasets import get_info
from benchmark.core.model_files import load_from_manifest, read_manifest, verify_manifest
from benchmark.core.models import build_model
from benchmark.publishing import result_trust
from benchmark.publishing.publish import PublishError, check_run, publish
from benchmark.results.aggregate import read_leaderboard

REPO = Path(__file__).resolve().parent.parent
PRESET = "pubtest"




def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A committed repository with the preset (the tiny grid: dense + HYDRA at 90 %)."""
    root = tmp_path / "repo"
    (root / "presets").mkdir(parents=True)
    raw = strict_yaml.load_file(REPO / "presets" / "tiny.yaml")
    raw["name"] = PRESET
    raw["purpose"] = "benchmark"  # tiny's grid, published as a benchmark would be
    (root / "presets" / f"{PRESET}.yaml").write_text(yaml.safe_dump(raw))
    (root / "README.md").write_text("a benchmark\n")
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())  # the repository's rules
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "preset")
    monkeypatch.chdir(root)
    # these results are fabricated (publishing_fixtures): no model, AutoAttack record or test image
    # stands behind their numbers, so nothing can be re-derived from them; these tests pin the
    # other checks, tests/test_result_tampering.py pins re-derivation over a real run
    monkeypatch.setattr(result_trust, "check", lambda *a, **k: None)
    return root


CELLS = [dict(method="dense", sparsity=0), dict(method="hydra", s2ap="off", sparsity=90)]


def model_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_model("small_cnn", get_info("fashion-mnist"), width=1.0)  # the fixtures' width
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "masks": None, "meta": json.dumps({})}, path)
    return path


def make_run(root: Path, **kw) -> list[Path]:
    """The preset's results (made at HEAD from a clean tree by the current code, unless kw says
    otherwise), each naming its model file, and the aggregation that the workflow runs."""
    head = git(root, "rev-parse", "HEAD")
    files = []
    for i, cell in enumerate(CELLS):
        model = model_file(Path("work") / PRESET / f"model{i}.pt", i)
        args = dict(dataset="fashion-mnist", arch="small_cnn", eps=0.1, preset=PRESET,
                    revision=head, model_file=model, clean=8000 - 100 * i, aa=4000 - 100 * i)
        args.update(cell)
        if cell["method"] != "dense":  # what the preset makes each stage of this cell run with
            cfg = apcfg.validate(apcfg.load_preset(root / "presets" / f"{PRESET}.yaml"))
            args["stage_configs"] = {
                stage: apcfg.stage_config(cfg, stage, dataset="fashion-mnist", arch="small_cnn",
                                          method=cell["method"], s2ap=cell["s2ap"])
                for stage in ("prune", "finetune")}
        args.update(kw)
        path = fx.write_result(Path("results") / PRESET / "runs", **args)
        files.append(path)
    assert cli_main(["aggregate", "--runs", *map(str, files), "--out", f"results/{PRESET}",
                     "--no-plots"]) == 0
    return files


@pytest.mark.slow
def test_a_checked_run_is_published_with_its_models_site_and_record(repo):
    files = make_run(repo)
    out = publish(PRESET, root=repo)
    assert out == repo / "results" / "published" / PRESET
    for f in files:
        assert (out / f.relative_to(Path("results") / PRESET)).read_bytes() == f.read_bytes()
    for name in ("leaderboard.csv", "leaderboard.md"):
        assert (out / name).read_bytes() == (repo / "results" / PRESET / name).read_bytes()
    manifest = out / "export" / "models" / "manifest.json"
    assert verify_manifest(manifest) == []
    records = read_manifest(manifest)
    assert records["files_included"] is True
    assert all(set(r["files"]) == {"safetensors"} for r in records["models"])
    hydra = next(r for r in records["models"] if r["method"] == "hydra")
    assert (manifest.parent / hydra["result"]).resolve().is_file()
    assert load_from_manifest(manifest, hydra["model"]) is not None
    assert (out / "site" / "index.html").is_file() and (out / "export" / "robustbench").is_dir()
    record = json.loads((out / "published.json").read_text())
    assert record["revision"] == git(repo, "rev-parse", "HEAD") and record["results"] == 2
    assert record["checks"] == ["purpose", "git", "finished", "results", "leaderboard", "models"]
    assert record["files"]["leaderboard.csv"] == fx.results_sha256(out / "leaderboard.csv")
    # the site over everything published
    assert (repo / "results" / "published" / "site" / "index.html").is_file()


@pytest.mark.slow
def test_the_next_run_states_how_it_compares_with_the_published_run(repo):
    make_run(repo)
    publish(PRESET, root=repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "publish")
    # a fresh run: HYDRA half a point lower (inside its 95 % interval on 10,000 images), the
    # dense model three points lower (outside)
    files = make_run(repo)
    for i, (cell, aa) in enumerate(zip(CELLS, (3700, 3850))):
        fx.write_result(Path("results") / PRESET / "runs", dataset="fashion-mnist", arch="small_cnn",
                        eps=0.1, preset=PRESET, revision=git(repo, "rev-parse", "HEAD"),
                        model_file=Path("work") / PRESET / f"model{i}.pt", clean=8000 - 100 * i,
                        aa=aa, **cell)
    published = f"results/published/{PRESET}/leaderboard.csv"
    assert cli_main(["aggregate", "--runs", *map(str, files), "--out", f"results/{PRESET}",
                     "--no-plots", "--published", published]) == 0
    board = read_leaderboard(repo / "results" / PRESET / "leaderboard.csv").set_index("method")
    assert board.loc["hydra", "published_autoattack"] == pytest.approx(39.0)
    assert board.loc["hydra", "published_autoattack_diff"] == pytest.approx(-0.5)
    assert board.loc["dense", "published_autoattack_diff"] == pytest.approx(-3.0)
    assert bool(board.loc["hydra", "published_autoattack_in_ci"])
    assert not bool(board.loc["dense", "published_autoattack_in_ci"])
    md = (repo / "results" / PRESET / "leaderboard.md").read_text()
    assert "Published AA (Δ, in CI?)" in md
    assert "39.00 (-0.50, inside)" in md and "40.00 (-3.00, outside)" in md
    assert f"the published run's AutoAttack accuracy ({published}, revision" in md


@pytest.mark.slow
def test_a_dirty_tree_is_refused(repo):
    make_run(repo)
    (repo / "README.md").write_text("edited\n")
    with pytest.raises(PublishError, match=r"\[git\] uncommitted changes to tracked files: README.md"):
        publish(PRESET, root=repo)
    assert not (repo / "results" / "published").exists()
    (repo / "README.md").write_text("a benchmark\n")
    (repo / "methods").mkdir()
    (repo / "methods" / "mine.py").write_text("# a method the commit does not hold\n")
    with pytest.raises(PublishError, match=r"\[git\] untracked code the commit does not hold: methods/mine.py"):
        publish(PRESET, root=repo)
    assert not (repo / "results" / "published").exists()


def _tamper_counts(repo, files):
    r = json.loads(files[1].read_text())
    r["metrics"]["clean"]["correct"] += 1
    files[1].write_text(json.dumps(r))


def _edit_leaderboard(repo, files):
    board = repo / "results" / PRESET / "leaderboard.md"
    board.write_text(board.read_text().replace("hydra", "hydra (best!)"))


def _replace_model(repo, files):
    model_file(repo / "work" / PRESET / "model1.pt", seed=7)


def _drop_a_result(repo, files):
    files[1].unlink()
    assert cli_main(["aggregate", "--runs", str(files[0]), "--out", f"results/{PRESET}", "--no-plots"]) == 0


def _prune_with_another_recipe(repo, files):
    # a search kept from before the preset changed: its result records the old config
    r = json.loads(files[1].read_text())
    r["config"]["prune"]["train"]["lr"] = 0.5
    files[1].write_text(json.dumps(r))
    assert cli_main(["aggregate", "--runs", *map(str, files), "--out", f"results/{PRESET}", "--no-plots"]) == 0


def _dense_model_of_older_code(repo, files):
    # the rerun after `rm -rf results/`: Snakemake kept the dense model the older code trained
    for f in files:
        r = json.loads(f.read_text())
        r["provenance"]["stages"]["pretrain"]["stage_code"] = "0" * 16
        f.write_text(json.dumps(r))
    assert cli_main(["aggregate", "--runs", *map(str, files), "--out", f"results/{PRESET}", "--no-plots"]) == 0


def _no_stage_records(repo, files):
    r = json.loads(files[1].read_text())
    del r["provenance"]["stages"]
    files[1].write_text(json.dumps(r))
    assert cli_main(["aggregate", "--runs", *map(str, files), "--out", f"results/{PRESET}", "--no-plots"]) == 0


def _no_stamp(repo, files):
    (repo / "results" / PRESET / "leaderboard.stamp.json").unlink()


@pytest.mark.parametrize("kw, tamper, check, match", [
    ({}, _tamper_counts, "finished", "changed since the leaderboard was aggregated"),
    ({}, _tamper_counts, "results", "rule 'acc'"),
    ({}, _edit_leaderboard, "leaderboard", "leaderboard.md differs from what its aggregation gives"),
    ({}, _replace_model, "models", "model1.pt is not the one it evaluated"),
    ({}, _drop_a_result, "finished", "the run is not finished: 1 result"),
    ({}, _no_stamp, "finished", "leaderboard.stamp.json not found"),
    ({}, _prune_with_another_recipe, "results", "its prune stage ran with another config than the preset's"),
    ({"revision": "f" * 40}, None, "results", "made at revision ffffffffffff, HEAD is"),
    ({"dirty": True}, None, "results", "made from a tree with uncommitted changes"),
    ({"stage_code": "0" * 16}, None, "results", "made by other stage code"),
    ({}, _dense_model_of_older_code, "results", "its pretrain stage ran stage code 0000000000000000"),
    ({}, _no_stage_records, "results", "records no per-stage provenance"),
])
@pytest.mark.slow
def test_a_run_that_fails_an_integrity_check_is_refused_with_the_reason(repo, kw, tamper, check, match):
    files = make_run(repo, **kw)
    if tamper is not None:
        tamper(repo, files)
    with pytest.raises(PublishError) as err:
        publish(PRESET, root=repo)
    assert any(c == check and match in detail for c, detail in err.value.problems), err.value.problems
    assert f"[{check}]" in str(err.value)
    # every reason names the command that fixes it
    assert len(err.value.fixes) == len(err.value.problems) and all(err.value.fixes), err.value.fixes
    assert str(err.value).count("      fix: ") == len(err.value.problems)
    assert "to fix every problem, run in order:" in str(err.value)
    assert not (repo / "results" / "published").exists()


@pytest.mark.slow
def test_a_model_of_older_code_is_refused_with_a_fresh_rerun(repo):
    files = make_run(repo)
    _dense_model_of_older_code(repo, files)
    with pytest.raises(PublishError) as err:
        publish(PRESET, root=repo)
    assert f"rm -rf work/{PRESET} results/{PRESET} && make run PRESET={PRESET}" in err.value.fixes


@pytest.mark.slow
def test_a_plumbing_preset_is_never_published(repo):
    raw = yaml.safe_load((repo / "presets" / f"{PRESET}.yaml").read_text())
    raw["purpose"] = "plumbing"
    (repo / "presets" / f"{PRESET}.yaml").write_text(yaml.safe_dump(raw))
    git(repo, "commit", "-qam", "plumbing")
    make_run(repo)
    with pytest.raises(PublishError) as err:
        publish(PRESET, root=repo)
    assert [c for c, _ in err.value.problems] == ["purpose"]
    assert "make publish PRESET=quick" in err.value.fixes[0]
    assert not (repo / "results" / "published").exists()


def test_the_plumbing_presets_declare_their_purpose():
    for name in ("tiny", "smoke"):
        assert yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())["purpose"] == "plumbing"


@pytest.mark.slow
def test_an_archived_publication_is_shown_apart_under_a_banner_on_every_page(repo, capsys):
    make_run(repo)
    publish(PRESET, root=repo)
    assert cli_main(["publish", "--archive", PRESET, "--reason", "hours to recompute"]) == 0
    assert "archived: results/published/pubtest" in capsys.readouterr().out
    site = repo / "results" / "published" / "site"
    index = (site / "index.html").read_text()
    assert "Archived publications" in index and f'href="archived/{PRESET}/index.html"' in index
    pages = [site / "archived" / PRESET / "index.html",
             *(site / "archived" / PRESET / "entries").glob("*.html")]
    assert len(pages) == 3
    for page in pages:
        assert 'class="banner"' in page.read_text() and "hours to recompute" in page.read_text()
    board = (site / "archived" / PRESET / "index.html").read_text()
    assert board.count("table-banner") == board.count('class="board"') >= 1
    # the publication's own tables and site say so too, once however often it is archived
    own = repo / "results" / "published" / PRESET
    assert cli_main(["publish", "--archive", PRESET, "--reason", "still hours"]) == 0
    board_md = (own / "leaderboard.md").read_text()
    assert board_md.startswith("> **Archived:** preset pubtest") and board_md.count("Archived:") == 1
    assert "still hours" in board_md and "hours to recompute" not in board_md
    assert board_md.split("\n\n", 1)[1].startswith("# Leaderboard: pubtest")
    own_pages = [own / "site" / "index.html", *(own / "site" / "entries").glob("*.html")]
    assert len(own_pages) == 3
    for page in own_pages:
        assert 'class="banner"' in page.read_text() and "still hours" in page.read_text()
    assert json.loads((own / "archived.json").read_text())["bannered"] == ["leaderboard.md"]


@pytest.mark.slow
def test_the_publish_command(repo, capsys):
    make_run(repo)
    assert cli_main(["publish", "--preset", PRESET, "--check-only"]) == 0
    assert "every check passed" in capsys.readouterr().out
    (repo / "README.md").write_text("edited\n")
    assert cli_main(["publish", "--preset", PRESET]) == 2
    err = capsys.readouterr().err
    assert "refusing to publish results/pubtest" in err and "README.md" in err
    assert check_run(PRESET, root=repo).problems


def test_heads_stage_code_is_taken_per_method_as_each_result_records_it(tmp_path):
    """A row's recorded digest covers the shared stage code and its own method's files
    (benchmark.results.staleness); the check against git's HEAD must compare like with like, or
    every pruned row of a clean, current run is refused."""
    import shutil

    from benchmark.core.provenance import stage_code_digest

    root = tmp_path / "repo"
    for d in ("benchmark", "methods", "examples"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "code")

    def result(method, s2ap, files=()):
        return {"cell": {"method": method, "s2ap": s2ap},
                "provenance": {"code_scope": {"method": method, "s2ap": s2ap,
                                              "method_files": list(files)}}}

    with result_trust.HeadCode(root) as head:
        assert head.ok
        shared = head.of_result(result(None, None))
        hydra_on = head.of_result(result("hydra", "on"))
        mine = head.of_result(result("hydra_global", "off", ["examples/my_method.py"]))
    assert shared == stage_code_digest(root) == result_trust.head_stage_code(root)
    assert hydra_on == stage_code_digest(root, method="hydra", s2ap="on") != shared
    assert mine == stage_code_digest(root, method="hydra_global", s2ap="off",
                                     method_files=[root / "examples" / "my_method.py"]) != shared
    # the working tree changes, HEAD does not: the digests are the commit's
    (root / "methods" / "hydra.py").write_text("# edited\n")
    with result_trust.HeadCode(root) as head:
        assert head.of_result(result("hydra", "on")) == hydra_on
