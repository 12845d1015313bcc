"""ImageNet is evaluated on RobustBench's 5,000-image list, read from the installed robustbench
package: the test split is exactly that list (in its order, labelled by train/'s class folders),
a val/ that lacks one of its files is an error naming the first one missing, and clean, PGD and
AutoAttack of the paper preset all read the whole list."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from benchmark.core import config as C
from benchmark.core import datasets as D
from benchmark.core import imagenet_list
from benchmark.core.errors import MachineError
from benchmark.planning import preflight

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory):
    """train/ with one tiny image per listed class (plus three classes the list leaves out, as
    ImageNet's 1,000 hold 3 more than the list's 997) and val/ with every listed file, tiny."""
    from PIL import Image

    base = tmp_path_factory.mktemp("imagenet")
    ids = imagenet_list.image_ids()
    wnids = sorted({e.split("/")[0] for e in ids} | {"n00000001", "n00000002", "n00000003"})
    img = Image.new("RGB", (8, 8), (120, 30, 200))
    for w in wnids:
        (base / "train" / w).mkdir(parents=True)
        img.save(base / "train" / w / "t.png")
    for e in ids:
        path = base / "val" / e
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="JPEG")
    return base, ids, wnids


def test_the_list_ships_with_robustbench_and_holds_5000_images_of_997_classes():
    ids = imagenet_list.image_ids()
    assert len(ids) == len(set(ids)) == 5000
    assert len({e.split("/")[0] for e in ids}) == 997
    assert imagenet_list.list_path().parts[-2:] == ("helper_files", "imagenet_test_image_ids.txt")


def test_the_test_split_is_the_list_in_its_order_labelled_by_train_folders(fake_imagenet):
    base, ids, wnids = fake_imagenet
    _, _, test = D.build_splits("imagenet", base / "data", val_size=1, imagenet_root=base)
    assert len(test) == 5000
    full = test.dataset
    assert [Path(p).relative_to(base / "val").as_posix() for p, _ in full.samples] == ids
    assert [y for _, y in full.samples] == [wnids.index(e.split("/")[0]) for e in ids]
    x, y = test[0]
    assert x.shape == (3, 224, 224) and y == wnids.index(ids[0].split("/")[0])


def test_a_val_tree_without_a_listed_file_names_the_first_missing_one(fake_imagenet, tmp_path):
    base, ids, _ = fake_imagenet
    gone = [base / "val" / ids[7], base / "val" / ids[42]]
    data = [p.read_bytes() for p in gone]
    for p in gone:
        p.unlink()
    try:
        with pytest.raises(D.DatasetNotFoundError, match=r"the first one missing") as exc:
            D.build_splits("imagenet", tmp_path, val_size=1, imagenet_root=base)
        assert str(gone[0]) in str(exc.value) and "entry 8" in str(exc.value)
        cfg = {"data": {"root": "data", "synthetic": False, "download": False,
                        "imagenet_root": str(base)}, "grid": {"datasets": ["imagenet"]}}
        problems = preflight.dataset_problems(cfg)
        assert len(problems) == 1 and str(gone[0]) in problems[0]
    finally:
        for p, b in zip(gone, data):
            p.write_bytes(b)
    assert preflight.dataset_problems(cfg) == []


def test_without_robustbench_the_error_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "robustbench" else real(name, *a))
    with pytest.raises(MachineError, match=r"robustbench is not installed.*pip install"):
        imagenet_list.image_ids()


def test_clean_pgd_and_autoattack_of_the_imagenet_preset_read_the_whole_list():
    cfg = C.validate(C.load_presets([REPO / "presets" / "paper_imagenet.yaml"]), search_dirs=[REPO])
    ev = cfg["evaluate"]
    assert cfg["data"]["imagenet_test"] == "robustbench" and cfg["data"]["test_subset"] is None
    assert ev["clean_n"] == ev["pgd_n"] == ev["autoattack"]["n_images"] == imagenet_list.N_IMAGES
