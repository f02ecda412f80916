"""CITATION.cff is valid Citation File Format 1.2.0 and names the version of dmlib and pyproject.toml."""

import datetime
import re
import tomllib
from pathlib import Path

import yaml

import dmlib

ROOT = Path(__file__).resolve().parents[1]


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def pyproject_version() -> str:
    """The version pyproject.toml gives the package: a literal, or dmlib.__version__ read by setuptools."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    if "version" in project:
        return project["version"]
    assert "version" in project.get("dynamic", []), "pyproject.toml has neither a version nor a dynamic one"
    attr = data["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "dmlib.__version__", f"pyproject.toml reads its version from {attr}, not dmlib.__version__"
    return dmlib.__version__


def test_required_fields_of_cff_1_2_0():
    cff = citation()
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff.get(key), f"CITATION.cff needs a non-empty {key!r}"
    assert cff["title"] == "Diffusion Models: An Open Textbook"
    assert cff["type"] in ("software", "dataset")
    for author in cff["authors"]:
        # a person has family-names (or given-names), an entity has a name
        assert author.get("name") or author.get("family-names") or author.get("given-names"), author
    assert {"name": "The dmlib authors"} in cff["authors"]


def test_dates_and_license_have_the_schemas_form():
    cff = citation()
    released = cff["date-released"]
    # the schema wants a string YYYY-MM-DD; unquoted, YAML would read it as a date
    assert isinstance(released, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", released), released
    datetime.date.fromisoformat(released)
    assert cff["license"] == "MIT", "the software's licence (the text's is in LICENSE-TEXT.md)"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert pyproject["license"] in ({"text": "MIT"}, "MIT"), pyproject["license"]


def test_version_is_dmlibs_and_pyprojects():
    cff = citation()
    assert isinstance(cff["version"], str), "quote the version: YAML reads 1.10 as the number 1.1"
    assert cff["version"] == dmlib.__version__, (
        f"CITATION.cff says version {cff['version']}, dmlib.__version__ is {dmlib.__version__}")
    assert cff["version"] == pyproject_version()
