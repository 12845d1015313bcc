"""The reference numbers: the AP benchmark shipped with the package, and the rule that pairs one of
our cells with a published one (every key, the structure label and the protocol included)."""
from __future__ import annotations

import math

import pytest

from benchmark.results import reference as R


@pytest.fixture(scope="module")
def ap():
    return R.load_reference()


def find(ref, **over):
    cell = dict(dataset="cifar10", arch="resnet18", method="hydra", s2ap="off",
                structure="unstructured", sparsity=90, eps=0.031, n_images=10000)
    cell.update(over)
    return R.match(ref, **cell)


def test_the_ap_benchmark_ships_with_its_citation(ap):
    ref, note = ap
    assert R.AP_BENCHMARK_CSV.is_file()
    assert R.AP_BENCHMARK_CSV.parent.name == "reference_data"
    assert "Piras et al. (2024)" in note and "arXiv 2409.01249" in note
    assert "pralab/AdversarialPruningBenchmark" in note
    assert len(ref) == 154
    assert set(ref["eps"]) == {0.031} and set(ref["n_images"]) == {10000}
    assert set(ref["autoattack_version"]) == {"standard"}
    assert set(ref["structure"]) == {"unstructured", "structured"}
    assert set(ref["dataset"]) == {"cifar10", "svhn"}


def test_an_original_cell_matches_its_published_numbers(ap):
    m = find(ap[0])
    assert m.matched and (m.clean, m.autoattack) == (76.74, 43.34)
    m = find(ap[0], method="harp", dataset="svhn", arch="vgg16_bn", sparsity=99)
    assert m.matched and m.clean == pytest.approx(ap[0][(ap[0]["dataset"] == "svhn") & (
        ap[0]["method"] == "HARP") & (ap[0]["arch"] == "vgg16_bn") & (ap[0]["sparsity"] == 99)
        & (ap[0]["structure"] == "unstructured")]["clean"].item())


def test_a_structured_cell_is_never_matched_to_an_unstructured_one(ap):
    structured = find(ap[0], method="harp", structure="structured", sparsity=90)
    unstructured = find(ap[0], method="harp", structure="unstructured", sparsity=90)
    assert structured.matched and unstructured.matched
    assert (structured.clean, structured.autoattack) != (unstructured.clean, unstructured.autoattack)
    # HYDRA has no structured cells: no fallback to its unstructured ones
    m = find(ap[0], structure="structured")
    assert not m.matched and "unstructured only" in m.detail
    # structured 50 % exists only structured
    assert not find(ap[0], method="harp", structure="unstructured", sparsity=50).matched


def test_a_cell_measured_under_another_protocol_has_no_counterpart(ap):
    for over in ({"eps": 8 / 255}, {"n_images": 100}, {"n_images": None}):
        m = find(ap[0], **over)
        assert not m.matched and m.clean is None, over
    assert "protocol differs" in find(ap[0], n_images=100).detail
    assert "10,000" in find(ap[0], n_images=100).detail


def test_only_the_published_variant_has_a_counterpart(ap):
    for s2ap in ("on", "score", "awp"):
        m = find(ap[0], s2ap=s2ap)
        assert not m.matched and "original method only" in m.detail
    assert not find(ap[0], method="dense", s2ap="n/a").matched


def test_method_names_map_through_one_table(ap):
    assert R.reference_method("hydra") == "HYDRA" and R.reference_method("rst") == "RST"
    assert find(ap[0], method="rst").matched
    m = find(ap[0], method="lamp", s2ap="n/a")
    assert not m.matched and "no unstructured LAMP cell" in m.detail
    m = find(ap[0], method="my_method")
    assert not m.matched and "METHOD_NAMES" in m.detail
    # our spelling only: the reference's own spelling is not one of our methods
    assert not find(ap[0], method="HYDRA").matched


def test_a_reference_without_protocol_columns_is_read_as_the_ap_benchmarks(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("# Someone 2025\ndataset,structure,method,arch,sparsity,clean,autoattack\n"
                    "cifar10,unstructured,HYDRA,resnet18,90,70.0,40.0\n")
    ref, note = R.load_reference(path)
    assert "Someone 2025" in note and "AP benchmark's protocol" in note
    assert find(ref).matched and not find(ref, n_images=500).matched


def test_a_reference_that_lacks_a_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("dataset,method,arch,sparsity,clean\ncifar10,HYDRA,resnet18,90,70\n")
    with pytest.raises(R.ReferenceFileError, match=r"ref\.csv lacks the column\(s\) \['structure', "
                                                   r"'autoattack'\]"):
        R.load_reference(path)


def test_leaderboard_rows_get_the_reference_only_where_it_matches(ap):
    rows = [{"dataset": "cifar10", "arch": "resnet18", "method": "hydra", "s2ap": s,
             "structure": "unstructured", "sparsity": 90.0, "eps": 0.031, "autoattack_n": n}
            for s, n in (("off", 10000), ("on", 10000), ("off", 100))]
    R.add_reference(rows, ap[0])
    assert rows[0]["ref_autoattack"] == 43.34
    assert math.isnan(rows[1]["ref_autoattack"]) and math.isnan(rows[2]["ref_clean"])


def test_inside_the_interval():
    assert R.inside(43.0, 40.0, 46.0) is True and R.inside(47.0, 40.0, 46.0) is False
    assert R.inside(None, 1.0, 2.0) is None and R.inside(1.0, math.nan, 2.0) is None
