"""A non-editable install carries what the library reads at run time (the config schema, the AP
benchmark's reference numbers, the calibration file), and validates a preset from outside the
repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent


def test_a_non_editable_install_validates_a_preset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    for package in ("benchmark", "methods"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "benchmark" / "schemas" / "config.schema.yaml").is_file()
    assert (site / "benchmark" / "reference_data" / "ap_benchmark_leaderboard.csv").is_file()
    assert (site / "benchmark" / "calibration" / "calibration.json").is_file()

    shutil.rmtree(src)  # nothing may come from the sources or the repository
    code = (
        "import benchmark, sys; from pathlib import Path\n"
        f"assert Path(benchmark.__file__).is_relative_to({str(site)!r}), benchmark.__file__\n"
        "from benchmark import config as C\n"
        f"cfg = C.validate(C.load_preset({str(REPO / 'presets' / 'tiny.yaml')!r}))\n"
        "assert C.grid_cells(cfg) and 'torch' not in sys.modules\n"
        "from benchmark import calibration, reference\n"
        "assert len(reference.load_reference()[0]) == 154 and calibration.load().source\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
