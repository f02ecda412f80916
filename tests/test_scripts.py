"""The README's two commands also exist in Python (scripts/book.py, scripts/test.py) for machines
without bash: their arguments, and the commands they would run (dry runs; nothing is installed,
built or tested from here)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import setup_env  # noqa: E402
import test as test_script  # noqa: E402  (scripts/test.py)


def _dry(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, f"scripts/{script}", "--dry-run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_book_py_builds_as_book_sh_does():
    out = _dry("book.py", "--path-output", "/tmp/somewhere")
    line = next(x for x in out.splitlines() if "jupyter-book" in x)
    assert line.endswith("build . -W -n --keep-going --path-output /tmp/somewhere")
    assert "-m dmlib.data" in out  # set-up fetches MNIST, as setup.sh does
    assert "/tmp/somewhere/_build/html" not in out  # a dry run claims no book


def test_test_py_runs_pytest_twice_with_the_extra_arguments():
    out = _dry("test.py", "-k", "schedules", "-x")
    runs = [shlex.split(x.removeprefix("[dry-run] ")) for x in out.splitlines() if " -m pytest " in x]
    first, probe, aside, second = runs  # the PDF's half is started first, beside the other
    for cmd in (first, aside, second):
        assert cmd[-3:] == ["-k", "schedules", "-x"]
    assert "--nbval-lax" in first and "--ignore=tests/test_book.py" in first
    assert second[4:6] == ["no:cacheprovider", "tests/test_book.py"] and "--collect-only" in probe
    assert aside[4:6] == ["no:cacheprovider", "tests/test_pdf.py"] and "tests/test_pdf.py" not in second
    assert "--ignore=tests/test_book.py" in first and "--ignore=tests/test_pdf.py" in first


def test_the_python_and_bash_commands_agree():
    # the same pytest runs as scripts/test.sh (its list of book tests is read from it)
    first, probe, second, aside = test_script.commands("PY", [])
    sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "tests book --nbval-lax -n 2 --dist loadfile" in sh and "tests/test_book.py" in test_script.book_tests()
    assert [f"--ignore={t}" for t in test_script.book_tests()] == first[first.index("loadfile") + 1:]
    assert probe[5:-2] == test_script.book_tests()
    assert sorted(second[5:] + aside[5:]) == sorted(test_script.book_tests())
    assert test_script.beside_tests() == ["tests/test_pdf.py"] and 'beside=(tests/test_pdf.py)' in sh
    setup_sh = (ROOT / "scripts" / "setup.sh").read_text()
    assert '-e ".[book,test]"' in setup_sh and "torch==2.13.0" in setup_sh and "-m dmlib.data" in setup_sh
    assert setup_env.venv_python(Path("/x/.venv")).name.startswith("python")


def test_bad_arguments_are_refused():
    proc = subprocess.run([sys.executable, "scripts/setup_env.py", "--nonsense"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments: --nonsense" in proc.stderr
