#!/usr/bin/env bash
# Installs the suite into ./.venv (idempotent) and, when run as root, the offline Fashion-MNIST
# files the quick preset reads and the chromium the browser tests drive. Used by `make quick`,
# `make test` and .ci/run.
#   bash scripts/install.sh            # runtime + test dependencies
#   EXTRAS=test,cluster bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-test}

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
    # apt's package lists are empty on a fresh machine: update once, then install
    if [ -z "${_APT_UPDATED:-}" ]; then
        apt-get update -qq
        _APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv/ensurepip in a separate package
        if as_root && command -v apt-get >/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$PYTHON" -m venv "$VENV"
        else
            echo "error: '$PYTHON -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi

"$VENV/bin/python" -m pip install -q --upgrade pip
# torch==2.14.1 / torchvision==0.29.1 resolve from local disk on the project machines
"$VENV/bin/python" -m pip install -q -e ".[${EXTRAS}]"

# The site's browser tests drive Debian's chromium through playwright (`playwright install`
# cannot download a browser here).
if ! command -v chromium >/dev/null; then
    if as_root && command -v apt-get >/dev/null; then
        apt_install chromium
    else
        echo "warning: chromium not found; the browser tests (pytest -m browser) need it:" >&2
        echo "         sudo apt-get update && sudo apt-get install -y chromium" >&2
    fi
fi

# where Debian's dataset-fashion-mnist puts its files: the one place the suite names it
FMNIST=$("$VENV/bin/python" -c 'from benchmark.core.datasets import DEFAULT_FASHION_MNIST_SYSTEM_DIR as d; print(d)')
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    if as_root && command -v apt-get >/dev/null; then
        apt_install dataset-fashion-mnist
    else
        echo "warning: Fashion-MNIST not found in $FMNIST; the quick preset needs it:" >&2
        echo "         sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
    fi
fi
# The SLURM end-to-end test (tests/test_slurm_cluster.py) starts a one-node cluster from Debian's
# slurm-wlm and munge (scripts/slurm_cluster.sh); the package scripts start no daemon here
if [[ ",$EXTRAS," == *",cluster,"* ]] && ! command -v slurmctld >/dev/null; then
    if as_root && command -v apt-get >/dev/null; then
        apt_install slurm-wlm munge
    else
        echo "warning: slurm-wlm not found; the SLURM end-to-end test needs it (and root):" >&2
        echo "         sudo apt-get update && sudo apt-get install -y slurm-wlm munge" >&2
    fi
fi
echo "installed into $VENV"
