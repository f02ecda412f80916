#!/usr/bin/env bash
# Build the rendered book: set up .venv when needed, execute the chapters, write HTML.
#
#   bash scripts/book.sh                 # full run mode: the budgets the figures are made with
#   DMLIB_MODE=quick bash scripts/book.sh   # tiny budgets, for a fast look at the layout
#
# A chapter is executed only when jupyter-cache holds no run of its current code in this run
# mode with the current dmlib (_build/.jupyter_cache/<mode>-<hash>, see tests/nbcache.py):
# after scripts/test.sh in the same mode, every chapter comes from the cache and the build
# takes seconds. Extra arguments go to `jupyter-book build` (e.g. --path-output /tmp/book).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Interactive widgets become JavaScript-only sliders on the static pages.
export DMLIB_STATIC=1
# Idle OpenMP threads sleep instead of spinning: on small machines spinning threads slow
# every torch call inside a Jupyter kernel by milliseconds.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
echo "[book] run mode: ${DMLIB_MODE:-full}; chapters not in the cache are executed (a few minutes on a CPU)"
.venv/bin/jupyter-book build . -W -n --keep-going "$@"
out=_build/html
for ((i = 1; i <= $#; i++)); do
    if [ "${!i}" = "--path-output" ]; then j=$((i + 1)); out="${!j}/_build/html"; fi
done
echo "[book] done: open file://$(cd "$out" && pwd)/index.html"
