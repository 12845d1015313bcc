"""Batch sizes a preset leaves null are chosen from the free memory, recorded in the result, and
results attacked with different batching are never pooled; a preset's purpose reaches its
leaderboard."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from benchmark.core import result_file as results
from benchmark.evaluation import batching
from benchmark.evaluation.protocol import evaluate_model, prepare_for_eval
from benchmark.results.aggregate import AggregationError, aggregate
from tests.test_aggregate import edit, write_result


def _net():
    torch.manual_seed(0)
    return prepare_for_eval(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                          nn.Linear(4 * 8 * 8, 10)))


def test_the_batch_is_the_largest_power_of_two_the_free_memory_holds():
    model, x = _net(), torch.rand(1, 1, 8, 8)
    per_image = batching.bytes_per_image(model, x, backward=True)
    assert per_image > batching.bytes_per_image(model, x, backward=False) > 0
    # room for 40 images at the memory share: 32
    free = int(40 * per_image / batching.MEMORY_SHARE) + 1
    assert batching.choose_batch_size(model, x, 1000, backward=True, free_bytes=free) == 32
    # never more than the images (rounded up to a power of two), at least one
    assert batching.choose_batch_size(model, x, 100, backward=True, free_bytes=10**15) == 128
    assert batching.choose_batch_size(model, x, 100, backward=True, free_bytes=1) == 1


def _cfg(batch, aa_batch):
    return {"eps": 0.1, "pgd_steps": 2, "pgd_step_size": None, "clean_n": 20, "pgd_n": 20,
            "batch_size": batch,
            "autoattack": {"n_images": 6, "version": "standard", "attacks": ["apgd-ce"],
                           "batch_size": aa_batch, "shard_size": None, "seed": 0}}


def test_null_batch_sizes_are_chosen_and_recorded(monkeypatch):
    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 10**12)
    data = (torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,)))
    out = evaluate_model(_net(), data, _cfg(None, None), progress=False)
    proto = out["protocol"]
    assert (proto["batch_size"], proto["batch_size_source"]) == (32, "free memory")
    aa = proto["autoattack"]
    assert (aa["batch_size"], aa["batch_size_source"]) == (8, "free memory")
    assert out["metrics"]["pgd"]["batch_size"] == 32 and out["metrics"]["autoattack"]["batch_size"] == 8
    fixed = evaluate_model(_net(), data, _cfg(5, 3), progress=False)["protocol"]
    assert (fixed["batch_size"], fixed["batch_size_source"]) == (5, "preset")
    assert (fixed["autoattack"]["batch_size"], fixed["autoattack"]["batch_size_source"]) == (3, "preset")


def _auto_batch(record, aa_batch):
    """The record as if its preset left the AutoAttack batch null and this size was chosen."""
    record["config"]["evaluate"]["evaluate"]["autoattack"]["batch_size"] = None
    record["protocol"]["autoattack"].update(batch_size=aa_batch, batch_size_source="free memory")
    record["metrics"]["autoattack"]["batch_size"] = aa_batch


def test_a_result_says_where_its_batch_size_came_from(tmp_path):
    path = write_result(tmp_path)
    record = json.loads(path.read_text())
    _auto_batch(record, 64)
    assert results.check_record(record) == []
    record["protocol"]["autoattack"]["batch_size_source"] = "preset"
    assert [e.rule for e in results.check_record(record)] == ["config"]
    record = json.loads(path.read_text())
    record["protocol"]["autoattack"]["batch_size_source"] = "free memory"  # the preset set 250
    assert [e.rule for e in results.check_record(record)] == ["config"]


def test_seeds_attacked_with_different_batching_are_not_pooled(tmp_path):
    runs = tmp_path / "runs"
    a, b = write_result(runs, seed=0), write_result(runs, seed=1)
    edit(a, lambda r: _auto_batch(r, 64))
    edit(b, lambda r: _auto_batch(r, 32))
    with pytest.raises(AggregationError, match="AutoAttack batching"):
        aggregate(runs, tmp_path / "out")
    # batches at least as large as the shard (here all 100 images) attack it in one piece: pooled
    edit(a, lambda r: _auto_batch(r, 128))
    edit(b, lambda r: _auto_batch(r, 256))
    df = aggregate(runs, tmp_path / "out")
    assert int(df.iloc[0]["n_seeds"]) == 2


def test_a_plumbing_preset_says_so_at_the_top_of_its_leaderboard(tmp_path):
    write_result(tmp_path / "runs")
    aggregate(tmp_path / "runs", tmp_path / "plumbing", purpose="plumbing")
    aggregate(tmp_path / "runs", tmp_path / "benchmark")
    md = (tmp_path / "plumbing" / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith("# Leaderboard") and "Plumbing only" in md[2]
    assert "Plumbing only" not in (tmp_path / "benchmark" / "leaderboard.md").read_text()
