#!/usr/bin/env bash
# Run the whole test suite: set up .venv when needed, then unit and math tests of dmlib,
# every notebook under nbval (quick mode), the .md/.ipynb pairing check, the environment
# pins, the book build and the browser check of the rendered pages.
#
# Extra arguments go to pytest (e.g. -k schedules, or -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_browser.sh

export DMLIB_MODE=quick PYTHONHASHSEED=0
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see scripts/book.sh
.venv/bin/python -m pytest tests book --nbval-lax -n 2 --dist loadfile -p no:cacheprovider "$@"
