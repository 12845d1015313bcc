"""A tampering matrix over a real result tree: the tiny preset (two seeds) is run once by the real
workflow in a committed copy of this checkout; each test copies that tree, changes one thing the
way a forger would (consistently, so the result rules of benchmark.core.result_file still pass), and the
publish command must refuse it with a message naming the file and the reason, without a
traceback. The untouched copy must pass, so every refusal is the tampering's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RUNS = Path("results/tiny/runs/fashion-mnist/small_cnn")
HYDRA0 = RUNS / "hydra/off/sp90/seed0.json"
HYDRA1 = RUNS / "hydra/off/sp90/seed1.json"
STATE = Path("work/tiny/state/evaluate/fashion-mnist/small_cnn")

pytestmark = pytest.mark.slow


def _sh(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")
def real_run(tmp_path_factory) -> Path:
    """A committed copy of this checkout (its tracked and untracked files) that ran tiny with two
    seeds: the results are made by this very code, from a clean tree, at HEAD."""
    root = tmp_path_factory.mktemp("tamper") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
        elif src.is_symlink():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), root / rel)
    preset = root / "presets" / "tiny.yaml"
    raw = yaml.safe_load(preset.read_text())
    raw["grid"]["seeds"] = [0, 1]
    # tiny is a plumbing preset, which publish refuses whatever its results: published as a
    # benchmark would be, every refusal below is the tampering's
    raw["purpose"] = "benchmark"
    preset.write_text(yaml.safe_dump(raw))
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "run"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    proc = _sh([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "presets/tiny.yaml"],
               root, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return root


def _copy(real_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    shutil.copytree(real_run, dst, symlinks=True)
    # the stamp names the folder the aggregation ran in: the copy is that folder now
    stamp = dst / "results/tiny/leaderboard.stamp.json"
    data = json.loads(stamp.read_text())
    data["cwd"] = str(dst)
    stamp.write_text(json.dumps(data))
    return dst


def _reaggregate(root: Path, *extra: Path) -> None:
    """The run's own aggregation again, over the tampered inputs (and ``extra`` result files):
    a forger's last step."""
    stamp = json.loads((root / "results/tiny/leaderboard.stamp.json").read_text())
    argv = list(stamp["argv"])
    argv[argv.index("--runs") + 1:argv.index("--runs") + 1] = [str(p) for p in extra]
    proc = _sh([sys.executable, "-m", "benchmark", *argv], root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((root / "results/tiny/leaderboard.stamp.json").read_text())
    data["cwd"] = str(root)
    (root / "results/tiny/leaderboard.stamp.json").write_text(json.dumps(data))


def _edit(root: Path, rel: Path, change) -> None:
    rec = json.loads((root / rel).read_text())
    change(rec)
    (root / rel).write_text(json.dumps(rec, indent=2))


def _raisable(rec: dict, metric: str) -> int | None:
    clean = rec["flags"]["clean"]
    return next((i for i, f in enumerate(rec["flags"][metric]) if f == "0" and clean[i] == "1"), None)


def _raise_one(root: Path, metric: str) -> None:
    """One more image robust to ``metric`` in the first result that has a clean-correct image
    the attack broke, consistently (counts, accuracy, per-attack accuracies)."""
    rel = next(r for r in sorted((root / RUNS).rglob("*.json"))
               if _raisable(json.loads(r.read_text()), metric) is not None)
    _edit(root, rel.relative_to(root), lambda rec: _raise_one_in(rec, metric))


def _raise_one_in(rec: dict, metric: str) -> None:
    i = _raisable(rec, metric)
    flags = list(rec["flags"][metric])
    flags[i] = "1"
    rec["flags"][metric] = "".join(flags)
    m = rec["metrics"][metric]
    m["correct"] += 1
    m["acc"] = m["correct"] / m["n"]
    if metric == "autoattack":
        m["robust_after"] = {a: m["acc"] for a in m["robust_after"]}


def seed_copied(root):
    # seed 1 replaced by seed 0's result and evidence, relabelled seed 1
    shutil.copyfile(root / HYDRA0, root / HYDRA1)
    _edit(root, HYDRA1, lambda r: r["cell"].update(seed=1))
    shutil.rmtree(root / STATE / "hydra/off/sp90/seed1")
    shutil.copytree(root / STATE / "hydra/off/sp90/seed0", root / STATE / "hydra/off/sp90/seed1")
    _reaggregate(root)


def cell_disagrees_with_path(root):
    _edit(root, HYDRA1, lambda r: r["cell"].update(s2ap="on"))
    _reaggregate(root)


def sparsity_edited(root):
    def change(r):
        sp = r["sparsity"]
        name = next(iter(sp["layers"]))
        layer = sp["layers"][name]
        layer["zeros"] += 1
        layer["sparsity"] = layer["zeros"] / layer["total"]
        sp["zeros"] += 1
        sp["kept_zero"] += 1
        sp["measured"] = sp["zeros"] / sp["total"]
    _edit(root, HYDRA0, change)
    _reaggregate(root)


def autoattack_raised(root):
    _raise_one(root, "autoattack")
    _reaggregate(root)


def pgd_raised(root):
    _raise_one(root, "pgd")
    _reaggregate(root)


def clean_raised(root):
    def change(r):
        flags = list(r["flags"]["clean"])
        i = flags.index("0")
        flags[i] = "1"
        r["flags"]["clean"] = "".join(flags)
        m = r["metrics"]["clean"]
        m["correct"] += 1
        m["acc"] = m["correct"] / m["n"]
    _edit(root, HYDRA0, change)
    _reaggregate(root)


def robust_after_forged(root):
    def change(r):
        aa = r["metrics"]["autoattack"]
        aa["robust_after"] = {a: min(1.0, v + 0.25) for a, v in aa["robust_after"].items()}
    _edit(root, HYDRA0, change)
    _reaggregate(root)


def evidence_deleted(root):
    shutil.rmtree(root / STATE / "hydra/off/sp90/seed0/autoattack")


def evidence_warning_dropped(root):
    for f in (root / STATE / "hydra/off/sp90/seed0/autoattack").glob("shard_*.json"):
        rec = json.loads(f.read_text())
        rec["warnings"] = ["the attack was stopped early"]
        f.write_text(json.dumps(rec))


def revision_forged(root):
    _edit(root, HYDRA0, lambda r: r["provenance"]["git"].update(revision="f" * 40))
    _reaggregate(root)


def code_hash_forged(root):
    _edit(root, HYDRA0, lambda r: r["provenance"].update(stage_code="0" * 16))
    _reaggregate(root)


def recorded_config_forged(root):
    _edit(root, HYDRA0, lambda r: r["config"]["finetune"]["train"].update(lr=0.5))
    _reaggregate(root)


def model_swapped(root):
    a = json.loads((root / HYDRA0).read_text())["model"]["path"]
    b = json.loads((root / HYDRA1).read_text())["model"]["path"]
    shutil.copyfile(root / b, root / a)


def symlink_to_a_device(root):
    (root / HYDRA0).unlink()
    os.symlink("/dev/zero", root / HYDRA0)


def symlink_to_a_copy(root):
    shutil.copyfile(root / HYDRA0, root / "elsewhere.json")
    (root / HYDRA0).unlink()
    os.symlink(root / "elsewhere.json", root / HYDRA0)


def deep_json(root):
    (root / HYDRA0).write_text("[" * 100_000 + "]" * 100_000)


def huge_json(root):
    with open(root / HYDRA0, "wb") as fh:
        fh.truncate(64 * 2 ** 20)


def nan_in_json(root):
    (root / HYDRA0).write_text((root / HYDRA0).read_text().replace('"acc": 0.', '"acc": NaN, "x": 0.', 1))


def result_outside_the_grid(root):
    extra = RUNS / "hydra/off/sp95/seed0.json"
    (root / extra).parent.mkdir(parents=True)
    shutil.copyfile(root / HYDRA0, root / extra)
    def change(r):
        r["cell"]["sparsity"] = 95
        r["sparsity"]["nominal"] = 0.95
    _edit(root, extra, change)
    _reaggregate(root, extra)


TAMPERINGS = [
    (seed_copied, "evaluated one and the same model file"),
    (cell_disagrees_with_path, "records another cell than its path: s2ap 'on'"),
    (sparsity_edited, "its recorded sparsity"),
    (autoattack_raised, "AutoAttack evidence: its AutoAttack per-image flags are not"),
    (pgd_raised, "per-image pgd results differ from the recorded ones"),
    (clean_raised, "per-image clean results differ from the recorded ones"),
    (robust_after_forged, "robust_after['apgd-ce']"),
    (evidence_deleted, "AutoAttack's per-shard records are missing"),
    (evidence_warning_dropped, "its AutoAttack warnings are not the ones"),
    (revision_forged, "made at revision ffffffffffff"),
    (code_hash_forged, "made by other stage code"),
    (recorded_config_forged, "its recorded finetune config is not the one its model file was made with"),
    (model_swapped, "is not the one it evaluated"),
    (symlink_to_a_device, "seed0.json"),
    (symlink_to_a_copy, "is a symbolic link"),
    (deep_json, "nested deeper than"),
    (huge_json, "more than the"),
    (nan_in_json, "NaN is not a JSON number"),
    (result_outside_the_grid, "is not a result of the preset's grid"),
]


def _publish_check(root: Path) -> subprocess.CompletedProcess:
    return _sh([sys.executable, "-m", "benchmark", "publish", "--preset", "tiny", "--check-only"], root)


def test_the_untouched_run_passes_every_check(real_run, tmp_path):
    root = _copy(real_run, tmp_path)
    proc = _publish_check(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every check passed" in proc.stdout


@pytest.mark.parametrize("tamper, message", [pytest.param(t, m, id=t.__name__) for t, m in TAMPERINGS])
def test_a_tampered_run_is_refused_with_the_reason_and_no_traceback(real_run, tmp_path, tamper, message):
    root = _copy(real_run, tmp_path)
    tamper(root)
    proc = _publish_check(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    assert "refusing to publish results/tiny" in out and message in out, out


@pytest.mark.parametrize("tamper", [symlink_to_a_device, deep_json, huge_json, nan_in_json],
                         ids=lambda t: t.__name__)
def test_the_aggregation_refuses_a_hostile_file_in_one_line(real_run, tmp_path, tamper):
    root = _copy(real_run, tmp_path)
    tamper(root)
    proc = _sh([sys.executable, "-m", "benchmark", "aggregate", "--runs", "results/tiny/runs",
                "--out", str(tmp_path / "board"), "--no-plots"], root)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "seed0.json" in out, out
