"""Downloadable models: safetensors + state_dict with a manifest of checksums, and a loader that
refuses a wrong checksum, an HTML page saved as a checkpoint and a pickle that would run code."""
from __future__ import annotations

import json
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest
import torch

from benchmark.cli import main as cli_main
from benchmark.core.datasets import get_info
from benchmark.core.model_files import (
    ChecksumMismatchError,
    ModelFileError,
    NotACheckpointError,
    export_models,
    load_from_manifest,
    load_state_dict_verified,
    read_manifest,
    sha256_file,
    verify_manifest,
)
from benchmark.core.models import build_model


def suite_model_file(path: Path, seed: int) -> torch.nn.Module:
    """A model.pt as the finetune stage writes it (state_dict, masks, meta)."""
    torch.manual_seed(seed)
    net = build_model("small_cnn", get_info("fashion-mnist"))
    with torch.no_grad():  # pruned weights are exact zeros in the exported plain model
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_((torch.rand_like(p) > 0.9).float())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "masks": {}, "meta": json.dumps({"configs": {}})}, path)
    return net.eval()


@pytest.fixture
def exported(tmp_path):
    runs = tmp_path / "results" / "fixture" / "runs"
    work = tmp_path / "work" / "fixture"
    nets = {}
    result = fx.write_result(runs, dataset="fashion-mnist", arch="small_cnn", method="hydra", s2ap="on",
                             sparsity=90, eps=0.1)
    nets["fashion-mnist/small_cnn/hydra/on/sp90/seed0"] = suite_model_file(
        work / "finetune" / "fashion-mnist/small_cnn/hydra/on/sp90/seed0" / "model.pt", 0)
    fx.write_result(runs, dataset="fashion-mnist", arch="small_cnn", method="dense", sparsity=0, eps=0.1)
    nets["fashion-mnist/small_cnn/dense/n-a/sp0/seed0"] = suite_model_file(
        work / "pretrain" / "fashion-mnist/small_cnn/abcdef0123/seed0" / "dense.pt", 1)
    out = tmp_path / "results" / "fixture" / "export" / "models"
    manifest = export_models(runs, out, work_dir=work)
    return {"out": out, "manifest": out / "manifest.json", "nets": nets, "data": manifest,
            "result": result}


def test_manifest_lists_every_model_with_checksums(exported):
    m = read_manifest(exported["manifest"])
    assert m["format"] == "apbench-model-manifest" and m["version"] == 1
    assert sorted(r["model"] for r in m["models"]) == sorted(exported["nets"])
    hydra = next(r for r in m["models"] if r["method"] == "hydra")
    assert hydra["entry"].startswith("fashion-mnist/small_cnn/hydra/on/sp90/")
    assert hydra["arch"] == "small_cnn" and hydra["num_classes"] == 10 and hydra["width"] == 1.0
    assert (exported["out"] / hydra["result"]).resolve() == exported["result"].resolve()
    for fmt in ("safetensors", "state_dict"):
        f = hydra["files"][fmt]
        path = exported["out"] / f["path"]
        assert f["sha256"] == sha256_file(path) and f["size"] == path.stat().st_size
    assert verify_manifest(exported["manifest"]) == []


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict"])
def test_loaded_model_equals_the_exported_one(exported, fmt):
    x = torch.rand(4, 1, 32, 32)
    for key, net in exported["nets"].items():
        loaded = load_from_manifest(exported["manifest"], key, fmt=fmt)
        torch.testing.assert_close(loaded(x), net(x))
        state = load_from_manifest(exported["manifest"], key, fmt=fmt, build=False)
        assert set(state) == set(net.state_dict())


def test_checksum_mismatch_is_refused_before_loading(exported):
    record = next(r for r in read_manifest(exported["manifest"])["models"] if r["method"] == "hydra")
    f = record["files"]["safetensors"]
    path = exported["out"] / f["path"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="does not match the manifest.*sha256 [0-9a-f]{64}, expected"):
        load_from_manifest(exported["manifest"], record["model"])
    path.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(ChecksumMismatchError, match="size 100 bytes, expected"):
        load_state_dict_verified(path, f["sha256"], f["size"])
    problems = verify_manifest(exported["manifest"])
    assert len(problems) == 1 and record["model"] in problems[0]
    assert cli_main(["export", "verify", "--manifest", str(exported["manifest"])]) == 1


@pytest.mark.parametrize("page", [
    b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>",
    b"\n  <html lang='en'><body>Sign in</body></html>",
])
def test_html_page_saved_as_checkpoint_is_named_as_such(exported, page):
    record = next(r for r in read_manifest(exported["manifest"])["models"] if r["method"] == "hydra")
    f = record["files"]["state_dict"]
    (exported["out"] / f["path"]).write_bytes(page)
    with pytest.raises(NotACheckpointError, match="is an HTML page, not a model file.*Download the file again"):
        load_from_manifest(exported["manifest"], record["model"], fmt="state_dict")


def test_a_pickle_that_would_run_code_is_refused_even_with_the_right_checksum(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, path)
    with pytest.raises(ModelFileError, match="cannot be loaded safely"):
        load_state_dict_verified(path, sha256_file(path), path.stat().st_size)


def test_missing_model_file_names_the_result(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", sparsity=90)
    with pytest.raises(FileNotFoundError, match="model file of .*seed0.json not found"):
        export_models(runs, tmp_path / "out", work_dir=tmp_path / "work")


def test_export_command(exported, tmp_path, capsys):
    runs = exported["result"].parents[5]
    work = runs.parents[2] / "work" / "fixture"
    assert cli_main(["export", "models", "--runs", str(runs), "--out", str(tmp_path / "m"),
                     "--work", str(work)]) == 0
    assert "models: 2" in capsys.readouterr().out
    assert cli_main(["export", "verify", "--manifest", str(tmp_path / "m" / "manifest.json")]) == 0


def test_a_model_file_replaced_since_its_evaluation_is_not_exported(tmp_path):
    runs = tmp_path / "runs"
    model = tmp_path / "work" / "model.pt"
    suite_model_file(model, 0)
    result = fx.write_result(runs, dataset="fashion-mnist", arch="small_cnn", method="hydra",
                             sparsity=90, eps=0.1, model_file=model)
    manifest = export_models(runs, tmp_path / "out")  # the recorded file: no work folder needed
    assert (tmp_path / "out" / manifest["models"][0]["result"]).resolve() == result.resolve()
    suite_model_file(model, 1)  # retrained after the evaluation
    with pytest.raises(ChecksumMismatchError, match="is not the model .*seed0.json evaluated"):
        export_models(runs, tmp_path / "out2")
