#!/usr/bin/env bash
# Run the whole test suite: set up .venv when needed, then pytest twice, so that each chapter
# is executed once.
#
#   1. the unit and math tests of dmlib, the .md/.ipynb pairing check, the environment pins,
#      and every chapter under nbval (two pytest-xdist workers). Each notebook that runs
#      without a failure is stored in jupyter-cache (tests/nbcache.py);
#   2. the book build, which takes every chapter from that cache and executes none
#      (DMLIB_BOOK_FROM_CACHE=1: tests/test_book.py checks that in the build log), and the
#      checks of the rendered pages, in a browser too; beside it, in a second process, the
#      PDF's single-page build and its checks.
#
# Run mode: DMLIB_MODE as set; unset means full, the budgets whose numbers the chapters
# assert (CI). DMLIB_MODE=quick bash scripts/test.sh is the fast local run.
# Extra arguments go to both pytest runs (e.g. -k schedules, or -x). The second run starts
# only when the first passed (or selected nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_browser.sh

export PYTHONHASHSEED=0
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # see scripts/book.sh
echo "[test] run mode: ${DMLIB_MODE:-full}"
pytest=(.venv/bin/python -m pytest -p no:cacheprovider)

# the tests of the built book (HTML and PDF) run second; each builds its book once
book_tests=(tests/test_book.py tests/test_numbering.py tests/test_pdf.py tests/test_compute.py tests/test_a11y.py)
# of these, the PDF tests (their own single-page build, printed by Chromium) run in a second
# process beside the others: two builds on two cores
beside=(tests/test_pdf.py)
rc=0
"${pytest[@]}" tests book --nbval-lax -n 2 --dist loadfile "${book_tests[@]/#/--ignore=}" "$@" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then  # 5: every test deselected (e.g. -k browser)
    exit "$rc"
fi
selected=0
"${pytest[@]}" "${book_tests[@]}" --collect-only -q "$@" >/dev/null 2>&1 || selected=$?
if [ "$selected" -eq 5 ]; then
    exit "$rc"  # the extra arguments deselect every book test: the first run's summary stands
fi
others=()
for t in "${book_tests[@]}"; do
    [[ " ${beside[*]} " == *" $t "* ]] || others+=("$t")
done
export DMLIB_BOOK_FROM_CACHE=1
log=$(mktemp)
"${pytest[@]}" "${beside[@]}" "$@" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' INT TERM
rc_others=0
"${pytest[@]}" "${others[@]}" "$@" || rc_others=$?
rc_beside=0
wait "$pid" || rc_beside=$?
echo "[test] ${beside[*]}, run beside the others:"
cat "$log"
rm -f "$log"
for r in "$rc_others" "$rc_beside"; do  # 5: this half selected nothing, the other half did
    if [ "$r" -ne 0 ] && [ "$r" -ne 5 ]; then
        exit "$r"
    fi
done
