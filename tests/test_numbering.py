"""Equations are numbered per chapter in the rendered book: the seventh numbered equation of
Chapter 12 is (12.7), not its rank in the whole book, and every {eq} reference, within a chapter
or across chapters, prints the number that its target shows.

The chapters write their numbers into their headings and the table of contents is not
numbered, so Sphinx alone would count equations through the whole book; _ext/chapter_numbers.py
renumbers them per chapter. These tests read the HTML built once per session (``built_book``,
tests/conftest.py).
"""

from __future__ import annotations

import re
import sys
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_book import CHAPTER_PAGES

ROOT = Path(__file__).resolve().parents[1]

EQNO = re.compile(r'<div class="math[^"]*" id="(equation-[^"]+)">\s*<span class="eqno">\(([^)<]*)\)')
EQ_REF = re.compile(r'<a class="reference internal" href="([^"#]*)#(equation-[^"]+)"[^>]*>'
                    r'(?:<span[^>]*>)?\(([^)<]*)\)(?:</span>)?</a>')


def chapter_of(page: str) -> int:
    return int(re.search(r"/ch(\d\d)_", "/" + page).group(1))


def equation_numbers(html: Path) -> dict[str, str]:
    """{anchor id: number shown next to the equation} of one page, in page order."""
    return dict(EQNO.findall(html.read_text(encoding="utf-8")))


def equation_refs(html: Path) -> list[tuple[str, str, str]]:
    """(target page, anchor id, printed number) of each {eq} reference on a page."""
    return [(unescape(page), anchor, number) for page, anchor, number in
            EQ_REF.findall(html.read_text(encoding="utf-8"))]


PAGES = [*CHAPTER_PAGES, "book/appendix_notation.html", "book/appendix_instructor.html"]


@pytest.mark.parametrize("page", ["book/ch02_ddpm.html", "book/ch12_latent_diffusion.html"])
def test_chapters_have_numbered_equations(built_book, page):
    assert len(equation_numbers(built_book / page)) >= 3, f"{page}: too few numbered equations to check"


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_equations_are_numbered_per_chapter(built_book, page):
    numbers = list(equation_numbers(built_book / page).values())
    n = chapter_of(page)
    assert numbers == [f"{n}.{k}" for k in range(1, len(numbers) + 1)], (
        f"{page}: equations should read ({n}.1), ({n}.2), ...; the page shows {numbers[:6]}")


@pytest.mark.parametrize("page", PAGES)
def test_references_print_their_targets_number(built_book, page):
    html = built_book / page
    shown = {}  # target page -> {anchor: the number next to that equation}
    for ref_page, anchor, number in equation_refs(html):
        target = (html.parent / ref_page).resolve() if ref_page else html
        if target not in shown:
            assert target.is_file(), f"{page}: a reference points to a missing page {ref_page}"
            shown[target] = equation_numbers(target)
        assert anchor in shown[target], f"{page}: no equation {anchor} on {ref_page or page}"
        assert number == shown[target][anchor], (
            f"{page}: a reference to {anchor} prints ({number}); the equation shows ({shown[target][anchor]})")
        assert number.startswith(f"{chapter_of(target.relative_to(built_book.resolve()).as_posix())}."), number


def test_references_cross_chapters(built_book):
    """Some references point into another chapter, and they print that chapter's number."""
    crossing = [(page, ref_page, number) for page in CHAPTER_PAGES
                for ref_page, _, number in equation_refs(built_book / page) if ref_page]
    assert len(crossing) >= 5, crossing
    for page, ref_page, number in crossing:
        assert number.split(".")[0] == str(chapter_of(ref_page)), (page, ref_page, number)
    on_ch12 = [number for ref_page, _, number in equation_refs(built_book / "book/ch12_latent_diffusion.html")]
    assert on_ch12 and all(re.fullmatch(r"\d+\.\d+", n) for n in on_ch12), on_ch12


# The extension itself, on a stand-in for Sphinx's environment: what a global count becomes.

def test_extension_renumbers_a_global_count():
    sys.path.insert(0, str(ROOT / "_ext"))
    import chapter_numbers

    def title(text):
        return SimpleNamespace(astext=lambda: text)

    env = SimpleNamespace(
        config=SimpleNamespace(numfig=True),
        titles={"ch02": title("2. Denoising"), "ch12": title("12. Latent diffusion"),
                "notation": title("Notation")},
        toc_fignumbers={
            "ch02": {"displaymath": {"eq-b": (28,), "eq-a": (27,)}},
            "ch12": {"displaymath": {"eq-x": (137,)}, "figure": {"fig-1": (4,)}},
            "notation": {"displaymath": {"eq-n": (200,)}},
        })
    chapter_numbers.renumber(None, env)
    assert env.toc_fignumbers == {
        "ch02": {"displaymath": {"eq-a": (2, 1), "eq-b": (2, 2)}},
        "ch12": {"displaymath": {"eq-x": (12, 1)}, "figure": {"fig-1": (12, 1)}},
        "notation": {"displaymath": {"eq-n": (1,)}},
    }
