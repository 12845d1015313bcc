"""Hostile submissions: files that are links, devices or folders, paths that leave the folder,
names with a newline, safetensors headers that lie about their bytes, dtypes other than the
architecture's, NaN and infinite weights, YAML bombs and duplicate keys. Each is refused before
evaluation with a SubmissionError naming the reason, and the submit command prints one line
and no traceback."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_submission import entry, make_submission, sha  # noqa: F401  (entry is a fixture)

from benchmark.publishing.submission import REASONS, SubmissionError, submit

REPO = Path(__file__).resolve().parent.parent


def _state(ent) -> dict:
    return {k: v.clone().contiguous() for k, v in ent["net"].state_dict().items()}


def _safetensors(path: Path, state: dict) -> Path:
    save_file(state, str(path))
    return path


def _rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def _resign(folder: Path) -> None:
    """A submitter who hashed the file as it is now: the checksum passes."""
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["model"]["sha256"] = sha(folder / spec["model"]["file"])
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))


def _first_float(header: dict) -> str:
    return next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")


# ---------------------------------------------------------------- the variants
def model_is_a_link_inside(ent, tmp):
    folder = make_submission(tmp, "link-inside", ent["safetensors"])
    (folder / "real.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (folder / "model.safetensors").unlink()
    os.symlink("real.safetensors", folder / "model.safetensors")
    return folder


def model_is_a_link_outside(ent, tmp):
    folder = make_submission(tmp, "link-outside", ent["safetensors"])
    (folder / "model.safetensors").unlink()
    os.symlink(ent["safetensors"], folder / "model.safetensors")
    return folder


def model_is_a_link_to_a_device(ent, tmp):
    folder = make_submission(tmp, "link-device", ent["safetensors"])
    (folder / "model.safetensors").unlink()
    os.symlink("/dev/zero", folder / "model.safetensors")
    return folder


def model_is_a_fifo(ent, tmp):
    folder = make_submission(tmp, "fifo", ent["safetensors"])
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    return folder


def model_is_a_folder(ent, tmp):
    folder = make_submission(tmp, "folder", ent["safetensors"])
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()
    return folder


def model_file_dot_dot(ent, tmp):
    return make_submission(tmp, "dotdot", ent["safetensors"], model__file="..")


def model_file_path_outside(ent, tmp):
    return make_submission(tmp, "outside", ent["safetensors"], model__file="../../model.safetensors")


def yaml_is_a_link(ent, tmp):
    folder = make_submission(tmp, "yaml-link", ent["safetensors"])
    (tmp / "elsewhere.yaml").write_text((folder / "submission.yaml").read_text())
    (folder / "submission.yaml").unlink()
    os.symlink(tmp / "elsewhere.yaml", folder / "submission.yaml")
    return folder


def folder_name_with_a_newline(ent, tmp):
    return make_submission(tmp, "ent\n", ent["safetensors"])


def folder_name_upper_case(ent, tmp):
    return make_submission(tmp, "Entry", ent["safetensors"])


def header_dtype_disagrees_with_its_bytes(ent, tmp):
    folder = make_submission(tmp, "dtype-bytes", _safetensors(tmp / "model.safetensors", _state(ent)))
    _rewrite_header(folder / "model.safetensors", lambda h: h[_first_float(h)].update(dtype="F16"))
    _resign(folder)
    return folder


def header_shape_disagrees_with_its_bytes(ent, tmp):
    folder = make_submission(tmp, "shape-bytes", _safetensors(tmp / "model.safetensors", _state(ent)))

    def change(h):
        k = _first_float(h)
        h[k]["shape"] = [1] + h[k]["shape"]
        h[k]["shape"][-1] = h[k]["shape"][-1] * 2 if h[k]["shape"][-1] > 0 else 1
    _rewrite_header(folder / "model.safetensors", change)
    _resign(folder)
    return folder


def header_tensors_overlap(ent, tmp):
    folder = make_submission(tmp, "overlap", _safetensors(tmp / "model.safetensors", _state(ent)))

    def change(h):
        names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
        a, b = h[names[0]], h[names[1]]
        if b["dtype"] == a["dtype"] and b["shape"] == a["shape"]:
            b["data_offsets"] = list(a["data_offsets"])
        else:  # a lying span: the first tensor's bytes read twice
            a["data_offsets"][1] = a["data_offsets"][0] + 4
            a["shape"] = [1]
    _rewrite_header(folder / "model.safetensors", change)
    _resign(folder)
    return folder


def header_length_past_the_end(ent, tmp):
    folder = make_submission(tmp, "header-length", ent["safetensors"])
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data) * 4) + data[8:])
    _resign(folder)
    return folder


def half_precision_weights(ent, tmp):
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in _state(ent).items()}
    return make_submission(tmp, "half", _safetensors(tmp / "model.safetensors", state))


def nan_weight(ent, tmp):
    state = _state(ent)
    k = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[k].view(-1)[0] = float("nan")
    return make_submission(tmp, "nan", _safetensors(tmp / "model.safetensors", state))


def infinite_weight_in_a_torch_file(ent, tmp):
    state = _state(ent)
    k = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 1)
    state[k][0] = float("inf")
    torch.save(state, tmp / "model.pt")
    return make_submission(tmp, "inf", tmp / "model.pt")


def _yaml_text(ent, tmp, name, edit):
    folder = make_submission(tmp, name, ent["safetensors"])
    path = folder / "submission.yaml"
    path.write_text(edit(path.read_text()))
    return folder


def yaml_alias_bomb(ent, tmp):
    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else '1, 1, 1, 1, 1, 1, 1, 1, 1, 1'}]\n"
                   for i in range(9))
    return _yaml_text(ent, tmp, "bomb", lambda t: bomb + t + "x: *l8\n")


def yaml_duplicate_key(ent, tmp):
    return _yaml_text(ent, tmp, "dupkey", lambda t: t + "eps: 0.2\n")


def yaml_nan_claim(ent, tmp):
    return _yaml_text(ent, tmp, "nanclaim", lambda t: t.replace("clean: 10.0", "clean: .nan"))


def sha256_with_a_newline(ent, tmp):
    folder = make_submission(tmp, "shanl", ent["safetensors"])
    spec = yaml.safe_load((folder / "submission.yaml").read_text())
    spec["model"]["sha256"] += "\n"
    (folder / "submission.yaml").write_text(yaml.safe_dump(spec))
    return folder


def paper_key_with_a_newline(ent, tmp):
    return make_submission(tmp, "keynl", ent["safetensors"], paper__key="Doe2025\n")


def model_file_name_with_a_newline(ent, tmp):
    return make_submission(tmp, "filenl", ent["safetensors"], model__file="model.safetensors\n")


HOSTILE = [
    (model_is_a_link_inside, "file", "is a symbolic link"),
    (model_is_a_link_outside, "file", "is a symbolic link"),
    (model_is_a_link_to_a_device, "file", "is a symbolic link"),
    (model_is_a_fifo, "file", "is not a regular file"),
    (model_is_a_folder, "file", "is not a regular file"),
    (model_file_dot_dot, "file", "is not a plain file name"),
    (model_file_path_outside, "schema", "model.file"),
    (yaml_is_a_link, "file", "is a symbolic link"),
    (folder_name_with_a_newline, "name", "must match"),
    (folder_name_upper_case, "name", "must match"),
    (header_dtype_disagrees_with_its_bytes, "not-a-model", ""),
    (header_shape_disagrees_with_its_bytes, "not-a-model", ""),
    (header_tensors_overlap, "not-a-model", ""),
    (header_length_past_the_end, None, ""),
    (half_precision_weights, "dtype", "torch.float16, the architecture's is torch.float32"),
    (nan_weight, "non-finite", "NaN or infinite"),
    (infinite_weight_in_a_torch_file, "non-finite", "NaN or infinite"),
    (yaml_alias_bomb, "schema", "alias"),
    (yaml_duplicate_key, "schema", "duplicate key 'eps'"),
    (yaml_nan_claim, "schema", "not a finite number"),
    (sha256_with_a_newline, "schema", "model.sha256"),
    (paper_key_with_a_newline, "schema", "paper.key"),
    (model_file_name_with_a_newline, "schema", "model.file"),
]


@pytest.mark.parametrize("make, reason, match", [pytest.param(m, r, t, id=m.__name__) for m, r, t in HOSTILE])
def test_a_hostile_submission_is_refused_with_its_reason(entry, tmp_path, make, reason, match):  # noqa: F811
    folder = make(entry, tmp_path)
    with pytest.raises(SubmissionError) as err:
        submit(folder, preset_file=entry["preset"])
    assert err.value.reason in REASONS
    if reason is not None:  # a lying header length: truncated or not a model, either is right
        assert err.value.reason == reason, str(err.value)
    assert match in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value).strip()


@pytest.mark.parametrize("make", [nan_weight, yaml_alias_bomb, model_is_a_link_to_a_device,
                                  header_dtype_disagrees_with_its_bytes], ids=lambda m: m.__name__)
def test_the_submit_command_prints_one_line_and_no_traceback(entry, tmp_path, make):  # noqa: F811
    folder = make(entry, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "submit", str(folder), "--preset",
                           str(entry["preset"]), "--out", str(tmp_path / "out.json")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "refused (" in out, out
    assert not (tmp_path / "out.json").exists()
