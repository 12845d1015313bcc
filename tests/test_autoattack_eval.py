import logging

import pytest
import torch
import torch.nn as nn
from pyautoattack import AutoAttack

import benchmark.evaluation.autoattack as aae
from benchmark.evaluation.autoattack import capture_autoattack_log, parse_log, resolve_attacks, run_autoattack
from benchmark.evaluation.protocol import prepare_for_eval


class Linear(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Quantised(Linear):
    """Rounds its input: zero gradients everywhere, so the gradient attacks mostly fail and the
    black-box Square attack breaks images APGD left -- a gradient-masking model in miniature."""

    def forward(self, x):
        return self.fc(torch.round(x.flatten(1) * 4) / 4)


def data(model, n, seed=1, wrong=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    for i in wrong:
        y[i] = (y[i] + 1) % 10
    return x, y


def bare(model, x, y, eps, seed=0, attacks=None):
    adv = AutoAttack(model, eps=eps, seed=seed, version="standard")
    if attacks is not None:
        adv.attacks_to_run = list(attacks)
    _, y_adv = adv.run_standard_evaluation(x, y)
    return y_adv == y


def test_subset_is_labelled_non_standard_and_matches_bare_call():
    m = prepare_for_eval(Linear())
    x, y = data(m, 8, wrong=(0,))
    rng = torch.get_rng_state()
    r = run_autoattack(m, x, y, eps=0.05, attacks=["apgd-ce"], seed=0, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)  # APGD's reseeding stays inside fork_rng
    assert r["standard"] is False and r["attacks"] == ["apgd-ce"] and r["version"] == "standard"
    assert r["flags"].dtype == torch.bool and r["flags"].shape == (8,)
    assert not r["flags"][0]  # misclassified clean image is never robust
    assert r["correct"] == int(r["flags"].sum()) and r["acc"] == pytest.approx(r["correct"] / 8)
    assert r["correct"] < 7  # this radius breaks the undefended model
    assert torch.equal(r["flags"], bare(m, x, y, 0.05, attacks=["apgd-ce"]))
    assert r["clean_acc"] == pytest.approx(7 / 8)
    # subset given out of order is run in the standard order
    assert resolve_attacks("standard", ["square", "apgd-ce"]) == (["apgd-ce", "square"], False)
    assert resolve_attacks("standard", None) == (["apgd-ce", "apgd-t", "fab-t", "square"], True)


@pytest.mark.slow
def test_standard_version_flags_lowering_after_apgd_and_warnings():
    m = prepare_for_eval(Quantised())
    x, y = data(m, 6)
    r = run_autoattack(m, x, y, eps=0.15, seed=0, progress=False)
    assert r["standard"] is True and r["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert r["lowered_after_apgd"] is True and "square" in r["lowered_by"]
    assert any("Square Attack has decreased" in w for w in r["warnings"])
    after = [r["robust_after"][a] for a in r["attacks"]]
    assert after == sorted(after, reverse=True) and after[-1] == pytest.approx(r["acc"])
    assert r["robust_after"]["square"] < r["robust_after"]["fab-t"]
    assert torch.equal(r["flags"], bare(m, x, y, 0.15))


def test_refusals():
    m = prepare_for_eval(Linear())
    x, y = data(m, 4)
    with pytest.raises(ValueError, match="seed"):
        run_autoattack(m, x, y, eps=0.1, seed=None, progress=False)
    with pytest.raises(ValueError, match="5 restarts"):
        run_autoattack(m, x, y, eps=0.1, version="custom", progress=False)
    with pytest.raises(ValueError, match="subset"):
        run_autoattack(m, x, y, eps=0.1, attacks=["fab"], progress=False)
    m.train()
    with pytest.raises(RuntimeError, match="training mode"):
        run_autoattack(m, x, y, eps=0.1, attacks=["apgd-ce"], progress=False)


def test_shard_resume_recomputes_only_missing_shards(tmp_path, monkeypatch):
    m = prepare_for_eval(Linear())
    x, y = data(m, 12, wrong=(3, 9))
    calls = []
    real = aae._run_shard

    def counting(adversary, xs, ys, *args, **kwargs):
        calls.append(xs.shape[0])
        return real(adversary, xs, ys, *args, **kwargs)

    monkeypatch.setattr(aae, "_run_shard", counting)
    kw = dict(eps=0.05, attacks=["apgd-ce"], seed=0, shard_size=4, state_dir=tmp_path,
              progress=False)
    first = run_autoattack(m, x, y, **kw)
    assert len(calls) == 3 and first["n_shards"] == 3
    files = sorted(tmp_path.glob("shard_*.json"))
    assert len(files) == 3
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporaries
    assert any("robust accuracy after APGD-CE" in line
               for line in aae.read_json(files[1])["log"])

    files[1].unlink()
    calls.clear()
    second = run_autoattack(m, x, y, **kw)
    assert calls == [4] and second["resumed_shards"] == 2
    assert torch.equal(first["flags"], second["flags"])
    assert second["correct"] == first["correct"] and second["robust_after"] == first["robust_after"]

    calls.clear()
    assert torch.equal(run_autoattack(m, x, y, **kw)["flags"], first["flags"]) and calls == []

    # a shard written under another eps is not trusted
    calls.clear()
    run_autoattack(m, x, y, **{**kw, "eps": 0.06})
    assert len(calls) == 3


def test_log_capture_reads_progress_and_restores_logger():
    logger = logging.getLogger("auto-attack")
    level, propagate, handlers = logger.level, logger.propagate, list(logger.handlers)
    m = prepare_for_eval(Linear())
    x, y = data(m, 4)
    with capture_autoattack_log() as cap:
        adv = AutoAttack(m, eps=0.05, seed=0, version="standard")
        adv.attacks_to_run = ["apgd-ce"]
        adv.run_standard_evaluation(x, y)
    msgs = [r.getMessage() for r in cap.records]
    assert any(msg.startswith("robust accuracy after APGD-CE") for msg in msgs)
    assert (logger.level, logger.propagate, logger.handlers) == (level, propagate, handlers)
    parsed = parse_log(msgs)
    assert set(parsed["robust_after_logged"]) == {"apgd-ce"}
    assert parsed["initial_logged"] == pytest.approx(100.0)


def test_parse_log_counts():
    lines = ["initial accuracy: 75.00%",
             "apgd-ce - 1/2 - 3 out of 250 successfully perturbed",
             "apgd-ce - 2/2 - 2 out of 10 successfully perturbed",
             "robust accuracy after APGD-CE: 62.50% (total time 1.0 s)",
             "square - 1/1 - 1 out of 4 successfully perturbed",
             "robust accuracy after SQUARE: 50.00% (total time 3.0 s)"]
    p = parse_log(lines)
    assert p["perturbed"] == {"apgd-ce": 5, "square": 1}
    assert p["robust_after_logged"] == {"apgd-ce": 62.5, "square": 50.0}
    assert p["initial_logged"] == 75.0


def test_records_what_each_attack_object_held_and_how_far_images_moved():
    m = prepare_for_eval(Linear())
    x, y = data(m, 8)
    r = run_autoattack(m, x, y, eps=0.2, attacks=["apgd-ce", "apgd-t"], seed=0, progress=False)
    assert set(r["attack_params"]) == {"apgd-ce", "apgd-t"}
    assert r["attack_params"]["apgd-ce"] == {"eps": 0.2, "norm": "Linf", "n_iter": 100,
                                             "n_restarts": 1}
    assert r["attack_params"]["apgd-t"]["n_target_classes"] == 9
    assert r["correct"] < 8 and 0 < r["max_perturbation"] <= 0.2 + 1e-6  # broke, inside the ball


def test_a_shard_run_at_another_eps_is_refused(monkeypatch):
    m = prepare_for_eval(Linear())
    x, y = data(m, 4)
    real = AutoAttack.__init__

    def halved(self, model, *a, eps=None, **kw):  # a wrapper that halves eps on the way
        real(self, model, *a, eps=eps / 2, **kw)

    monkeypatch.setattr(AutoAttack, "__init__", halved)
    with pytest.raises(RuntimeError, match="at eps 0.025, not the requested"):
        run_autoattack(m, x, y, eps=0.05, attacks=["apgd-ce"], seed=0, progress=False)


def test_progress_is_logged_per_shard_and_per_attack(caplog):
    m = prepare_for_eval(Linear())
    x, y = data(m, 8)
    with caplog.at_level(logging.INFO, logger="benchmark.evaluation.autoattack"):
        run_autoattack(m, x, y, eps=0.05, attacks=["apgd-ce"], seed=0, shard_size=4)
    text = caplog.text
    for shard in ("1/2 (images 0-4)", "2/2 (images 4-8)"):
        assert f"AutoAttack shard {shard}: started" in text
        assert f"AutoAttack shard {shard}: robust accuracy after APGD-CE" in text
        assert f"AutoAttack shard {shard}: apgd-ce - 1/1 - " in text
    assert "2/2 shards done" in text and "ETA" in text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="benchmark.evaluation.autoattack"):
        run_autoattack(m, x, y, eps=0.05, attacks=["apgd-ce"], seed=0, progress=False)
    assert "robust accuracy" not in caplog.text  # progress=False keeps it at DEBUG


def test_autoattack_module_does_not_import_the_evaluation_module():
    # evaluation builds on autoattack_eval; the reverse import made the two depend on each other
    import ast

    tree = ast.parse(open(aae.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "benchmark.evaluation.protocol" not in imported and "evaluation" not in imported
