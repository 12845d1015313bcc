"""External submissions (python -m benchmark submit): the round trip (a model exported by `export
models`, submitted back, reproduces its entry's numbers exactly), and the refusals, each with the
reason it names: a pickle that would run code, a wrong architecture, a wrong class count, a wrong
eps, a truncated file, a checksum that does not match, a YAML that breaks the schema."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main as cli_main
from benchmark.core import config as C
from benchmark.core import strict_yaml
from benchmark.core.datasets import get_info
from benchmark.core.model_files import export_models
from benchmark.core.models import build_model
from benchmark.core.result_file import read_result
from benchmark.publishing.submission import SubmissionError, read_submission, submissions_for, submit
from benchmark.results.aggregate import aggregate
from benchmark.training import stages

REPO = Path(__file__).resolve().parent.parent
DATASET, ARCH, WIDTH = "fashion-mnist", "small_cnn", 0.5  # the tiny preset's


def tiny_preset(root: Path) -> Path:
    """presets/tiny.yaml with the data under root (the Debian files are extracted there once)."""
    raw = strict_yaml.load_file(REPO / "presets" / "tiny.yaml")
    raw["data"]["root"] = str(root / "data")
    path = root / "presets" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def pruned_model(seed: int = 0, arch: str = ARCH, width: float = WIDTH, dataset: str = DATASET):
    torch.manual_seed(seed)
    net = build_model(arch, get_info(dataset), width=width)
    with torch.no_grad():  # 90 % of each layer's weights exactly zero
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                w = module.weight
                k = int(0.9 * w.numel())
                idx = w.abs().flatten().argsort()[:k]
                w.view(-1)[idx] = 0.0
    return net.eval()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_submission(root: Path, name: str, model_file: Path, **changes) -> Path:
    folder = root / "submissions" / name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model_file.name
    if model_file.resolve() != target.resolve():
        shutil.copyfile(model_file, target)
    spec = {"preset": "tiny", "dataset": DATASET, "arch": ARCH, "width": WIDTH, "eps": 0.1,
            "method": "magnitude pruning to 90 % per layer, no finetuning",
            "model": {"file": target.name, "sha256": sha(target)},
            "claims": {"sparsity": 90, "clean": 10.0, "autoattack": 0.0},
            "paper": {"key": "Doe2025Pruning", "name": "Pruning by hand", "authors": "J. Doe",
                      "venue": "arXiv 2025", "link": "https://example.org/doe2025"}}
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    return folder


@pytest.fixture(scope="module")
def entry(tmp_path_factory):
    """An entry of the tiny preset evaluated by the evaluate stage, and its exported model."""
    root = tmp_path_factory.mktemp("entry")
    preset = tiny_preset(root)
    cfg = C.load_preset(preset)
    net = pruned_model()
    model_pt = root / "work" / "model.pt"
    model_pt.parent.mkdir(parents=True)
    torch.save({"state_dict": net.state_dict(), "masks": None,
                "meta": json.dumps({"configs": {}})}, model_pt)
    runs = root / "results" / "tiny" / "runs"
    result = runs / DATASET / ARCH / "lwm" / "n-a" / "sp90" / "seed0.json"
    record = stages.evaluate(C.stage_config(cfg, "evaluate", dataset=DATASET, arch=ARCH),
                             model_path=model_pt, out=result,
                             cell={"dataset": DATASET, "arch": ARCH, "method": "lwm", "s2ap": "n/a",
                                   "sparsity": 90.0, "seed": 0, "preset": "tiny"})
    # the result names the file it evaluated: the export takes it from there, no guessing
    assert record["model"] == {"path": str(model_pt), "sha256": sha(model_pt)}
    export = root / "results" / "tiny" / "export" / "models"
    manifest = export_models(runs, export)
    (model,) = manifest["models"]
    return {"root": root, "preset": preset, "record": record, "result": result,
            "safetensors": export / model["files"]["safetensors"]["path"],
            "state_dict": export / model["files"]["state_dict"]["path"], "net": net}


@pytest.mark.slow
def test_a_submission_of_an_exported_model_reproduces_its_entry_exactly(entry, monkeypatch):
    root = entry["root"]
    monkeypatch.chdir(root)
    folder = make_submission(root, "roundtrip", entry["safetensors"])
    record = submit(folder, preset_file=entry["preset"])
    ours = entry["record"]
    assert record["protocol"] == ours["protocol"]
    assert record["flags"] == ours["flags"]
    for name in ("clean", "pgd", "autoattack"):
        for key in ("correct", "n", "acc", "images_digest"):
            assert record["metrics"][name][key] == ours["metrics"][name][key], (name, key)
    assert record["sparsity"]["measured"] == ours["sparsity"]["measured"]
    assert record["sparsity"]["zeros"] == ours["sparsity"]["zeros"]
    # a normal result file, written by the writer, that the reader accepts
    path = root / "results" / "tiny" / "submissions" / "roundtrip.json"
    assert read_result(path) == record
    sub = record["submission"]
    assert sub["measured"]["sparsity"] == pytest.approx(100 * ours["sparsity"]["measured"])
    assert record["cell"]["method"] == "roundtrip" and record["cell"]["s2ap"] == "n/a"
    assert record["model"]["sha256"] == sha(entry["safetensors"])
    # the plain state_dict export (torch.save, read with weights_only=True) gives the same numbers
    folder = make_submission(root, "roundtrip-pt", entry["state_dict"])
    again = submit(folder, preset_file=entry["preset"])
    assert again["flags"] == ours["flags"]


@pytest.mark.slow
def test_claims_outside_our_interval_are_flagged_on_the_leaderboard(entry, monkeypatch):
    root = entry["root"]
    monkeypatch.chdir(root)
    ours = entry["record"]
    clean = 100 * ours["metrics"]["clean"]["acc"]
    good = make_submission(root, "honest", entry["safetensors"], claims__clean=clean,
                           claims__autoattack=100 * ours["metrics"]["autoattack"]["acc"])
    bad = make_submission(root, "bold", entry["safetensors"], claims__clean=99.0,
                          claims__sparsity=99.0,
                          claims__autoattack=100 * ours["metrics"]["autoattack"]["acc"])
    assert submit(good, preset_file=entry["preset"])["submission"]["outside"] == []
    record = submit(bad, preset_file=entry["preset"])
    assert sorted(record["submission"]["outside"]) == ["clean", "sparsity"]
    out = root / "board"
    df = aggregate([entry["result"], root / "results" / "tiny" / "submissions" / "honest.json",
                    root / "results" / "tiny" / "submissions" / "bold.json"], out).set_index("method")
    honest = df.loc["honest", "flag"].split("; ")
    assert "submission" in honest and not any(f.startswith("claim-outside") for f in honest)
    assert bool(df.loc["honest", "submission"])
    assert "claim-outside:clean+sparsity" in df.loc["bold", "flag"].split("; ")
    assert not bool(df.loc["lwm", "submission"])
    md = (out / "leaderboard.md").read_text()
    assert "**E** (submission)" in md and "**C** (claim-outside)" in md


@pytest.mark.slow
def test_the_submit_command(entry, monkeypatch, capsys):
    root = entry["root"]
    monkeypatch.chdir(root)
    folder = make_submission(root, "cli", entry["safetensors"])
    assert cli_main(["submit", str(folder), "--preset", str(entry["preset"])]) == 0
    out = capsys.readouterr().out
    assert "submission cli: sparsity 89.99 % (claimed 90)" in out
    assert (root / "results/tiny/submissions/cli.json").is_file()


# ---------------------------------------------------------------- refusals
class Evil:
    """Unpickling this creates the marker file: proof that the loader ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def refused(entry, folder, reason, match):
    with pytest.raises(SubmissionError, match=match) as err:
        submit(folder, preset_file=entry["preset"])
    assert err.value.reason == reason
    assert f"refused ({reason})" in str(err.value)
    return err.value


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(entry, tmp_path):
    marker = tmp_path / "the-pickle-ran"
    evil = tmp_path / "model.pt"
    state = {k: v for k, v in entry["net"].state_dict().items()}
    torch.save({"state_dict": state, "payload": Evil(marker)}, evil)
    # the test can fail: a plain torch.load runs the payload
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()
    folder = make_submission(tmp_path, "evil", evil)
    refused(entry, folder, "pickle", "would run code when loaded.*nothing in it ran")
    assert not marker.exists()


def test_a_wrong_architecture_is_refused(entry, tmp_path):
    net = pruned_model(arch="resnet18", width=0.25)
    f = tmp_path / "model.pt"
    torch.save(net.state_dict(), f)
    folder = make_submission(tmp_path, "wrongarch", f)
    refused(entry, folder, "architecture", "does not load strictly into architecture 'small_cnn'.*missing keys")
    # the same weights at another width: shape mismatches
    f2 = tmp_path / "wide.pt"
    torch.save(pruned_model(width=1.0).state_dict(), f2)
    folder = make_submission(tmp_path, "wrongwidth", f2)
    refused(entry, folder, "architecture", "shape mismatches")


@pytest.mark.slow
def test_a_wrong_class_count_is_refused(entry, tmp_path):
    state = dict(entry["net"].state_dict())
    head = [k for k in state if k.endswith(".weight") and state[k].dim() == 2][-1]
    bias = head[:-len("weight")] + "bias"
    state[head] = state[head][:5].clone()
    state[bias] = state[bias][:5].clone()
    f = tmp_path / "model.pt"
    torch.save(state, f)
    folder = make_submission(tmp_path, "fiveclasses", f)
    refused(entry, folder, "classes", "the model has 5 outputs.*fashion-mnist has 10 classes")
    folder = make_submission(tmp_path, "claims-five", entry["safetensors"], num_classes=5)
    refused(entry, folder, "classes", "num_classes 5")


def test_a_wrong_eps_is_refused(entry, tmp_path):
    folder = make_submission(tmp_path, "eps", entry["safetensors"], eps=8 / 255)
    refused(entry, folder, "eps", "claims eps 0.0313725; the protocol of preset 'tiny' evaluates "
                                  "fashion-mnist at eps 0.1")


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict"])
def test_a_truncated_file_is_refused(entry, tmp_path, fmt):
    src = entry[fmt]
    data = src.read_bytes()
    folder = make_submission(tmp_path, f"cut-{fmt}", src)
    f = folder / src.name
    f.write_bytes(data[: len(data) // 2])
    # the sha256 in the YAML is the full file's: named truncated, not merely "different"
    refused(entry, folder, "truncated", "truncated")
    # a submitter who hashed the truncated file: the format itself shows the missing end
    spec = strict_yaml.load_file(folder / "submission.yaml")
    spec["model"]["sha256"] = sha(f)
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    refused(entry, folder, "truncated", "truncated")


def test_another_file_with_the_claimed_name_is_a_checksum_mismatch(entry, tmp_path):
    folder = make_submission(tmp_path, "swapped", entry["safetensors"])
    spec = strict_yaml.load_file(folder / "submission.yaml")
    spec["model"]["sha256"] = "0" * 64
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    refused(entry, folder, "checksum", "does not match model.sha256")


def test_an_html_page_saved_as_the_model_is_refused(entry, tmp_path):
    page = tmp_path / "model.safetensors"
    page.write_bytes(b"<!DOCTYPE html><html><title>Sign in</title></html>")
    folder = make_submission(tmp_path, "html", page)
    refused(entry, folder, "not-a-model", "is an HTML page")


@pytest.mark.parametrize("change, match", [
    ({"claims__sparsity": 120}, "claims.sparsity"),
    ({"model__sha256": "abc"}, "model.sha256"),
    ({"surprise": 1}, "Additional properties"),
    ({"model__file": "../elsewhere.pt"}, "model.file"),
])
def test_a_yaml_that_breaks_the_schema_names_the_field(entry, tmp_path, change, match):
    folder = make_submission(tmp_path, "schema", entry["safetensors"], **change)
    with pytest.raises(SubmissionError, match=match) as err:
        read_submission(folder)
    assert err.value.reason == "schema"


def test_a_method_name_or_a_bad_folder_name_is_refused(entry, tmp_path):
    refused(entry, make_submission(tmp_path, "hydra", entry["safetensors"]), "name", "method of the suite")
    refused(entry, make_submission(tmp_path, "Not_Lower", entry["safetensors"]), "name", "must match")


def test_the_workflow_lists_the_submissions_of_its_preset(tmp_path):
    for name, preset in (("a", "tiny"), ("b", "quick")):
        folder = tmp_path / "submissions" / name
        folder.mkdir(parents=True)
        (folder / "submission.yaml").write_text(yaml.safe_dump({"preset": preset, "model": {"file": "m.pt"}}))
    (tmp_path / "submissions" / "broken").mkdir()
    (tmp_path / "submissions" / "broken" / "submission.yaml").write_text("preset: [unclosed")
    found = submissions_for("tiny", tmp_path / "submissions")
    assert found == [{"name": "a", "dir": str(tmp_path / "submissions" / "a"),
                      "model": str(tmp_path / "submissions" / "a" / "m.pt")}]


@pytest.mark.slow
def test_a_submission_result_whose_claims_block_disagrees_with_its_metrics_is_refused(entry, monkeypatch, tmp_path):
    from benchmark.core.result_file import ResultError

    monkeypatch.chdir(entry["root"])
    folder = make_submission(entry["root"], "checked", entry["safetensors"])
    submit(folder, preset_file=entry["preset"])
    path = entry["root"] / "results" / "tiny" / "submissions" / "checked.json"
    record = json.loads(path.read_text())
    record["submission"]["measured"]["clean"] = 99.0  # a better number than the metrics give
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(record))
    with pytest.raises(ResultError, match="rule 'submission'.*measured.clean"):
        read_result(bad)
    record = json.loads(path.read_text())
    record["submission"]["outside"] = []  # hiding a claim we did not confirm
    record["submission"]["claims"]["clean"] = 99.0
    bad.write_text(json.dumps(record))
    with pytest.raises(ResultError, match="rule 'submission'.*outside"):
        read_result(bad)


def test_listing_submissions_imports_no_torch(tmp_path):
    # the Snakefile lists them while it is parsed
    import subprocess
    import sys

    code = ("import sys; from benchmark.publishing import submission; submission.submissions_for('tiny'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
