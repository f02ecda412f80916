"""Run the whole test suite, as scripts/test.sh does, for machines without bash (Windows).

    python scripts/test.py                  # set up .venv when needed, then pytest twice
    python scripts/test.py -k schedules     # extra arguments go to both pytest runs
    python scripts/test.py --dry-run        # print the commands instead of running them

The same two runs as test.sh: (1) dmlib's tests, the pairing and environment checks and every
chapter under nbval (two workers), which stores each chapter that passes in the book's cache;
(2) the book build from that cache and the checks of the rendered pages, with the PDF's tests in a
second process beside them (test.sh's `beside=(...)`). Where bash is
available, scripts/ensure_browser.sh is run first (it installs Chromium for the browser tests
where it may); elsewhere the browser tests skip unless Chromium is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setup_env  # noqa: E402  (scripts/setup_env.py, beside this file)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return ap.parse_known_args(argv)


def _sh_list(name: str, default: list[str]) -> list[str]:
    """A bash array `name=(...)` of scripts/test.sh, so that the two scripts cannot disagree."""
    text = (setup_env.ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    found = re.search(rf"^{name}=\(([^)]*)\)", text, re.M)
    return shlex.split(found.group(1)) if found else default


def book_tests() -> list[str]:
    """The tests of the built book, which run second: test.sh's list `book_tests=(...)`."""
    return _sh_list("book_tests", ["tests/test_book.py"])


def beside_tests() -> list[str]:
    """Those of the book tests that run in a second process beside the others (the PDF's)."""
    return [t for t in _sh_list("beside", []) if t in book_tests()]


def commands(py, extra: list[str]) -> tuple[list, list, list, list]:
    """The first pytest run, the collect-only probe of the book tests, and the two halves of
    the second run: the book tests but the PDF's, and the PDF's, run beside them."""
    pytest = [py, "-m", "pytest", "-p", "no:cacheprovider"]
    book, beside = book_tests(), beside_tests()
    first = [*pytest, "tests", "book", "--nbval-lax", "-n", "2", "--dist", "loadfile",
             *(f"--ignore={t}" for t in book), *extra]
    probe = [*pytest, *book, "--collect-only", "-q", *extra]
    second = [*pytest, *(t for t in book if t not in beside), *extra]
    aside = [*pytest, *beside, *extra]
    return first, probe, second, aside


def main(argv=None) -> int:
    args, extra = parse(argv)
    run = setup_env.Runner(args.dry_run)
    py = setup_env.setup(run)
    if shutil.which("bash"):
        run(["bash", "scripts/ensure_browser.sh"], check=False)
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(f"[test] run mode: {env.get('DMLIB_MODE') or 'full'}")
    first, probe, second, aside = commands(py, extra)
    rc = run(first, check=False, env=env)
    if rc not in (0, 5):  # 5: every test deselected (e.g. -k browser)
        return rc
    if run(probe, check=False, env=env, quiet=True) == 5:
        return rc  # the extra arguments deselect every book test: the first run's summary stands
    env["DMLIB_BOOK_FROM_CACHE"] = "1"
    if not beside_tests():
        return run(second, check=False, env=env)
    if run.dry_run:
        run(aside, env=env)
        return run(second, env=env)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(c) for c in aside], cwd=setup_env.ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        rc_second = run(second, check=False, env=env)
        rc_aside = proc.wait()
        log.seek(0)
        print(f"[test] {' '.join(beside_tests())}, run beside the others:", flush=True)
        sys.stdout.write(log.read())
    bad = [r for r in (rc_second, rc_aside) if r not in (0, 5)]  # 5: that half selected nothing
    return bad[0] if bad else 0


if __name__ == "__main__":
    sys.exit(main())
