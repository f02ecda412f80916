"""Run the whole test suite, as scripts/test.sh does, for machines without bash (Windows).

    python scripts/test.py                  # set up .venv when needed, then pytest twice
    python scripts/test.py -k schedules     # extra arguments go to both pytest runs
    python scripts/test.py --dry-run        # print the commands instead of running them

The same two runs as test.sh: (1) dmlib's tests, the pairing and environment checks and every
chapter under nbval (two workers), which stores each chapter that passes in the book's cache;
(2) the book build from that cache and the checks of the rendered pages. Where bash is
available, scripts/ensure_browser.sh is run first (it installs Chromium for the browser tests
where it may); elsewhere the browser tests skip unless Chromium is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setup_env  # noqa: E402  (scripts/setup_env.py, beside this file)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return ap.parse_known_args(argv)


def book_tests() -> list[str]:
    """The tests of the built book, which run second: test.sh's list `book_tests=(...)`, so
    that the two scripts cannot disagree."""
    text = (setup_env.ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    found = re.search(r"^book_tests=\(([^)]*)\)", text, re.M)
    return shlex.split(found.group(1)) if found else ["tests/test_book.py"]


def commands(py, extra: list[str]) -> tuple[list, list, list]:
    """The first pytest run, the collect-only probe of the book tests, and the second run."""
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider"]
    book = book_tests()
    first = [*pytest, "tests", "book", "--nbval-lax", "-n", "2", "--dist", "loadfile",
             *(f"--ignore={t}" for t in book), *extra]
    probe = [*pytest, *book, "--collect-only", "-q", *extra]
    second = [*pytest, *book, *extra]
    return first, probe, second


def main(argv=None) -> int:
    args, extra = parse(argv)
    run = setup_env.Runner(args.dry_run)
    py = setup_env.setup(run)
    if shutil.which("bash"):
        run(["bash", "scripts/ensure_browser.sh"], check=False)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"[test] run mode: {env.get('DMLIB_MODE') or 'full'}")
    first, probe, second = commands(py, extra)
    rc = run(first, check=False, env=env)
    if rc not in (0, 5):  # 5: every test deselected (e.g. -k browser)
        return rc
    if run(probe, check=False, env=env, quiet=True) == 5:
        return rc  # the extra arguments deselect every book test: the first run's summary stands
    return run(second, check=False, env=dict(env, DMLIB_BOOK_FROM_CACHE="1"))


if __name__ == "__main__":
    sys.exit(main())
