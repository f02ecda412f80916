#!/usr/bin/env bash
# The whole book as one PDF: a single-page HTML build printed by headless Chromium.
#
#   bash scripts/pdf.sh                     # writes _build/pdf/book.pdf (full run mode)
#   DMLIB_MODE=quick bash scripts/pdf.sh    # tiny budgets, for a fast look at the layout
#
# Chapters come from the execution cache of the run mode, as in scripts/book.sh: after
# book.sh or test.sh in the same mode nothing is executed again. The printing needs Debian's
# chromium and chromedriver (scripts/ensure_browser.sh installs them where it may). Extra
# arguments go to jupyter-book, except --path-output DIR, which moves _build/ under DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_browser.sh
exec .venv/bin/python scripts/pdf.py "$@"
