"""A dense model trained elsewhere (external_dense): checked by sha256 before it is read, loaded
only as safetensors or weights_only, copied into our architecture; the workflow imports it once
instead of pretraining, and its checksum is its recipe."""
from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.core import config as C
from benchmark.core import external_dense as X
from benchmark.core.datasets import get_info
from benchmark.core.errors import CheckpointError, MissingFileError
from benchmark.core.models import build_model

REPO = Path(__file__).resolve().parent.parent
INFO = get_info("cifar10")
WIDTH = 0.0625


def source_model(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet18", INFO, width=WIDTH)


def entry(path, sha=None):
    return {"dataset": "cifar10", "arch": "resnet18", "path": str(path),
            "sha256": sha or X.sha256_file(path)}


def imported(tmp_path, e):
    out = tmp_path / "dense.pt"
    X.import_dense(e, dataset="cifar10", arch="resnet18", model_cfg={"width": WIDTH}, out=out)
    ckpt = torch.load(out, weights_only=True)
    model = build_model("resnet18", INFO, width=WIDTH)
    model.load_state_dict(ckpt["state_dict"])
    return model, json.loads(ckpt["meta"])


def same_weights(a, b):
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_a_safetensors_file_of_our_layout_is_imported_as_is(tmp_path):
    from safetensors.torch import save_file

    src = source_model()
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model, meta = imported(tmp_path, entry(path))
    assert same_weights(model, src)
    assert meta["configs"]["pretrain"] == {"external": {"sha256": X.sha256_file(path),
                                                        "file": "r18.safetensors"}}


def test_a_wrapped_torch_file_with_a_prefix_is_imported(tmp_path):
    src = source_model(1)
    net = {f"module.{k[len('net.'):]}": v for k, v in src.state_dict().items() if k.startswith("net.")}
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": net, "epoch": 100}, path)
    model, _ = imported(tmp_path, entry(path))
    assert same_weights(model, src)


def test_a_wrong_checksum_stops_before_anything_is_read(tmp_path, monkeypatch):
    path = tmp_path / "r18.pt"
    torch.save(source_model().state_dict(), path)
    read = []
    monkeypatch.setattr(X, "read_state_dict", lambda p: read.append(p))
    with pytest.raises(CheckpointError, match=r"r18\.pt has sha256 [0-9a-f]{64}, the preset's "
                                              r"external_dense entry for cifar10/resnet18 expects 0{64}"):
        X.import_dense(entry(path, "0" * 64), dataset="cifar10", arch="resnet18",
                       model_cfg={"width": WIDTH}, out=tmp_path / "dense.pt")
    assert read == [] and not (tmp_path / "dense.pt").exists()


def test_a_missing_file_says_nothing_downloads(tmp_path):
    e = {"dataset": "imagenet", "arch": "resnet50", "sha256": "1" * 64,
         "robustbench": {"name": "Salman2020Do_R50", "model_dir": str(tmp_path / "models")}}
    with pytest.raises(MissingFileError, match=r"imagenet/Linf/Salman2020Do_R50\.pt.*nothing "
                                               r"downloads at run time"):
        X.import_dense(e, dataset="imagenet", arch="resnet50", model_cfg={}, out=tmp_path / "d.pt")


def test_a_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Payload()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="weights_only"):
        X.import_dense(entry(path), dataset="cifar10", arch="resnet18", model_cfg={"width": WIDTH},
                       out=tmp_path / "dense.pt")


def test_another_architecture_or_normalisation_is_refused(tmp_path):
    from safetensors.torch import save_file

    vgg = build_model("vgg16_bn", INFO, width=WIDTH)
    path = tmp_path / "vgg.safetensors"
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="does not hold this architecture's weights"):
        imported(tmp_path, entry(path))
    src = source_model()
    sd = dict(src.state_dict())
    sd["mean"] = torch.zeros_like(sd["mean"])
    path = tmp_path / "other_norm.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(CheckpointError, match="trained with input mean"):
        imported(tmp_path, entry(path))


def _preset(tmp_path, sha="a" * 64, path="models/r18.pt"):
    text = (REPO / "presets" / "tiny.yaml").read_text()
    text = text.replace("datasets: [fashion-mnist]", "datasets: [cifar10]").replace(
        "archs: [small_cnn]", "archs: [resnet18]").replace("seeds: [0]", "seeds: [0, 1]")
    text += f"external_dense: [{{dataset: cifar10, arch: resnet18, sha256: '{sha}', path: {path}}}]\n"
    text = text.replace("  root: data\n", "  root: data\n  synthetic: true\n")
    p = tmp_path / "ext.yaml"
    p.write_text(text)
    return p


def test_the_checksum_is_the_recipe(tmp_path):
    cfg = C.validate(C.load_preset(_preset(tmp_path)), search_dirs=[REPO])
    a = C.pretrain_recipe_hash(cfg, "cifar10", "resnet18", "hydra")
    assert a == C.pretrain_recipe_hash(cfg, "cifar10", "resnet18", "harp")  # whatever the method
    moved = C.validate(C.load_preset(_preset(tmp_path, path="elsewhere/r18.pt")), search_dirs=[REPO])
    assert C.pretrain_recipe_hash(moved, "cifar10", "resnet18", "hydra") == a
    other = C.validate(C.load_preset(_preset(tmp_path, sha="b" * 64)), search_dirs=[REPO])
    assert C.pretrain_recipe_hash(other, "cifar10", "resnet18", "hydra") != a
    # one dense model for every seed: evaluated once
    assert [c["seed"] for c in C.dense_cells(cfg, C.grid_cells(cfg))] == [0]


def test_entries_are_validated(tmp_path):
    cfg = C.load_preset(_preset(tmp_path))
    cfg["external_dense"].append(dict(cfg["external_dense"][0]))
    with pytest.raises(C.ConfigError, match=r"external_dense\[1\]: a second entry"):
        C.validate(cfg, search_dirs=[REPO])
    cfg = C.load_preset(_preset(tmp_path))
    cfg["external_dense"][0]["sha256"] = "not-a-checksum"
    with pytest.raises(C.ConfigError, match="external_dense.0.sha256"):
        C.validate(cfg, search_dirs=[REPO])
    cfg = C.load_preset(_preset(tmp_path))
    cfg["external_dense"][0]["arch"] = "vgg16_bn"
    with pytest.raises(C.ConfigError, match=r"vgg16_bn is not in the grid"):
        C.validate(cfg, search_dirs=[REPO])


@pytest.mark.slow
def test_the_workflow_imports_once_instead_of_pretraining(tmp_path):
    src = source_model()
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "r18.pt"
    torch.save(src.state_dict(), path)
    preset = _preset(tmp_path, sha=X.sha256_file(path))
    text = preset.read_text().replace("width: 0.5", f"width: {WIDTH}")
    preset.write_text(text)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(tmp_path), "-n", "--cores", "1", "--configfile", str(preset)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    stats = out.split("Job stats:")[1]
    assert re.search(r"import_dense\s+1\b", stats) and "pretrain " not in stats
    assert re.search(r"evaluate_dense\s+1\b", stats)  # one model, evaluated once
    # and the import job itself: the file is checked and converted
    imported_file = tmp_path / "dense.pt"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "import-dense", "--entry",
                           json.dumps(C.load_preset(preset)["external_dense"][0] | {"path": str(path)}),
                           "--dataset", "cifar10", "--arch", "resnet18", "--model",
                           json.dumps({"width": WIDTH}), "--out", str(imported_file)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert torch.load(imported_file, weights_only=True)["masks"] is None





def test_a_missing_external_file_is_a_machine_problem(tmp_path):
    from benchmark.planning import preflight

    cfg = C.validate(C.load_preset(_preset(tmp_path)), search_dirs=[REPO])
    problems = preflight.machine_problems(cfg, [REPO], deep=False, workdir=tmp_path)
    assert any(p.startswith("external_dense[0]: ") and "r18.pt not found" in p for p in problems)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "r18.pt").write_bytes(b"x")
    problems = preflight.machine_problems(cfg, [tmp_path], deep=False, workdir=tmp_path)
    assert not any(p.startswith("external_dense") for p in problems)
