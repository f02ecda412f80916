"""ruff finds nothing in the repository's Python code (the rules: [tool.ruff] in pyproject.toml).

The ruff that runs is the one installed beside this Python (.venv/bin/ruff, or the conda
environment's), at the version pyproject.toml pins: another version may apply other rules.
Without it the tests skip and say why. The chapters' .ipynb files are not linted: they are
written from the .md sources by scripts/sync_notebooks.py, and tests/test_pairing.py checks
their cells.
"""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pinned_version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [r for r in project["optional-dependencies"]["test"] if re.match(r"ruff\s*==", r)]
    assert len(pins) == 1, f"the test extra of pyproject.toml should pin ruff once, found {pins}"
    return pins[0].split("==", 1)[1].strip()


@pytest.fixture(scope="module")
def ruff() -> str:
    exe = Path(sys.executable).with_name("ruff.exe" if sys.platform == "win32" else "ruff")
    if not exe.is_file():
        pytest.skip(f"ruff is not installed beside {sys.executable} (pip install -e '.[test]' installs it)")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    version = out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else "unknown"
    if version != pinned_version():
        pytest.skip(f"ruff {version} is installed, pyproject.toml pins {pinned_version()}: "
                    "its findings could differ (pip install -e '.[test]')")
    return str(exe)


def _check(ruff: str, *paths: str) -> subprocess.CompletedProcess:
    # --no-cache: a test run writes nothing into the repository
    return subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing(ruff):
    out = _check(ruff, ".")
    assert out.returncode == 0, (
        "ruff check found problems (fix them, or run `.venv/bin/ruff check --fix` for the safe fixes):\n"
        + out.stdout + out.stderr)


def test_ruff_sees_a_planted_finding(ruff, tmp_path):
    # the test of the test: the repository's configuration flags an unused import, a line over
    # 120 characters and a mutable default argument in a file placed beside the code
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n\n\ndef f(x=[]):\n    return x  # " + "x" * 120 + "\n")
    out = _check(ruff, "--config", str(ROOT / "pyproject.toml"), str(planted))
    assert out.returncode == 1, out.stdout + out.stderr
    for code in ("F401", "E501", "B006"):
        assert code in out.stdout, f"ruff did not report {code}:\n{out.stdout}"


def test_notebooks_are_not_linted_but_the_sources_are(ruff):
    # the .ipynb twins are generated; what ruff lists must include dmlib and no notebook
    out = subprocess.run([ruff, "check", "--no-cache", "--show-files", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    files = out.stdout.splitlines()
    assert any(line.rstrip().endswith(str(Path("dmlib", "train.py"))) for line in files), out.stdout[:2000]
    assert not [f for f in files if f.rstrip().endswith(".ipynb")], "ruff lints the generated notebooks"
