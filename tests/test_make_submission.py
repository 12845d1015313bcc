"""python -m benchmark make-submission: a submission folder from one of our exported models,
which `submit` evaluates back to the entry's own numbers; the entry's name shows on its row."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_submission import ARCH, DATASET, pruned_model, tiny_preset  # tests/ on pythonpath

from benchmark.cli import main as cli_main
from benchmark.core import config as C
from benchmark.core.model_files import export_models
from benchmark.core.papers import method_paper
from benchmark.publishing.make_submission import MakeSubmissionError, make_submission
from benchmark.publishing.site import build_site
from benchmark.publishing.submission import read_submission, submit
from benchmark.training import stages


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A HYDRA entry of the tiny preset evaluated by the evaluate stage, and its export."""
    root = tmp_path_factory.mktemp("made")
    preset = tiny_preset(root)
    cfg = C.load_preset(preset)
    model_pt = root / "work" / "model.pt"
    model_pt.parent.mkdir(parents=True)
    torch.save({"state_dict": pruned_model().state_dict(), "masks": None,
                "meta": json.dumps({"configs": {}})}, model_pt)
    runs = root / "results" / "tiny" / "runs"
    result = runs / DATASET / ARCH / "hydra" / "off" / "sp90" / "seed0.json"
    record = stages.evaluate(C.stage_config(cfg, "evaluate", dataset=DATASET, arch=ARCH),
                             model_path=model_pt, out=result,
                             cell={"dataset": DATASET, "arch": ARCH, "method": "hydra", "s2ap": "off",
                                   "sparsity": 90.0, "seed": 0, "preset": "tiny"})
    manifest = root / "results" / "tiny" / "export" / "models" / "manifest.json"
    export_models(runs, manifest.parent)
    return {"root": root, "preset": preset, "record": record, "manifest": manifest}


@pytest.mark.slow
def test_an_exported_model_round_trips_through_submit_to_the_same_numbers(exported, monkeypatch):
    root = exported["root"]
    monkeypatch.chdir(root)
    folder = make_submission(exported["manifest"], "fashion-mnist/small_cnn/hydra/off/sp90/seed0",
                             name="HYDRA 90 % (ours, resubmitted)")
    assert folder == Path("submissions") / "hydra-off-sp90-seed0"
    spec = read_submission(folder)  # valid against the schema
    ours = exported["record"]
    assert spec["preset"] == "tiny" and spec["eps"] == ours["eps"] and spec["width"] == 0.5
    assert spec["claims"]["sparsity"] == pytest.approx(100 * ours["sparsity"]["measured"], abs=0.01)
    assert spec["claims"]["autoattack"] == pytest.approx(100 * ours["metrics"]["autoattack"]["acc"], abs=0.01)
    assert spec["paper"]["link"] == method_paper("hydra")["link"]
    record = submit(folder, preset_file=exported["preset"])
    for name in ("clean", "pgd", "autoattack"):
        for key in ("correct", "n", "acc", "images_digest"):
            assert record["metrics"][name][key] == ours["metrics"][name][key], (name, key)
    assert record["flags"] == ours["flags"]
    assert record["sparsity"]["zeros"] == ours["sparsity"]["zeros"]
    assert record["submission"]["outside"] == []  # its own claims, confirmed
    # the row shows the entry's name, not the folder's
    site = build_site([root / "results" / "tiny" / "submissions"], root / "site")
    index = site.read_text()
    assert "HYDRA 90 % (ours, resubmitted)</a>" in index
    assert ">hydra-off-sp90-seed0</a>" not in index
    ranked = (site.parent / "ranked.html").read_text()
    assert "HYDRA 90 % (ours, resubmitted)</a>" in ranked and "<td>not stated</td>" in ranked


def test_the_make_submission_command_and_its_refusals(exported, monkeypatch, capsys):
    monkeypatch.chdir(exported["root"])
    out = exported["root"] / "submissions" / "cli-made"
    assert cli_main(["make-submission", "--manifest", str(exported["manifest"]), "--model",
                     "fashion-mnist/small_cnn/hydra/off/sp90/seed0", "--out", str(out)]) == 0
    assert "python -m benchmark submit" in capsys.readouterr().out
    spec = yaml.safe_load((out / "submission.yaml").read_text())
    assert "name" not in spec and (out / spec["model"]["file"]).is_file()
    with pytest.raises(MakeSubmissionError, match="is not in the manifest"):
        make_submission(exported["manifest"], "fashion-mnist/small_cnn/harp/off/sp90/seed0")
    with pytest.raises(MakeSubmissionError, match="must match"):
        make_submission(exported["manifest"], "fashion-mnist/small_cnn/hydra/off/sp90/seed0",
                        out=exported["root"] / "submissions" / "Bad Name")
