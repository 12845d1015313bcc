"""Bad presets are refused before the first job, each with a message naming the field.

Every variant below is presets/tiny.yaml with one thing wrong (the first 13 are the late or silent
ones a hostile review found). Each goes through the real check path: ``config.validate`` (what the
Snakefile runs while it is parsed) and ``preflight.machine_problems(deep=True)`` (what the
workflow's ``onstart`` runs before the first job on this machine). A few also go through a real
``snakemake`` run, which must stop without starting a job; and dry runs of the machine-only ones
must stay plannable (a warning, exit 0).
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.core import config as C
from benchmark.core import strict_yaml
from benchmark.planning import preflight

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "presets" / "tiny.yaml"

# method files the variants name, written into the test's folder
METHOD_FILES = {
    "bad_import.py": """\
        import a_module_that_is_not_installed  # noqa: F401
        from benchmark.core.registry import register_method
        from methods.base import PruningMethod


        @register_method("bad_import")
        class BadImport(PruningMethod):
            pass
        """,
    "syntax_error.py": """\
        from benchmark.core.registry import register_method
        from methods.base import PruningMethod


        @register_method("broken")
        class Broken(PruningMethod)
            pass
        """,
    "non_literal.py": """\
        from benchmark.core.registry import register_method
        from methods.base import PruningMethod

        LEARNS = True


        @register_method("non_literal", learns_scores=LEARNS)
        class NonLiteral(PruningMethod):
            pass
        """,
    "not_a_method.py": """\
        from benchmark.core.registry import register_method


        @register_method("not_a_method")
        class NotAMethod:
            pass
        """,
}


def _set(cfg: dict, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[int(key)]
    node[leaf] = value


def v(name, changes, field, where="config"):
    """A variant: dotted-path changes to tiny, the field its message must name, and where it is
    caught (config: validation at parse time; machine: before the first job on this machine)."""
    return pytest.param(changes, field, where, id=name)


VARIANTS = [
    # ---- the 13 found late or never
    v("imagenet_root_missing", {"grid.datasets": ["imagenet"], "data.imagenet_root": "no/such/imagenet"},
      "data.imagenet_root", "machine"),
    v("device_cuda_without_cuda", {"runtime.device": "cuda"}, "runtime.device", "machine"),
    v("val_size_larger_than_data", {"data.val_size": 60000}, "data.val_size"),
    v("method_file_import_error", {"method_files": ["bad_import.py"],
                                   "grid.methods": ["hydra", "bad_import"]}, "method_files[0]", "machine"),
    v("override_typo", {"methods.hydra.prune.epoch": 1}, "methods.hydra.prune"),
    v("override_batch_size_0", {"methods.hydra.finetune.batch_size": 0},
      "methods.hydra.finetune.batch_size"),
    v("unknown_attack_name", {"evaluate.autoattack.attacks": ["apgd-xx"]}, "evaluate.autoattack.attacks"),
    v("missing_reference_file", {"reference_csv": "no/such/reference.csv"}, "reference_csv"),
    v("evaluate_eps_2", {"evaluate.eps": 2}, "evaluate.eps"),
    v("evaluate_eps_5", {"evaluate.eps": 5}, "evaluate.eps"),
    v("train_eps_2", {"pretrain.attack.eps": 2}, "pretrain.attack.eps"),
    v("prune_epochs_0", {"prune.epochs": 0}, "prune.epochs"),
    v("override_epochs_minus_1", {"methods.hydra.prune.epochs": -1}, "methods.hydra.prune.epochs"),
    # ---- more of each kind
    v("train_eps_5_in_override", {"methods.hydra.pretrain.attack.eps": 5},
      "methods.hydra.pretrain.attack.eps"),
    v("evaluate_eps_0", {"evaluate.eps": 0}, "evaluate.eps"),
    v("train_step_size_2", {"finetune.attack.step_size": 2}, "finetune.attack.step_size"),
    v("pgd_step_size_3", {"evaluate.pgd_step_size": 3}, "evaluate.pgd_step_size"),
    v("pretrain_epochs_0", {"pretrain.epochs": 0}, "pretrain.epochs"),
    v("finetune_epochs_0", {"finetune.epochs": 0}, "finetune.epochs"),
    v("override_finetune_epochs_0", {"methods.hydra.finetune.epochs": 0}, "methods.hydra.finetune.epochs"),
    v("override_prune_epochs_0", {"methods.hydra.prune.epochs": 0}, "methods.hydra.prune.epochs"),
    v("pretrain_batch_size_0", {"pretrain.batch_size": 0}, "pretrain.batch_size"),
    v("data_batch_size_0", {"data.batch_size": 0}, "data.batch_size"),
    v("evaluate_batch_size_0", {"evaluate.batch_size": 0}, "evaluate.batch_size"),
    v("autoattack_batch_size_0", {"evaluate.autoattack.batch_size": 0}, "evaluate.autoattack.batch_size"),
    v("s2ap_norm_elementwise", {"s2ap.norm": "elementwise"}, "s2ap.norm"),
    v("diagnostics_norm_elementwise", {"diagnostics.norm": "elementwise"}, "diagnostics.norm"),
    v("unknown_loss", {"pretrain.loss": "hinge"}, "pretrain.loss"),
    v("unknown_schedule", {"finetune.schedule": "linear"}, "finetune.schedule"),
    v("autoattack_version_custom", {"evaluate.autoattack.version": "custom"}, "evaluate.autoattack.version"),
    v("attack_outside_its_version", {"evaluate.autoattack.attacks": ["apgd-dlr"]},
      "evaluate.autoattack.attacks"),
    v("empty_attack_list", {"evaluate.autoattack.attacks": []}, "evaluate.autoattack.attacks"),
    v("override_s2ap_gamma_negative", {"methods.hydra.s2ap.gamma": -1}, "methods.hydra.s2ap.gamma"),
    v("override_s2ap_norm_elementwise", {"methods.hydra.s2ap.norm": "elementwise"}, "methods.hydra.s2ap.norm"),
    v("override_awp_typo", {"methods.hydra.awp.gama": 0.1}, "methods.hydra.awp"),
    v("override_unknown_section", {"methods.hydra.evaluate": {"eps": 0.1}}, "methods.hydra"),
    v("override_unknown_option", {"methods.hydra.options": {"k": 1}}, "methods.hydra.options", "machine"),
    v("override_of_unknown_method", {"methods.hydar.prune": {"epochs": 1}}, "methods (per-method overrides)"),
    v("sparsity_100", {"grid.sparsities": [100]}, "grid.sparsities"),
    v("unknown_s2ap_value", {"grid.s2ap": ["yes"]}, "grid.s2ap"),
    v("unknown_method", {"grid.methods": ["not_a_method"]}, "grid.methods"),
    v("unknown_dataset", {"grid.datasets": ["mnist"]}, "grid.datasets"),
    v("unknown_arch", {"grid.archs": ["resnet1000"]}, "grid.archs"),
    v("val_size_negative", {"data.val_size": -1}, "data.val_size"),
    v("train_subset_0", {"data.train_subset": 0}, "data.train_subset"),
    v("device_tpu", {"runtime.device": "tpu"}, "runtime.device"),
    v("device_cuda_9", {"runtime.device": "cuda:9"}, "runtime.device", "machine"),
    v("threads_0", {"runtime.threads": 0}, "runtime.threads"),
    v("dataset_not_on_disk", {"grid.datasets": ["cifar10"], "data.root": "no/such/data"}, "data.root",
      "machine"),
    v("method_file_missing", {"method_files": ["no_such_method.py"]}, "method_files[0]"),
    v("method_file_syntax_error", {"method_files": ["syntax_error.py"]}, "syntax_error.py:6"),
    v("method_file_non_literal_trait", {"method_files": ["non_literal.py"]}, "non_literal.py:7"),
    v("method_class_not_a_pruning_method", {"method_files": ["not_a_method.py"],
                                            "grid.methods": ["not_a_method"]}, "method_files[0]", "machine"),
    v("sweep_of_a_method_without_scores", {"grid.methods": ["hydra", "lwm"],
                                           "gamma_sweep": {"gammas": [0.0, 0.01], "methods": ["lwm"]}},
      "gamma_sweep.methods[0]"),
    v("sweep_gamma_negative", {"gamma_sweep": {"gammas": [-0.1]}}, "gamma_sweep.gammas"),
    v("sweep_without_a_positive_gamma", {"gamma_sweep": {"gammas": [0.0]}}, "gamma_sweep.gammas"),
    v("s2ap_warmup_2", {"s2ap.warmup": 2}, "s2ap.warmup"),
    v("width_0", {"model.width": 0}, "model.width"),
    v("bad_preset_name", {"name": "my preset!"}, "name"),
    # ---- issue 19: values that make a run meaningless, silent clamps, exact types
    v("name_with_trailing_newline", {"name": "tiny\n"}, "name"),
    v("suffix_with_trailing_newline", {"name_suffix": "-x\n"}, "name_suffix"),
    v("gamma_nan", {"s2ap.gamma": float("nan")}, "s2ap.gamma"),
    v("eps_nan", {"evaluate.eps": float("nan")}, "evaluate.eps"),
    v("lr_inf", {"finetune.lr": float("inf")}, "finetune.lr"),
    v("radius_minus_inf", {"diagnostics.radii": [float("-inf")]}, "diagnostics.radii[0]"),
    v("lr_0", {"pretrain.lr": 0}, "pretrain.lr"),
    v("override_lr_0", {"methods.hydra.prune.lr": 0}, "methods.hydra.prune.lr"),
    v("pgd_steps_0", {"evaluate.pgd_steps": 0}, "evaluate.pgd_steps"),
    v("seed_2_pow_32", {"grid.seeds": [2**32]}, "grid.seeds.0"),
    v("split_seed_2_pow_40", {"data.split_seed": 2**40}, "data.split_seed"),
    v("autoattack_seed_negative", {"evaluate.autoattack.seed": -1}, "evaluate.autoattack.seed"),
    v("epochs_1e9", {"pretrain.epochs": 10**9}, "pretrain.epochs"),
    v("clean_n_above_the_test_subset", {"evaluate.clean_n": 129}, "evaluate.clean_n"),
    v("pgd_n_above_the_test_set", {"data.test_subset": None, "evaluate.pgd_n": 10001}, "evaluate.pgd_n"),
    v("n_images_above_the_test_subset", {"evaluate.autoattack.n_images": 1000},
      "evaluate.autoattack.n_images"),
    v("unit_floor_maybe", {"methods.hydra.options": {"unit_floor": "maybe"}},
      "methods.hydra.options.unit_floor"),
    v("unit_floor_1", {"methods.hydra.options": {"unit_floor": 1}}, "methods.hydra.options.unit_floor"),
    v("s2ap_list_of_a_list", {"grid.s2ap": [["yes"]]}, "grid.s2ap"),
    v("download_yes_string", {"data.download": "yes"}, "data.download"),
    v("adv_eval_mode_1", {"pretrain.adv_eval_mode": 1}, "pretrain.adv_eval_mode"),
    v("loss_not_a_string", {"pretrain.loss": 1}, "pretrain.loss"),
    v("data_root_is_a_file", {"data.root": "ref.csv"}, "data.root", "machine"),
]
THE_13 = ["imagenet_root_missing", "device_cuda_without_cuda", "val_size_larger_than_data",
          "method_file_import_error", "override_typo", "override_batch_size_0", "unknown_attack_name",
          "missing_reference_file", "evaluate_eps_2", "evaluate_eps_5", "train_eps_2", "prune_epochs_0",
          "override_epochs_minus_1"]
GOOD = [
    pytest.param({}, id="tiny_itself"),
    pytest.param({"grid.methods": ["rst", "lwm"], "methods.rst.finetune.epochs": 0,
                  "methods.lwm.prune.epochs": 0}, id="zero_epochs_where_a_stage_does_not_run"),
    pytest.param({"s2ap.norm": "adaptive", "diagnostics.norm": "linf"}, id="every_documented_norm"),
    pytest.param({"evaluate.autoattack.attacks": ["apgd-ce", "square"]}, id="attack_subset"),
    pytest.param({"evaluate.autoattack.version": "rand", "evaluate.autoattack.attacks": ["apgd-dlr"]},
                 id="subset_of_another_version"),
    pytest.param({"evaluate.eps": 1, "pretrain.attack.eps": 0.031}, id="eps_at_the_bounds"),
    pytest.param({"methods.hydra.prune": {"lr": 0.2}, "methods.hydra.s2ap": {"gamma": 0.1}},
                 id="partial_overrides"),
    pytest.param({"data.root": "somewhere/else", "data.num_workers": 3}, id="data_moved"),
    pytest.param({"reference_csv": "ref.csv"}, id="reference_present"),
    pytest.param({"method_files": [str(REPO / "examples" / "my_method.py")],
                  "grid.methods": ["hydra", "hydra_global"]}, id="example_method_file"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name, text in METHOD_FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "ref.csv").write_text("method,acc\n")
    return tmp_path


def tiny_with(changes: dict) -> dict:
    # through JSON: tiny's YAML anchors make its stages share one attack dict
    raw = json.loads(json.dumps(strict_yaml.load_file(TINY)))
    for dotted, value in changes.items():
        _set(raw, dotted, copy.deepcopy(value))
    return raw


def check(raw: dict, workdir: Path) -> tuple[str, str] | None:
    """(where, message) of the first refusal on the real check path, or None when accepted."""
    search_dirs = [workdir, REPO]
    try:
        cfg = C.validate(C.with_defaults(raw), search_dirs=search_dirs)
    except ValueError as exc:
        return "config", str(exc)
    problems = preflight.machine_problems(cfg, search_dirs, deep=True, workdir=workdir)
    return ("machine", "\n".join(problems)) if problems else None


@pytest.mark.parametrize("changes,field,where", VARIANTS)
def test_bad_preset_is_refused_naming_the_field(workdir, changes, field, where):
    if "cuda" in str(changes.get("runtime.device")) and torch.cuda.device_count() > 9:
        pytest.skip("this machine has the CUDA devices the variant asks for")
    if changes.get("runtime.device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused = check(tiny_with(changes), workdir)
    assert refused is not None, "accepted"
    assert refused[0] == where, refused
    # the field leads a line of the message: "<field>: ..." or "<field>[i]: ..." or "<file>:<line>"
    assert re.search(rf"(^|\s|/){re.escape(field)}(\[\d+\])?(\.\d+)?:", refused[1], re.M), refused[1]


@pytest.mark.parametrize("changes", GOOD)
def test_good_preset_passes_every_check(workdir, changes):
    assert check(tiny_with(changes), workdir) is None


def test_the_fuzz_set_has_the_13_and_at_least_40_variants():
    ids = [p.id for p in VARIANTS]
    assert len(ids) == len(set(ids)) >= 40
    assert set(THE_13) <= set(ids)


# ------------------------------------------------------------------ through Snakemake itself
def _snakemake(workdir: Path, preset: Path, *args: str) -> subprocess.CompletedProcess:
    # --configfile last: it takes every word after it
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", *args, "--configfile", str(preset)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir)


def _write(workdir: Path, changes: dict) -> Path:
    preset = workdir / "variant.yaml"
    preset.write_text(yaml.safe_dump(tiny_with(changes)))
    return preset


def _assert_no_job_started(workdir: Path) -> None:
    # a job's log is its first trace; its outputs and checkpoints live under work/ and results/
    assert not (workdir / "work").exists() and not (workdir / "results").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("changes,field", [
    pytest.param({"runtime.device": "cuda:9"}, "runtime.device", id="device_cuda_9"),
    pytest.param({"method_files": ["bad_import.py"], "grid.methods": ["hydra", "bad_import"]},
                 "method_files[0]", id="method_file_import_error"),
    pytest.param({"grid.datasets": ["imagenet"], "data.imagenet_root": "no/such/imagenet"},
                 "data.imagenet_root", id="imagenet_root_missing"),
])
def test_machine_problem_stops_a_real_run_before_its_first_job(workdir, changes, field):
    preset = _write(workdir, changes)
    proc = _snakemake(workdir, preset)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "no job was started" in out and f"{field}:" in out, out[-3000:]
    _assert_no_job_started(workdir)
    # ... while a dry run plans the preset and shows the problem as a warning
    if field != "method_files[0]":  # importing a method file is not a dry run's business
        proc = _snakemake(workdir, preset, "-n")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert f"warning: {field}:" in out, out[-3000:]
    _assert_no_job_started(workdir)


@pytest.mark.e2e
@pytest.mark.parametrize("changes,field", [
    pytest.param({"prune.epochs": 0}, "prune.epochs", id="prune_epochs_0"),
    pytest.param({"methods.hydra.prune.epochs": -1}, "methods.hydra.prune.epochs", id="override_epochs_minus_1"),
])
def test_config_problem_stops_a_real_run_at_parse_time(workdir, changes, field):
    proc = _snakemake(workdir, _write(workdir, changes))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"{field}:" in out, out[-3000:]
    _assert_no_job_started(workdir)


@pytest.mark.e2e
def test_a_cluster_submission_reports_machine_problems_as_warnings(workdir):
    """The submitting machine (a login node) need not have the GPU the jobs will get."""
    import importlib.util

    if importlib.util.find_spec("snakemake_executor_plugin_cluster_generic") is None:
        pytest.skip("snakemake-executor-plugin-cluster-generic not installed")
    preset = _write(workdir, {"runtime.device": "cuda:9"})
    target = "results/tiny/runs/fashion-mnist/small_cnn/dense/n-a/sp0/seed0.json"
    proc = _snakemake(workdir, preset, target, "--profile",
                      str(REPO / "workflows" / "profiles" / "cluster-generic-local"))
    out = proc.stdout + proc.stderr
    assert "warning: runtime.device: 'cuda:9'" in out and "jobs run on the cluster" in out, out[-3000:]
    assert "no job was started" not in out
    # the job was submitted (and, on this machine without that GPU, failed in the job itself)
    assert (workdir / "work" / "tiny" / "logs" / "pretrain").is_dir(), out[-3000:]


# ------------------------------------------------------------------ the YAML text itself
_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else '1, 1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
                for i in range(9))
YAML_VARIANTS = [
    # (id, edit of tiny's text, words the one-line message must hold)
    ("duplicate_top_key", lambda t: t.replace("name: tiny\n", "name: tiny\nname: other\n"),
     ["duplicate key 'name'", ":6:"]),
    ("duplicate_nested_key", lambda t: t.replace("  pgd_steps: 5\n", "  pgd_steps: 5\n  pgd_steps: 50\n"),
     ["duplicate key 'pgd_steps'"]),
    ("gamma_dot_nan", lambda t: t.replace("gamma: 0.02", "gamma: .nan"), ["'.nan' is not a finite number"]),
    ("eps_dot_inf", lambda t: t.replace("  eps: 0.1\n", "  eps: .inf\n"), ["'.inf' is not a finite"]),
    ("alias_bomb", lambda t: t + _BOMB + "bomb: *l8\n", ["alias"]),
    ("recursive_nesting", lambda t: t + "deep: " + "[" * 200 + "]" * 200 + "\n", ["nested"]),
    ("python_object_tag", lambda t: t.replace("description:", "x: !!python/object/apply:os.system [ls]\n"
                                               "description:"), ["not valid YAML"]),
    ("s2ap_yes_word", lambda t: t.replace('s2ap: ["off"]', "s2ap: [yes]"), ["grid.s2ap", "'yes'"]),
    ("s2ap_true", lambda t: t.replace('s2ap: ["off"]', "s2ap: [true]"), ["grid.s2ap", "boolean"]),
    ("unit_floor_maybe", lambda t: t.replace("methods: {}", "methods: {hydra: {options: {unit_floor: maybe}}}"),
     ["methods.hydra.options.unit_floor"]),
    ("download_yes", lambda t: t.replace("download: false", "download: yes"), ["data.download"]),
    ("not_a_mapping", lambda t: "- just\n- a list\n", ["must be a YAML mapping"]),
    ("not_yaml", lambda t: t.replace("grid:", "grid: [unclosed"), ["not valid YAML"]),
]


@pytest.mark.parametrize("edit,words", [pytest.param(e, w, id=i) for i, e, w in YAML_VARIANTS])
def test_malformed_yaml_is_refused_with_one_clear_line(tmp_path, edit, words):
    preset = tmp_path / "variant.yaml"
    preset.write_text(edit(TINY.read_text()))
    with pytest.raises(ValueError) as err:
        C.validate(C.load_presets([preset]), search_dirs=[tmp_path, REPO])
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "Traceback" not in message and len(message) < 2000


def test_not_utf8_preset_is_refused(tmp_path):
    preset = tmp_path / "variant.yaml"
    preset.write_bytes(TINY.read_bytes() + b"\nx: \xff\xfe\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        C.load_presets([preset])


def test_anchors_and_merge_keys_of_the_presets_still_load():
    for preset in sorted((REPO / "presets").glob("*.yaml")):
        assert C.load_preset(preset) == C.finish_name(
            C.with_defaults(json.loads(json.dumps(yaml.safe_load(preset.read_text())))), preset.stem)


@pytest.mark.parametrize("i", [4, 7])
def test_a_bad_preset_gives_one_line_and_no_traceback_on_the_command_line(tmp_path, i):
    _, edit, words = YAML_VARIANTS[i]
    preset = tmp_path / "variant.yaml"
    preset.write_text(edit(TINY.read_text()))
    proc = subprocess.run([sys.executable, "-m", "benchmark", "estimate", "--configfile", str(preset)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "error:" in out, out
