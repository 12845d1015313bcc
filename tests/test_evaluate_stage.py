"""The evaluation stage end to end: what it attacks, at which eps, on which images, with which
attacks; the sparsity it reports; the structure label; the progress it logs.

A tiny dense model is trained once through the real pretrain stage on Fashion-MNIST; the
evaluation then goes through the real ``stages.evaluate`` path. The attacks are watched from
outside the suite's code: a global forward pre-hook sees every input the model receives (its
L-inf distance to the nearest of the preset's test images), and a wrapper around pyautoattack's
``run_standard_evaluation`` sees the images, the attack list and the eps of every attack object.
A change anywhere between the preset and the attack call that runs an attack at another eps, on
other images or with other attacks fails these tests.
"""
import copy
import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from pyautoattack import AutoAttack

from benchmark.core import config as C
from benchmark.core import masking
from benchmark.core.datasets import build_splits
from benchmark.core.io import atomic_torch_save
from benchmark.core.masking import SparsityError
from benchmark.core.result_file import read_result
from benchmark.evaluation.autoattack import ATTACK_OBJECTS
from benchmark.evaluation.protocol import image_sums, images_digest
from benchmark.results.aggregate import aggregate, read_leaderboard
from benchmark.training import stages

DATASET, ARCH = "fashion-mnist", "small_cnn"
EPS = 0.05  # not the dataset's default (0.1): an evaluation that ignores the preset shows
ATTACKS = ["apgd-ce", "apgd-t"]
WIDTH = 0.5  # the tiny preset's


def preset(root):
    cfg = copy.deepcopy(C.load_preset(Path(__file__).resolve().parent.parent / "presets" / "tiny.yaml"))
    cfg["data"]["root"] = str(root)
    assert cfg["model"]["width"] == WIDTH
    cfg["evaluate"]["eps"] = EPS
    cfg["evaluate"]["autoattack"]["attacks"] = ATTACKS
    return cfg


def cell(method="dense", s2ap="n/a", sparsity=0.0):
    return {"dataset": DATASET, "arch": ARCH, "method": method, "s2ap": s2ap,
            "sparsity": float(sparsity), "seed": 0, "preset": "tiny"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(preset, dense.pt) from the real pretrain stage."""
    root = tmp_path_factory.mktemp("stage")
    cfg = preset(root / "data")
    dense = root / "dense.pt"
    stages.pretrain(C.stage_config(cfg, "pretrain", dataset=DATASET, arch=ARCH), dataset=DATASET,
                    arch=ARCH, seed=0, out=dense)
    return cfg, dense


def evaluate(cfg, model, out, attacks=("apgd-ce",), **cell_kw):
    """The evaluation stage; APGD-CE alone unless a test needs the preset's full attack list
    (APGD-T's nine target classes cost seconds)."""
    cfg = copy.deepcopy(cfg)
    cfg["evaluate"]["autoattack"]["attacks"] = list(attacks)
    return stages.evaluate(C.stage_config(cfg, "evaluate", dataset=DATASET, arch=ARCH),
                           model_path=model, cell=cell(**cell_kw), out=out)


class Watch:
    """Every input of the model (its Normalized wrapper), as (phase, distance to the nearest
    reference image, index of that image); the phase is 'autoattack' inside pyautoattack."""

    def __init__(self, images):
        self.images = images
        self.ref = images.flatten(1)
        self.phase = "clean+pgd"
        self.seen = {"clean+pgd": [], "autoattack": []}
        self.aa_calls = []

    def hook(self, module, args):
        if type(module).__name__ != "Normalized":
            return
        x = args[0].detach().cpu().flatten(1).float()
        dist, idx = torch.cdist(x, self.ref, p=float("inf")).min(dim=1)
        self.seen[self.phase].append((dist, idx))

    def stats(self, phase):
        dist = torch.cat([d for d, _ in self.seen[phase]])
        idx = torch.cat([i for _, i in self.seen[phase]])
        return dist, idx


@pytest.fixture
def watch(trained, monkeypatch):
    cfg, _ = trained
    ev = cfg["evaluate"]
    _, _, test = build_splits(DATASET, cfg["data"]["root"], val_size=cfg["data"]["val_size"],
                              test_subset=cfg["data"]["test_subset"], augment=False)
    # the preset's images, read independently of the stage: the first clean_n of the test set
    ref = torch.stack([test[i][0] for i in range(ev["clean_n"])])
    w = Watch(ref)
    w.labels = torch.tensor([int(test[i][1]) for i in range(ev["clean_n"])])
    real = AutoAttack.run_standard_evaluation

    def spied(self, x, y, **kw):
        w.aa_calls.append({
            "x": x.detach().cpu().clone(), "attacks": list(self.attacks_to_run),
            "epsilon": self.epsilon,
            "eps": {a: getattr(self, ATTACK_OBJECTS[a]).eps for a in self.attacks_to_run}})
        w.phase = "autoattack"
        try:
            return real(self, x, y, **kw)
        finally:
            w.phase = "clean+pgd"

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", spied)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(w.hook)
    yield w
    handle.remove()


@pytest.mark.slow
def test_attacks_run_at_the_presets_eps_on_its_images_with_its_attacks(trained, watch, tmp_path):
    cfg, dense = trained
    ev = cfg["evaluate"]
    clean_n, pgd_n, aa_n = ev["clean_n"], ev["pgd_n"], ev["autoattack"]["n_images"]
    record = evaluate(cfg, dense, tmp_path / "r.json", attacks=ATTACKS)

    # clean and PGD: every input is one of the first clean_n images or a PGD iterate of one of
    # the first pgd_n images, at most eps away, and PGD reaches the border of the ball
    dist, idx = watch.stats("clean+pgd")
    assert float(dist.max()) == pytest.approx(EPS, abs=1e-5)
    attacked = dist > 1e-6
    assert attacked.any() and int(idx[attacked].max()) < pgd_n
    assert set(idx[~attacked].tolist()) == set(range(clean_n))

    # AutoAttack: called on exactly the first aa_n images, with the preset's attacks, every
    # attack object at the preset's eps; its inputs stay within eps of those images and reach it
    assert len(watch.aa_calls) == 1  # one shard of 8
    call = watch.aa_calls[0]
    assert torch.equal(call["x"], watch.images[:aa_n])
    assert call["attacks"] == ATTACKS
    assert call["epsilon"] == EPS and call["eps"] == {a: EPS for a in ATTACKS}
    dist, idx = watch.stats("autoattack")
    assert float(dist.max()) == pytest.approx(EPS, abs=1e-5)
    assert int(idx.max()) < aa_n

    # the flags belong to those images, in order
    model = stages.build_plain_model(ARCH, stages.dataset_info(DATASET), cfg["model"])
    model.load_state_dict(torch.load(dense, weights_only=True)["state_dict"])
    with torch.no_grad():
        right = model.eval()(watch.images).argmax(1) == watch.labels
    assert record["flags"]["clean"] == "".join("1" if r else "0" for r in right.tolist())
    for name, n in (("clean", clean_n), ("pgd", pgd_n), ("autoattack", aa_n)):
        assert record["metrics"][name]["images_digest"] == images_digest(
            image_sums(watch.images[:n]), watch.labels[:n]), name

    # the record says the same, and passes the reader's checks
    assert read_result(tmp_path / "r.json") == record
    m = record["metrics"]
    assert record["eps"] == EPS and m["pgd"]["eps"] == EPS and m["autoattack"]["eps"] == EPS
    assert {a: p["eps"] for a, p in m["autoattack"]["attack_params"].items()} == \
        {a: EPS for a in ATTACKS}
    assert m["pgd"]["max_perturbation"] == pytest.approx(EPS, abs=1e-5)
    assert (m["clean"]["n"], m["pgd"]["n"], m["autoattack"]["n"]) == (clean_n, pgd_n, aa_n)
    assert m["autoattack"]["attacks"] == ATTACKS and m["autoattack"]["standard"] is False
    assert record["structure"] == "unstructured" and record["sparsity"]["mask"] is None


@pytest.mark.slow
def test_autoattack_progress_reaches_the_log_while_it_runs(trained, watch, tmp_path, caplog):
    cfg, dense = trained
    during = []

    class Probe(logging.Handler):
        def emit(self, rec):
            if "robust accuracy after APGD-CE" in rec.getMessage():
                during.append(watch.phase == "autoattack")

    probe = Probe(logging.INFO)
    logging.getLogger("benchmark.evaluation.autoattack").addHandler(probe)
    try:
        with caplog.at_level(logging.INFO, logger="benchmark"):
            evaluate(cfg, dense, tmp_path / "r.json")
    finally:
        logging.getLogger("benchmark.evaluation.autoattack").removeHandler(probe)
    assert during == [True]  # logged inside pyautoattack's run, not after it
    text = caplog.text
    assert "AutoAttack shard 1/1 (images 0-8): started" in text
    assert "apgd-ce - 1/1 - " in text and "ETA" in text
    assert "PGD-5 at eps 0.05" in text


def _with_masks(src, dst, masks, granularity="weight", state=None):
    ckpt = torch.load(src, weights_only=True)
    meta = json.loads(ckpt["meta"])
    meta["granularity"] = granularity
    atomic_torch_save({"state_dict": state or ckpt["state_dict"], "masks": masks,
                       "meta": json.dumps(meta)}, dst)


def _magnitude_masks(state, keep):
    model = stages.build_plain_model(ARCH, stages.dataset_info(DATASET), {"width": WIDTH})
    model.load_state_dict(state)
    return {name: masking.topk_mask(layer.weight, keep).bool()
            for name, layer in masking.prunable_layers(model)}


def test_dense_weights_with_a_90_percent_mask_are_refused(trained, tmp_path):
    cfg, dense = trained
    state = torch.load(dense, weights_only=True)["state_dict"]
    _with_masks(dense, tmp_path / "m.pt", _magnitude_masks(state, 0.1))
    with pytest.raises(SparsityError, match="outside its mask are non-zero"):
        evaluate(cfg, tmp_path / "m.pt", tmp_path / "r.json", method="hydra", s2ap="off",
                 sparsity=90)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_sparsity_is_measured_on_the_weights_masks_none_or_not(trained, tmp_path):
    cfg, dense = trained
    state = torch.load(dense, weights_only=True)["state_dict"]
    masks = _magnitude_masks(state, 0.1)
    pruned = {k: v * masks[k.rsplit(".", 1)[0]] if k.rsplit(".", 1)[0] in masks
              and k.endswith("weight") else v for k, v in state.items()}
    _with_masks(dense, tmp_path / "with.pt", masks, state=pruned)
    _with_masks(dense, tmp_path / "none.pt", None, state=pruned)
    kw = dict(method="hydra", s2ap="off", sparsity=90)
    with_masks = evaluate(cfg, tmp_path / "with.pt", tmp_path / "a.json", **kw)["sparsity"]
    without = evaluate(cfg, tmp_path / "none.pt", tmp_path / "b.json", **kw)["sparsity"]
    assert with_masks["measured"] == without["measured"] == pytest.approx(0.9, abs=0.002)
    assert with_masks["mask"]["sparsity"] == pytest.approx(0.9, abs=0.002)
    assert without["mask"] is None


def test_nan_weights_and_a_wrong_shape_mask_are_refused(trained, tmp_path):
    cfg, dense = trained
    state = torch.load(dense, weights_only=True)["state_dict"]
    broken = dict(state)
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    broken[key] = state[key].clone()
    broken[key][0, 0, 0, 0] = float("nan")
    _with_masks(dense, tmp_path / "nan.pt", None, state=broken)
    with pytest.raises(SparsityError, match="NaN or infinite"):
        evaluate(cfg, tmp_path / "nan.pt", tmp_path / "r.json")
    masks = {k: torch.ones_like(v, dtype=torch.bool) for k, v in
             _magnitude_masks(state, 1.0).items()}
    name = key.rsplit(".", 1)[0]
    masks[name] = masks[name][:, :, :1, :1]  # would broadcast against the weight
    _with_masks(dense, tmp_path / "shape.pt", masks)
    with pytest.raises(SparsityError, match="has shape"):
        evaluate(cfg, tmp_path / "shape.pt", tmp_path / "r.json", method="hydra", s2ap="off",
                 sparsity=90)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_structured_label_survives_from_the_method_to_the_leaderboard(trained, tmp_path):
    cfg, dense = trained
    cfg = copy.deepcopy(cfg)
    cfg["methods"] = {"harp": {"options": {"structured": True}}}
    kw = dict(dataset=DATASET, arch=ARCH, method="harp", s2ap="off", sparsity=50.0, seed=0)
    stages.prune(C.stage_config(cfg, "prune", dataset=DATASET, arch=ARCH, method="harp", s2ap="off"),
                 dense=dense, out=tmp_path / "search.pt", **kw)
    stages.finetune(C.stage_config(cfg, "finetune", dataset=DATASET, arch=ARCH, method="harp",
                                   s2ap="off"), search=tmp_path / "search.pt",
                    out=tmp_path / "model.pt", **kw)
    runs = tmp_path / "runs"
    record = evaluate(cfg, tmp_path / "model.pt", runs / "harp.json", method="harp", s2ap="off",
                      sparsity=50)
    evaluate(cfg, dense, runs / "dense.json")
    assert record["structure"] == "structured"
    assert record["sparsity"]["measured"] > 0.3  # whole channels are zero in the exported model
    # the search's report travels to the result: a learned mask, projected or not, and on what
    assert record["search"]["learns_scores"] is True and record["search"]["budget"] == "flops"
    assert isinstance(record["search"]["projected"], bool)
    # the majority class's share of the validation slice and of the clean test images
    _, val, test = build_splits(DATASET, cfg["data"]["root"], val_size=cfg["data"]["val_size"],
                                train_subset=cfg["data"]["train_subset"], augment=False)
    n = record["metrics"]["clean"]["n"]
    test_labels = [int(test[i][1]) for i in range(n)]
    val_labels = [int(val[i][1]) for i in range(len(val))]
    assert record["class_balance"] == {
        "val_majority_share": max(map(val_labels.count, set(val_labels))) / len(val_labels),
        "test_majority_share": max(map(test_labels.count, set(test_labels))) / n}
    aggregate(runs, tmp_path / "out")
    board = read_leaderboard(tmp_path / "out" / "leaderboard.csv")
    assert dict(zip(board["method"], board["structure"])) == {"dense": "unstructured",
                                                              "harp": "structured"}


def test_a_pruned_model_without_granularity_is_refused(trained, tmp_path):
    cfg, dense = trained
    ckpt = torch.load(dense, weights_only=True)
    masks = {k: torch.ones_like(v, dtype=torch.bool)
             for k, v in _magnitude_masks(ckpt["state_dict"], 1.0).items()}
    atomic_torch_save({**ckpt, "masks": masks}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="names no mask granularity"):
        evaluate(cfg, tmp_path / "old.pt", tmp_path / "r.json", method="hydra", s2ap="off",
                 sparsity=90)


def test_channel_declared_mask_that_cuts_a_channel_in_part_is_refused():
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    net[0].weight.data[0, 0, 0, 0] = 0.0
    mask = torch.ones_like(net[0].weight, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    assert masking.measure_sparsity(net, {"0": mask}, "weight")["zeros"] == 1
    with pytest.raises(SparsityError, match="part of an output channel"):
        masking.measure_sparsity(net, {"0": mask}, "channel")
