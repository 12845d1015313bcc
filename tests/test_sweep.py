"""The gamma sweep selects on validation numbers only, ties to the smaller gamma."""
import json

import pandas as pd
import pytest
import torch

from benchmark.sweep import sweep_report


def fake_model(path, gamma, val_pgd, seed=0, sparsity=90.0):
    meta = {"dataset": "fashion-mnist", "arch": "small_cnn", "method": "hydra", "sparsity": sparsity,
            "seed": seed,
            "configs": {"prune": {"s2ap": None if gamma is None else {"gamma": gamma}}},
            "history": [{"epoch": 1, "val_pgd": val_pgd - 0.1, "val_clean": 0.5},
                        {"epoch": 2, "val_pgd": val_pgd, "val_clean": 0.6}],
            "search": {"mask_val": {"val_pgd": 0.3, "val_clean": 0.4}}}
    torch.save({"state_dict": {}, "masks": None, "meta": json.dumps(meta)}, path)
    return path


def test_selects_best_mean_validation_pgd_per_cell(tmp_path):
    files = [fake_model(tmp_path / "a.pt", 0.0, 0.50), fake_model(tmp_path / "b.pt", 0.02, 0.55),
             fake_model(tmp_path / "c.pt", 0.02, 0.45, seed=1), fake_model(tmp_path / "d.pt", 0.0, 0.52, seed=1),
             fake_model(tmp_path / "e.pt", 0.1, 0.53, sparsity=99.0),
             fake_model(tmp_path / "f.pt", 0.0, 0.40, sparsity=99.0)]
    table = sweep_report(files, tmp_path / "sweep.csv")
    chosen = table[table["selected"]]
    # sp90: gamma 0 has mean 0.51, gamma 0.02 has mean 0.50 -> gamma 0; sp99: gamma 0.1
    assert dict(zip(chosen["sparsity"], chosen["gamma"])) == {90.0: 0.0, 99.0: 0.1}
    assert (tmp_path / "sweep.md").is_file()
    assert pd.read_csv(tmp_path / "sweep.csv")["n_seeds"].tolist() == [2, 2, 1, 1]


def test_ties_go_to_the_smaller_gamma(tmp_path):
    files = [fake_model(tmp_path / "a.pt", 0.05, 0.5), fake_model(tmp_path / "b.pt", 0.01, 0.5)]
    table = sweep_report(files, tmp_path / "s.csv")
    assert table.loc[table["selected"], "gamma"].tolist() == [0.01]


def test_missing_validation_numbers_are_an_error(tmp_path):
    path = tmp_path / "a.pt"
    meta = {"dataset": "d", "arch": "a", "method": "hydra", "sparsity": 90, "seed": 0,
            "configs": {"prune": {"s2ap": {"gamma": 0.1}}}, "history": [], "search": {}}
    torch.save({"state_dict": {}, "masks": None, "meta": json.dumps(meta)}, path)
    with pytest.raises(ValueError, match="validation"):
        sweep_report([path], tmp_path / "s.csv")
