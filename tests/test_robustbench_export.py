"""RobustBench-compatible entries: the model-info fields, what is not exported and why, and a
CIFAR-10 entry read back by robustbench's own code (the `robustbench` extra, installed by the test
extra; skipped only where it is not installed)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import publishing_fixtures as fx  # tests/ is on pythonpath (pyproject)
import pytest

from benchmark.cli import main as cli_main
from benchmark.core.papers import PaperMetadataError, class_paper, method_paper
from benchmark.publishing.export_robustbench import NotExportable, eps_text, export_robustbench, robustbench_entry

REPO = Path(__file__).resolve().parent.parent
FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "external", "footnote",
          "unreliable"]




def test_cifar10_entry_fields():
    key, info = robustbench_entry(fx.result_record(method="hydra", s2ap="off", sparsity=90,
                                                   clean=8512, aa=4123, eps=0.031))
    assert sorted(info) == sorted(FIELDS)
    assert key == "Sehwag2020Hydra_resnet18_hydra_sp90_seed0"
    assert info["name"] == "HYDRA: Pruning Adversarially Robust Neural Networks"
    assert info["venue"] == "NeurIPS 2020" and info["link"].startswith("https://arxiv.org/")
    assert info["dataset"] == "cifar10" and info["architecture"] == "ResNet-18"
    assert info["clean_acc"] == "85.12" and info["autoattack_acc"] == "41.23" == info["external"]
    assert info["eps"] == "0.031" and "0.031" in info["footnote"] and "8/255" in info["footnote"]
    assert info["additional_data"] is False and info["number_forward_passes"] == 1
    assert info["unreliable"] is False and info["reported"] is None


def test_eps_strings():
    assert eps_text(8 / 255) == ("8/255", None)
    assert eps_text(4 / 255) == ("4/255", None)
    text, note = eps_text(0.031)
    assert text == "0.031" and "7.9/255" in note


@pytest.mark.parametrize("kw, reason", [
    ({"warnings": ["There are 1 points with zero gradient!"]}, "AutoAttack warned"),
    ({"lowered_by": ["fab-t"]}, "fab-t lowered APGD"),
])
def test_unreliable(kw, reason):
    _, info = robustbench_entry(fx.result_record(**kw))
    assert info["unreliable"] is True and reason in info["footnote"]


@pytest.mark.parametrize("kw, reason", [
    ({"aa_n": 100, "aa": 41}, "AutoAttack ran on 100 of the 10,000 test images"),
    ({"attacks": ["apgd-ce", "apgd-t"]}, "not the standard version"),
    ({"version": "plus"}, "not the standard version"),
    ({"dataset": "fashion-mnist", "eps": 0.1}, "no leaderboard for dataset 'fashion-mnist'"),
    ({"no_autoattack": True}, "no AutoAttack evaluation"),
    ({"method": "random", "s2ap": "n/a"}, "method 'random' states no paper"),
])
def test_not_exported_with_the_reason(kw, reason):
    with pytest.raises(NotExportable, match=reason):
        robustbench_entry(fx.result_record(**kw))


def test_s2ap_entry_cites_s2ap_and_names_the_base_method():
    key, info = robustbench_entry(fx.result_record(method="harp", s2ap="on", sparsity=95))
    assert key.startswith("Piras2025S2AP_") and key.endswith("_S2AP_seed0")
    assert info["name"].startswith("S2AP") and "Holistic Adversarially Robust Pruning" in info["footnote"]


def test_dense_entry_cites_its_adversarial_training():
    key, info = robustbench_entry(fx.result_record(method="dense", sparsity=0, eps=8 / 255))
    assert key == "Madry2018Towards_resnet18_dense_seed0" and info["eps"] == "8/255"
    key, _ = robustbench_entry(fx.result_record(method="dense", sparsity=0, loss="trades"))
    assert key.startswith("Zhang2019Theoretically_")


def test_paper_metadata_comes_from_the_method_classes():
    for method in ("hydra", "harp", "lwm", "lamp", "rst"):
        paper = method_paper(method)
        assert paper and paper["key"][0].isupper() and paper["link"].startswith("https://"), method
    assert method_paper("random") is None
    assert class_paper(REPO / "methods" / "s2ap.py", "ScoreSharpness")["key"] == "Piras2025S2AP"


def test_a_paper_that_is_not_a_literal_is_an_error_naming_the_line(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from benchmark.core.registry import register_method\n\n"
                 "@register_method('mine')\nclass Mine:\n    paper = dict(key='x')\n")
    with pytest.raises(PaperMetadataError, match=r"m\.py:5: Mine\.paper must be a literal dict"):
        method_paper("mine", [f])
    f.write_text("@register_method('mine')\nclass Mine:\n    paper = {'key': 'Me2024X', 'name': 'n'}\n")
    with pytest.raises(PaperMetadataError, match="lacks non-empty string.*authors, venue, link"):
        method_paper("mine", [f])


def test_export_writes_model_info_tree_and_reported_from_the_reference(tmp_path):
    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", s2ap="off", sparsity=90, aa=4250)
    fx.write_result(runs, method="hydra", s2ap="on", sparsity=90, aa=4300)
    # another preset's result (AutoAttack on 100 images): its own leaderboard, and not exported
    fx.write_result(runs, method="lwm", s2ap="n/a", sparsity=90, aa_n=100, aa=40, preset="subset")
    ref = tmp_path / "ref.csv"
    ref.write_text("# source: test\ndataset,structure,method,arch,sparsity,clean,autoattack\n"
                   "cifar10,unstructured,hydra,resnet18,90,76.74,43.34\n")
    out = tmp_path / "export"
    (out / "cifar10" / "Linf").mkdir(parents=True)
    (out / "cifar10" / "Linf" / "stale.json").write_text("{}")
    summary = export_robustbench(runs, out, reference_csv=ref)
    files = sorted(p.name for p in (out / "cifar10" / "Linf").iterdir())
    assert files == ["Piras2025S2AP_resnet18_hydra_sp90_S2AP_seed0.json",
                     "Sehwag2020Hydra_resnet18_hydra_sp90_seed0.json"]
    off = json.loads((out / "cifar10" / "Linf" / files[1]).read_text())
    on = json.loads((out / "cifar10" / "Linf" / files[0]).read_text())
    assert off["reported"] == "43.34" and on["reported"] is None  # published numbers: original method
    assert [Path(p).name for p, _ in summary.skipped] == ["seed0.json"]
    assert cli_main(["export", "robustbench", "--runs", str(runs), "--out", str(tmp_path / "e2")]) == 0


def test_the_autoattack_import_of_robustbench_is_resolved_with_the_old_api():
    """robustbench's `from autoattack import AutoAttack` with fra31's signature, on pyautoattack."""
    import torch

    from benchmark.core.robustbench_compat import ensure_autoattack_module

    module = ensure_autoattack_module()
    from autoattack import AutoAttack  # noqa: F401  (the import robustbench makes)
    from autoattack.state import EvaluationState  # noqa: F401

    class Wrong(torch.nn.Module):  # misclassifies everything: AutoAttack has nothing to attack
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 9] = 1.0
            return out + 0.0 * x.sum()

    adversary = module.AutoAttack(Wrong(), norm="Linf", eps=8 / 255, version="standard",
                                  device="cpu", log_path=None)
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    x_adv = adversary.run_standard_evaluation(x, y, bs=4)
    assert x_adv.shape == x.shape


def test_cifar10_entry_loads_with_robustbench_own_json_reading(tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("the robustbench extra is not installed (pip install -e '.[robustbench]')")
    from benchmark.core.robustbench_compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import get_leaderboard_bibtex, get_leaderboard_latex

    runs = tmp_path / "runs"
    fx.write_result(runs, method="hydra", s2ap="off", sparsity=90, clean=8512, aa=4123)
    fx.write_result(runs, method="harp", s2ap="on", sparsity=95, clean=8300, aa=4400,
                    warnings=["zero gradient"])
    export_robustbench(runs, tmp_path / "model_info")
    # robustbench reads ./model_info/<dataset>/<threat model>/*.json
    monkeypatch.chdir(tmp_path)
    latex = get_leaderboard_latex(BenchmarkDataset("cifar10"), ThreatModel("Linf"))
    lines = latex.splitlines()
    assert len(lines) == 2
    # sorted on robust accuracy by robustbench (which writes ResNet as RN): S2AP first, then HYDRA
    assert "\\citet{Piras2025S2AP}" in lines[0] and "& 83.00 & 44.00 & N & RN-18 & arXiv, Oct 2025" in lines[0]
    assert "\\citet{Sehwag2020Hydra}" in lines[1] and "& 85.12 & 41.23 & N & RN-18 & NeurIPS 2020" in lines[1]
    entries, _ = get_leaderboard_bibtex(BenchmarkDataset("cifar10"), ThreatModel("Linf"))
    text = "\n".join(entries)
    assert "Sehwag2020Hydra" in text and "HYDRA: Pruning Adversarially Robust Neural Networks" in text
    assert re.search(r"year\s*=\s*\{2020\}", text) and re.search(r"journal\s*=\s*\{NeurIPS\}", text)
    assert "robustbench" in sys.modules and os.getcwd() == str(tmp_path)
