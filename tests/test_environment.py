"""environment.yml and pyproject.toml pin the same packages at the same versions."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {_name(r): r.replace(" ", "") for r in reqs}


def conda_requirements() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    return {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-")}, conda


def test_same_packages_and_pins():
    py, (conda_pip, _) = pyproject_requirements(), conda_requirements()
    assert py == conda_pip, (
        "environment.yml and pyproject.toml disagree:\n"
        f"  only in pyproject.toml: {sorted(set(py.items()) - set(conda_pip.items()))}\n"
        f"  only in environment.yml: {sorted(set(conda_pip.items()) - set(py.items()))}"
    )


def test_every_dependency_is_pinned_except_torch():
    # torch is a range so that a GPU user's CUDA build is kept; everything else is exact.
    for name, req in pyproject_requirements().items():
        if name == "torch":
            assert ">=" in req and "<" in req, req
        else:
            assert "==" in req, f"{req} is not pinned with =="


def test_python_versions_agree():
    _, conda = conda_requirements()
    py = next(d for d in conda if d.startswith("python="))
    minor = py.split("=")[1]
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = spec.removeprefix(">=")
    assert tuple(map(int, minor.split("."))) >= tuple(map(int, low.split("."))), (py, spec)


def test_environment_installs_dmlib_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip


@pytest.mark.parametrize("module", ["diffusers", "ipywidgets", "IPython", "selenium", "nbval", "jupytext",
                                    "safetensors"])
def test_test_dependencies_are_installed(module):
    """A test that needs an optional package skips without it (pytest.importorskip); README's
    set-up installs them all, so here a missing one is a failure, not a silent skip."""
    import importlib

    importlib.import_module(module)
