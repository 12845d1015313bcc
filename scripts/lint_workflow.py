"""The workflow part of `make lint`: snakefmt's check, then Snakemake's own linter on every rule.

Snakemake's linter runs on the offline preset, the one that defines every rule (seed stability and
the gamma sweep included). One lint is accepted, for every rule: "Specify a conda environment or
container for each rule". The suite's software is the Python environment `make install` builds
from pyproject.toml, the one declaration of its dependencies; a conda file beside it would be a
second one that drifts (and Snakemake copies env files away from the repository, so one cannot
point back at pyproject.toml). Any other lint fails.

    python scripts/lint_workflow.py          # exit 1 on a formatting difference or a lint
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCEPTED = {"Specify a conda environment or container for each rule."}
LINT_PRESET = REPO / "presets" / "offline.yaml"


def snakefmt_check() -> int:
    cmd = [sys.executable, "-m", "snakefmt", "--check", "--diff", "Snakefile", "workflows/rules"]
    return subprocess.run(cmd, cwd=REPO).returncode


def snakemake_lints() -> list[str]:
    """Lints other than the accepted one, each as "where: title"."""
    cmd = [sys.executable, "-m", "snakemake", "--lint", "--configfile", str(LINT_PRESET)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    found, where = [], None
    for line in text.splitlines():
        header = re.match(r"^Lints for (.+):$", line)
        if header:
            where = header.group(1)
            continue
        lint = re.match(r"^    \* (.+?):?$", line)
        if lint and lint.group(1) not in ACCEPTED:
            found.append(f"{where}: {lint.group(1)}")
    if proc.returncode != 0 and not found and "Lints for" not in text:
        found.append(f"snakemake --lint failed:\n{text[-3000:]}")
    return found


def main() -> int:
    status = snakefmt_check()
    lints = snakemake_lints()
    for lint in lints:
        print(lint)
    if not lints:
        print(f"snakemake --lint: clean (accepted for every rule: {'; '.join(sorted(ACCEPTED))})")
    return 1 if status or lints else 0


if __name__ == "__main__":
    sys.exit(main())
