"""A row's code hash covers the shared stage code and its own method's file(s); untracked code
makes a tree dirty; published presets are current or archived (benchmark/results/staleness.py)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmark.core import provenance
from benchmark.results import staleness

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "results" / "published"

METHOD = "from benchmark.core.registry import register_method\nfrom .base import PruningMethod\n\n" \
         "@register_method({name!r})\nclass M(PruningMethod):\n    pass\n"


def _tree(root: Path) -> None:
    files = {
        "benchmark/__init__.py": "",
        "benchmark/training/__init__.py": "",
        "benchmark/training/stages.py": "from benchmark.helper import f\n",
        "benchmark/helper.py": "def f():\n    return 1\n",
        "methods/__init__.py": "",
        "methods/base.py": "from .s2ap import step\nclass PruningMethod:\n    pass\n",
        "methods/s2ap.py": "def step():\n    pass\n",
        "methods/hydra.py": METHOD.format(name="hydra"),
        "methods/harp.py": "from .lamp import alloc\n" + METHOD.format(name="harp"),
        "methods/lamp.py": "def alloc():\n    pass\n" + METHOD.format(name="lamp"),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _digests(root: Path) -> dict[tuple, str]:
    cells = [(None, None), ("hydra", "off"), ("hydra", "on"), ("harp", "off"), ("lamp", "n/a")]
    return {c: provenance.stage_code_digest(root, method=c[0], s2ap=c[1]) for c in cells}


def test_editing_a_methods_file_marks_its_rows_and_no_other(tmp_path):
    _tree(tmp_path)
    before = _digests(tmp_path)
    (tmp_path / "methods/hydra.py").write_text(METHOD.format(name="hydra") + "# tuned\n")
    after = _digests(tmp_path)
    changed = {c for c in before if before[c] != after[c]}
    assert changed == {("hydra", "off"), ("hydra", "on")}


def test_s2ap_code_marks_only_s2ap_rows_though_the_contract_imports_it(tmp_path):
    _tree(tmp_path)
    before = _digests(tmp_path)
    (tmp_path / "methods/s2ap.py").write_text("def step():\n    return 2\n")
    after = _digests(tmp_path)
    assert {c for c in before if before[c] != after[c]} == {("hydra", "on")}


def test_a_method_covers_the_method_files_it_imports(tmp_path):
    _tree(tmp_path)
    assert "methods/lamp.py" in provenance.stage_code_files(tmp_path, method="harp")
    before = _digests(tmp_path)
    (tmp_path / "methods/lamp.py").write_text((tmp_path / "methods/lamp.py").read_text() + "#\n")
    after = _digests(tmp_path)
    assert {c for c in before if before[c] != after[c]} == {("harp", "off"), ("lamp", "n/a")}


def test_shared_code_and_the_contract_mark_every_row(tmp_path):
    _tree(tmp_path)
    for rel in ("benchmark/helper.py", "methods/base.py"):
        before = _digests(tmp_path)
        (tmp_path / rel).write_text((tmp_path / rel).read_text() + "# edited\n")
        after = _digests(tmp_path)
        assert all(before[c] != after[c] for c in before), rel


def test_an_unrelated_new_methods_file_marks_nothing(tmp_path):
    _tree(tmp_path)
    before = _digests(tmp_path)
    (tmp_path / "methods/mine.py").write_text(METHOD.format(name="mine"))
    (tmp_path / "methods/notes_helper.py").write_text("X = 1\n")
    assert _digests(tmp_path) == before


def test_a_method_file_outside_the_repository_counts_for_its_rows(tmp_path):
    _tree(tmp_path / "repo")
    outside = tmp_path / "mine.py"
    outside.write_text(METHOD.format(name="mine"))
    one = provenance.stage_code_digest(tmp_path / "repo", method="mine", method_files=[outside])
    outside.write_text(METHOD.format(name="mine") + "# tuned\n")
    assert provenance.stage_code_digest(tmp_path / "repo", method="mine",
                                        method_files=[outside]) != one


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


@pytest.mark.parametrize("folder", ["methods", "presets", "benchmark", "workflows"])
def test_untracked_files_in_code_folders_make_the_tree_dirty(tmp_path, folder):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "kept.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    (tmp_path / "scratch.txt").write_text("notes\n")  # outside the code folders: not dirty
    assert provenance.git_revision(tmp_path)["dirty"] is False
    (tmp_path / folder / "new_file.yaml").write_text("a: 1\n")
    git = provenance.git_revision(tmp_path)
    assert git["dirty"] is True and git["dirty_files"] == [f"{folder}/new_file.yaml"]


def test_a_result_without_a_recorded_scope_is_judged_by_its_cell():
    res = {"cell": {"method": "hydra", "s2ap": "on"}, "provenance": {"stage_code": "x"}}
    assert staleness.code_scope_of(res) == {"method": "hydra", "s2ap": "on", "method_files": []}
    current = staleness.CurrentCode()
    assert current.of_result(res) == provenance.stage_code_digest(method="hydra", s2ap="on")
    assert current.is_stale(res)
    res["provenance"]["stage_code"] = current.of_result(res)
    assert not current.is_stale(res)


def test_every_stage_that_made_a_model_is_checked():
    current = staleness.CurrentCode()
    scope = provenance.code_scope("hydra", "off")
    ok = {"revision": "r" * 40, "dirty": False, "stage_code": current.of_scope(scope),
          "scope": scope}
    shared = {**ok, "stage_code": current.of_scope(provenance.code_scope()),
              "scope": provenance.code_scope()}
    res = {"provenance": {"stages": {"pretrain": shared, "prune": ok, "finetune": ok,
                                     "evaluate": ok}}}
    assert staleness.stale_stages(res, current, "r" * 40) == []
    res["provenance"]["stages"]["pretrain"] = {**shared, "stage_code": "0" * 16}
    res["provenance"]["stages"]["prune"] = {**ok, "revision": "q" * 40}
    found = staleness.stale_stages(res, current, "r" * 40)
    assert [s for s, _ in found] == ["pretrain", "prune"]
    assert "0000000000000000" in found[0][1] and "qqqqqqqqqqqq" in found[1][1]
    assert staleness.stale_stages({"provenance": {}}, current, "r" * 40)[0][0] == "stages"


# ---------------------------------------------------------------- what main publishes
def _published() -> list[str]:
    return sorted(p.name for p in PUBLISHED.iterdir() if (p / "published.json").is_file()) \
        if PUBLISHED.is_dir() else []


@pytest.mark.parametrize("preset", _published())
def test_a_published_preset_is_current_or_archived(preset):
    """Main never shows a stale publication: a change to the code that makes a published preset's
    numbers republishes it in the same change (``make run/publish PRESET=...``), or archives it
    (``python -m benchmark publish --archive NAME``), which moves it out of the current board."""
    folder = PUBLISHED / preset
    if staleness.archive_record(folder) is not None:
        return  # archived: every page of it says it is not current
    stale = staleness.stale_results(folder)
    assert not stale, (
        f"results/published/{preset} is stale: {len(stale)} result(s) were made by other code "
        f"than today's for their rows, e.g. {stale[0][0]} (recorded {stale[0][1]}, current "
        f"{stale[0][2]}). Republish it: rm -rf work/{preset} results/{preset} && make run "
        f"PRESET={preset} && make publish PRESET={preset}; or archive it: python -m benchmark "
        f"publish --archive {preset}")


def test_archiving_marks_a_publication_and_the_staleness_test_skips_it(tmp_path):
    folder = tmp_path / "results" / "published" / "study"
    (folder / "runs").mkdir(parents=True)
    (folder / "published.json").write_text(json.dumps(
        {"preset": "study", "revision": "a" * 40, "published_utc": "2026-01-01T00:00:00+00:00"}))
    (folder / "runs" / "r.json").write_text(json.dumps(
        {"cell": {"method": "hydra", "s2ap": "off"}, "provenance": {"stage_code": "old"}}))
    assert staleness.stale_results(folder) == [("runs/r.json", "old", staleness.CurrentCode()
                                                .of_scope(provenance.code_scope("hydra", "off")))]
    assert staleness.current_publications(folder.parent) == ["study"]
    rec = staleness.archive(folder, reason="2 h 41 min to recompute")
    assert staleness.archive_record(folder) == rec
    assert rec["revision"] == "a" * 40 and rec["stale_results"] == 1
    assert staleness.current_publications(folder.parent) == []
    assert staleness.archived_publications(folder.parent) == ["study"]
    assert "made at revision aaaaaaaaaaaa" in staleness.banner_text(rec)
