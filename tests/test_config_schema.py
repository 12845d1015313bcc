"""The config schema's lists of valid words are the code's own lists: every enum is filled from
benchmark.core.choices or a registry, and benchmark.core.choices equals what the code (and the installed
pyautoattack) accepts."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from benchmark.core import choices, paper_tables
from benchmark.core import config as C
from benchmark.core.registry import ARCHITECTURES, DATASETS, method_registry
from benchmark.evaluation import autoattack as autoattack_eval
from benchmark.training import loop as training
from benchmark.training import losses, stages

REPO = Path(__file__).resolve().parent.parent


def _enums(node, path=""):
    """(path, enum) of every enum in a schema."""
    if isinstance(node, dict):
        if "enum" in node:
            yield path, node["enum"]
        for key, value in node.items():
            yield from _enums(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _enums(value, f"{path}/{i}")


def test_schema_file_writes_no_list_of_names():
    raw = yaml.safe_load(C.SCHEMA_PATH.read_text())
    assert list(_enums(raw)) == []  # each would be a second declaration that drifts


def test_every_schema_enum_is_a_code_list():
    registry = method_registry()
    expected = {
        "/$defs/dataset": DATASETS.names(),
        "/$defs/arch": ARCHITECTURES.names(),
        "/$defs/method": registry.names(),
        "/$defs/s2ap_value": list(choices.S2AP_GRID_VALUES),
        "/$defs/s2ap_norm": list(choices.S2AP_NORMS),
        "/$defs/gamma_status": list(choices.S2AP_GAMMA_STATUS),
        "/$defs/loss": list(choices.LOSSES),
        "/$defs/schedule": list(choices.SCHEDULES),
        "/$defs/autoattack_version": list(choices.AUTOATTACK_VERSIONS),
        "/$defs/autoattack_attack": list(choices.AUTOATTACK_ATTACKS),
        "/$defs/paper_table": list(paper_tables.KINDS),
        "/$defs/purpose": list(choices.PURPOSES),
        "/$defs/keep_rule": list(choices.KEEP_RULES),
        "/$defs/imagenet_test": list(choices.IMAGENET_TESTS),
        "/$defs/recipe_ledger_mode": list(choices.RECIPE_LEDGER_MODES),
    }
    assert dict(_enums(C.load_schema(registry))) == expected
    # every placeholder the file marks as filled is filled
    raw = yaml.safe_load(C.SCHEMA_PATH.read_text())
    marked = {f"/$defs/{k}" for k, v in raw["$defs"].items()
              if "enum: filled from" in str(v.get("description", ""))}
    assert marked == set(expected)


def test_losses_are_the_training_code_s():
    assert tuple(choices.LOSSES) == tuple(losses.LOSSES)


def test_schedules_are_the_training_code_s():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for name in choices.SCHEDULES:
        training.build_scheduler(opt, training.TrainConfig(epochs=2, lr=0.1, schedule=name))
    with pytest.raises(ValueError):
        training.build_scheduler(opt, training.TrainConfig(epochs=2, lr=0.1, schedule="linear"))


def test_s2ap_norms_are_the_perturbation_s():
    from methods import s2ap  # the score perturbation's formulas, wherever they live

    assert set(choices.S2AP_NORMS) == set(s2ap.NORMS)
    scores, grad = torch.randn(5), torch.randn(5)
    for norm in choices.S2AP_NORMS:
        assert torch.isfinite(s2ap.perturbation(scores, grad, 0.1, norm)).all()
    with pytest.raises(ValueError):
        s2ap.perturbation(scores, grad, 0.1, "elementwise")


def test_s2ap_grid_values_are_the_stages_s():
    assert set(stages.S2AP_VALUES) == {*choices.S2AP_GRID_VALUES, choices.S2AP_NA}


def test_autoattack_lists_are_the_installed_pyautoattack_s():
    pyautoattack = pytest.importorskip("pyautoattack")
    from pyautoattack import autoattack as aa_module

    assert set(typing.get_args(aa_module.AttackName)) == set(choices.AUTOATTACK_ATTACKS)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    for version, attacks in choices.AUTOATTACK_VERSIONS.items():
        adversary = pyautoattack.AutoAttack(model, eps=0.1, version=version, seed=0, device="cpu")
        assert tuple(adversary.attacks_to_run) == attacks, version
    assert dict(autoattack_eval.VERSION_ATTACKS) == choices.AUTOATTACK_VERSIONS
