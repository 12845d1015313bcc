"""The result schema and its writer/reader; provenance (dirty tree, stage-code digest)."""
import fnmatch
import json
import subprocess
from pathlib import Path

import pytest
import tomllib
import torch
import torch.nn as nn
from pyautoattack import AutoAttack

from benchmark.core import masking, provenance
from benchmark.core import result_file as results
from benchmark.core.result_file import ResultError
from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval

REPO = Path(__file__).resolve().parent.parent


class AlwaysWrong(nn.Module):
    def forward(self, x):
        return 5.0 * torch.nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 10) - 2.0


def record(n=16):
    """A record built by the writer from a real (instant) evaluation."""
    x, y = torch.rand(n, 1, 4, 4), torch.ones(n, dtype=torch.long)
    ecfg = {"eps": 0.1, "pgd_steps": 2, "batch_size": 8,
            "autoattack": {"n_images": 8, "version": "standard", "attacks": None, "seed": 0}}
    ev = evaluate_model(prepare_for_eval(AlwaysWrong()), (x, y), ecfg, progress=False)
    cell = {"dataset": "toy", "arch": "toy", "method": "dense", "s2ap": "n/a", "sparsity": 0,
            "seed": 0}
    return results.build_record(
        cell=cell, structure="unstructured", configs={"evaluate": {"evaluate": ecfg}},
        evaluation=ev, sparsity=masking.measure_sparsity(nn.Sequential(nn.Linear(4, 2))),
        timing={}, diagnostics={}, history={}, provenance=provenance.provenance())


def test_schema_enums_are_the_codes_lists():
    from benchmark.evaluation.autoattack import VERSION_ATTACKS
    from benchmark.training import stages

    schema = results.load_schema()
    defs = schema["$defs"]
    assert defs["aa_version"]["enum"] == list(results.AUTOATTACK_VERSIONS)
    assert set(defs["aa_attack"]["enum"]) == {a for v in results.AUTOATTACK_VERSIONS.values() for a in v}
    assert sorted(schema["properties"]["cell"]["properties"]["s2ap"]["enum"]) == sorted(stages.S2AP_VALUES)
    assert set(schema["properties"]["structure"]["enum"]) == set(results.STRUCTURES.values())
    assert schema["properties"]["schema_version"]["const"] == results.SCHEMA_VERSION
    assert VERSION_ATTACKS is results.AUTOATTACK_VERSIONS
    # ... and the lists are the installed pyautoattack's
    for version, attacks in results.AUTOATTACK_VERSIONS.items():
        assert tuple(AutoAttack(nn.Linear(2, 2), version=version).attacks_to_run) == attacks


def test_the_schema_ships_with_the_package():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    rel = results.SCHEMA_FILE.relative_to(REPO / "benchmark").as_posix()
    assert results.SCHEMA_FILE.is_file()
    assert any(fnmatch.fnmatch(rel, pattern) for pattern in data["benchmark"])


def test_writer_output_reads_back_identical(tmp_path):
    rec = record()
    results.write_result(tmp_path / "r.json", rec)
    assert results.read_result(tmp_path / "r.json") == rec
    assert rec["protocol"]["autoattack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert rec["protocol"]["autoattack"]["standard"] is True


@pytest.mark.parametrize("change,rule", [
    (lambda r: r["metrics"]["clean"].update(correct=200), "counts"),
    (lambda r: r["metrics"]["pgd"].update(eps=0.05), "eps"),
    (lambda r: r["protocol"].update(eps=0.05), "eps"),
    (lambda r: r["metrics"]["autoattack"].update(max_perturbation=0.2), "perturbation"),
    (lambda r: r["protocol"].update(pgd_steps=50), "protocol"),
    (lambda r: r["config"]["evaluate"]["evaluate"].update(eps=0.2), "config"),
    (lambda r: r["config"]["evaluate"]["evaluate"]["autoattack"].update(attacks=["apgd-ce"]), "config"),
    (lambda r: r.update(structure="channel"), "schema"),
    (lambda r: r["sparsity"].update(measured=0.5), "sparsity"),
])
def test_the_writer_refuses_a_record_that_breaks_a_rule_and_writes_nothing(tmp_path, change, rule):
    rec = record()
    change(rec)
    with pytest.raises(ResultError, match=f"rule '{rule}'") as err:
        results.write_result(tmp_path / "r.json", rec)
    assert err.value.path == str(tmp_path / "r.json")
    assert not list(tmp_path.iterdir())


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def test_dirty_means_tracked_source_files_changed_results_excluded(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "init")
    assert provenance.git_revision(tmp_path)["dirty"] is False
    (tmp_path / "results" / "r.json").write_text('{"changed": 1}\n')
    (tmp_path / "untracked.py").write_text("")
    assert provenance.git_revision(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    git = provenance.git_revision(tmp_path)
    assert git["dirty"] is True and git["dirty_files"] == ["code.py"]
    assert len(git["revision"]) == 40
    # a folder inside another checkout is not that checkout
    (tmp_path / "sub").mkdir()
    assert provenance.git_revision(tmp_path / "sub") == {"revision": "unknown", "dirty": None,
                                                        "dirty_files": []}


def test_stage_code_digest_follows_the_stage_imports_only(tmp_path):
    files = {
        "benchmark/__init__.py": "",
        "benchmark/training/__init__.py": "",
        "benchmark/training/stages.py": "from benchmark.helper import f\n"
                                        "REG = {'m': 'benchmark.core.models.net:build'}\n",
        "benchmark/helper.py": "def f():\n    return 1\n",
        "benchmark/core/models/__init__.py": "",
        "benchmark/core/models/net.py": "def build():\n    pass\n",
        "benchmark/results/aggregate.py": "from .helper import f\n",
        "benchmark/unused.py": "",
        "methods/base.py": "from benchmark.training.stages import REG\n",
        "methods/hydra.py": "@register_method('hydra')\nclass Hydra:\n    pass\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert provenance.stage_code_files(tmp_path) == [
        "benchmark/__init__.py", "benchmark/core/models/__init__.py", "benchmark/core/models/net.py",
        "benchmark/helper.py", "benchmark/training/__init__.py", "benchmark/training/stages.py",
        "methods/base.py"]
    assert provenance.stage_code_files(tmp_path, method="hydra")[-1] == "methods/hydra.py"
    digest = provenance.stage_code_digest(tmp_path, method="hydra")
    (tmp_path / "benchmark/results/aggregate.py").write_text("# the leaderboard changed\n")
    (tmp_path / "benchmark/unused.py").write_text("y = 2\n")
    assert provenance.stage_code_digest(tmp_path, method="hydra") == digest
    for rel in ("benchmark/helper.py", "benchmark/core/models/net.py", "methods/base.py",
                "methods/hydra.py"):
        (tmp_path / rel).write_text((tmp_path / rel).read_text() + "# edited\n")
        assert provenance.stage_code_digest(tmp_path, method="hydra") != digest, rel
        digest = provenance.stage_code_digest(tmp_path, method="hydra")


def test_every_result_records_revision_dirty_flag_and_stage_code():
    prov = provenance.provenance()
    assert set(prov["git"]) == {"revision", "dirty", "dirty_files"}
    assert prov["stage_code"] == provenance.stage_code_digest()
    assert prov["code_scope"] == {"method": None, "s2ap": None, "method_files": []}
    assert "benchmark/evaluation/protocol.py" in provenance.stage_code_files()
    assert "benchmark/results/aggregate.py" not in provenance.stage_code_files()


def test_record_is_plain_json(tmp_path):
    rec = record()
    assert json.loads(json.dumps(rec)) == rec
