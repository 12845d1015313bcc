import math

import pytest
import torch

from benchmark.core.provenance import config_hash, provenance
from benchmark.core.stats import flags_to_str, mcnemar, str_to_flags, wilson_interval


@pytest.mark.parametrize("correct,n,expected", [
    (50, 100, (0.4038, 0.5962)),
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
    (81, 263, (0.2553, 0.3662)),  # Wilson (1927) worked example as quoted by Newcombe (1998)
])
def test_wilson_known_values(correct, n, expected):
    lo, hi = wilson_interval(correct, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_bounds_and_errors():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(1, 3, z=2.576)
    assert 0.0 <= lo < 1 / 3 < hi <= 1.0
    # a wider z gives a wider interval
    lo95, hi95 = wilson_interval(1, 3)
    assert lo < lo95 and hi > hi95
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_mcnemar_exact_values():
    a = "1" * 5 + "0" * 5
    # A right where B wrong on 0 images, B right where A wrong on 5: p = 2 * 0.5**5
    res = mcnemar("0" * 10, "1" * 5 + "0" * 5)
    assert (res["b"], res["c"]) == (0, 5)
    assert res["p_value"] == pytest.approx(0.0625)
    # b=1, c=9: p = 2 * (C(10,0) + C(10,1)) / 2**10
    fa = [True] + [False] * 9
    fb = [False] + [True] * 9
    res = mcnemar(fa, fb)
    assert (res["b"], res["c"]) == (1, 9)
    assert res["p_value"] == pytest.approx(2 * 11 / 1024)
    assert mcnemar(a, a)["p_value"] == 1.0
    # symmetric in its arguments and capped at 1
    assert mcnemar(fb, fa)["p_value"] == res["p_value"]
    assert mcnemar("10", "01")["p_value"] == 1.0


def test_mcnemar_large_n_does_not_overflow():
    a = torch.zeros(3000, dtype=torch.bool)
    b = torch.zeros(3000, dtype=torch.bool)
    a[:1400] = True
    b[1400:3000] = True
    p = mcnemar(a, b)["p_value"]
    assert 0.0 <= p < 1e-3 and math.isfinite(p)


def test_mcnemar_refuses_unpaired():
    with pytest.raises(ValueError):
        mcnemar("0101", "010")


def test_flag_strings_roundtrip():
    t = torch.tensor([True, False, False, True])
    s = flags_to_str(t)
    assert s == "1001"
    assert str_to_flags(s) == [True, False, False, True]
    assert torch.equal(str_to_flags(s, as_tensor=True), t)
    assert flags_to_str([1, 0]) == "10"
    assert flags_to_str("") == ""
    with pytest.raises(ValueError):
        str_to_flags("10x1")


def test_config_hash_ignores_seed_at_every_depth():
    a = {"train": {"lr": 0.1, "seed": 1}, "seed": 1, "eps": 0.031}
    b = {"eps": 0.031, "seed": 2, "train": {"seed": 7, "lr": 0.1}}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash({**a, "eps": 0.1})
    assert config_hash(a, exclude=()) != config_hash(b, exclude=())
    assert len(config_hash(a)) == 12


def test_provenance_fields(tmp_path):
    p = provenance()
    assert set(p) >= {"packages", "git", "platform", "device", "time_utc", "python"}
    assert p["packages"]["torch"] and p["packages"]["python"]
    assert p["time_utc"].endswith("+00:00")
    import platform
    assert platform.node() not in p["platform"] or not platform.node()
    # a folder that is no git checkout must not fail
    q = provenance(repo=tmp_path)
    assert q["git"]["revision"] == "unknown"
