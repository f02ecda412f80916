"""The whole book as one PDF (scripts/pdf.sh): every chapter, every figure, typeset and
numbered equations, a table of contents, internal links, and code that keeps its indentation.

The PDF is made once per session, in the run mode of the test run, into a temporary folder:
the single-page build takes every chapter from the execution cache (after the HTML build of
tests/test_book.py it executes nothing) and Debian's headless Chromium prints it. Skipped, with
the reason, where Chromium is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import unicodedata
from collections import Counter
from html import unescape
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pdf_script():
    spec = importlib.util.spec_from_file_location("book_pdf_script", ROOT / "scripts" / "pdf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norm(text: str) -> str:
    """Text as compared here: typographic quotes and dashes made plain, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text)
    for fancy, plain in (("\u2019", "'"), ("\u2018", "'"), ("\u201c", '"'), ("\u201d", '"'),
                         ("\u2013", "-"), ("\u2014", "-"), ("\u00a0", " "), ("\u00ad", "")):
        text = text.replace(fancy, plain)
    return " ".join(text.split())


def _toc_files() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def _title(md: Path) -> str:
    """The H1 of a page's source (outside code cells), without MyST markup."""
    fence = None
    for line in md.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*(`{3,}|~{3,})", line)
        if m and fence is None:
            fence = m.group(1)
        elif m and fence is not None and m.group(1).startswith(fence) and not line.strip()[len(fence):].strip():
            fence = None
        elif fence is None and line.startswith("# "):
            return re.sub(r"[*_`]", "", line[2:]).strip()
    raise ValueError(f"{md} has no title")


TITLES = [_title(ROOT / (f + ".md")) for f in _toc_files()]


class Book:
    def __init__(self, pdf: Path, html: Path):
        from pypdf import PdfReader

        self.path, self.html_path = pdf, html
        self.reader = PdfReader(str(pdf))
        self.pages = [page.extract_text() or "" for page in self.reader.pages]
        self.text = norm("\n".join(self.pages))
        self.html = html.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def book_pdf(tmp_path_factory) -> Book:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("headless Chromium is not installed (scripts/ensure_browser.sh installs Debian's "
                    "chromium and chromium-driver where it may)")
    out = tmp_path_factory.mktemp("pdf")
    pdf = _pdf_script().main(["--path-output", str(out)])
    html = out / "_build" / "singlehtml"
    page = html / "book.html"  # the page that was printed (scripts/pdf.py: single_page)
    return Book(pdf, page if page.is_file() else html / "index.html")


def _internal_links(reader) -> list:
    """The link annotations that jump to a place in the same PDF."""
    links = []
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            annot = annot.get_object()
            if annot.get("/Subtype") != "/Link":
                continue
            action = annot.get("/A")
            action = action.get_object() if action is not None else {}
            if "/Dest" in annot or action.get("/S") == "/GoTo":
                links.append(annot)
    return links


def _image_xobjects(reader) -> set:
    seen = set()
    for page in reader.pages:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        stack = list(xobjects.get_object().values()) if xobjects is not None else []
        while stack:  # images may sit inside form XObjects
            ref = stack.pop()
            obj = ref.get_object()
            key = getattr(ref, "idnum", id(obj))
            if key in seen:
                continue
            if obj.get("/Subtype") == "/Image":
                seen.add(key)
            elif obj.get("/Subtype") == "/Form":
                sub = (obj.get("/Resources") or {}).get("/XObject")
                if sub is not None:
                    stack.extend(sub.get_object().values())
    return seen


def figure_leads(html: str) -> list[str]:
    """The "Figure N.M" that start the figure captions of the single-page HTML."""
    leads = re.findall(r"<strong>\s*Figure (\d+\.\d+)\.?\s*</strong>", html)
    return sorted(set(leads), key=lambda s: tuple(map(int, s.split("."))))


def test_page_count_is_sensible(book_pdf):
    n = len(book_pdf.reader.pages)
    assert 15 * (len(TITLES) - 3) <= n <= 3000, f"{n} pages for {len(TITLES)} pages of the table of contents"


def test_every_chapter_title_is_in_the_text_and_the_bookmarks(book_pdf):
    missing = [t for t in TITLES if norm(t) not in book_pdf.text]
    assert not missing, f"chapter titles missing from the PDF's text: {missing}"

    def walk(items):
        for item in items:
            if isinstance(item, list):
                yield from walk(item)
            else:
                yield norm(item.title)

    # a heading that wraps in print loses the space at the wrap in its bookmark
    bookmarks = {re.sub(r"\s", "", title) for title in walk(book_pdf.reader.outline)}
    missing = [t for t in TITLES if re.sub(r"\s", "", norm(t)) not in bookmarks]
    assert not missing, f"chapter titles missing from the PDF's bookmarks: {missing}"


def test_contents_page_links_every_chapter(book_pdf):
    first = norm("\n".join(book_pdf.pages[:6]))
    assert "Contents" in first
    chapters = [t for t in TITLES if re.match(r"\d+\. ", t)]
    assert all(norm(t) in first for t in chapters), "the contents pages do not list every chapter"


def test_every_figure_caption_is_in_the_pdf(book_pdf):
    leads = figure_leads(book_pdf.html)
    assert len(leads) >= 40, f"only {len(leads)} figure captions found in the single-page HTML"
    missing = [f"Figure {n}" for n in leads if f"Figure {n}." not in book_pdf.text]
    assert not missing, f"figure captions missing from the PDF: {missing}"


def test_images_are_embedded(book_pdf):
    n_images = len(_image_xobjects(book_pdf.reader))
    n_figures = len(figure_leads(book_pdf.html))
    assert n_images >= n_figures, f"{n_images} images embedded in the PDF for {n_figures} figures"


def test_equations_are_typeset_and_numbered(book_pdf):
    numbers = re.findall(r'<span class="eqno">\((\d+\.\d+)\)', book_pdf.html)
    assert len(numbers) >= 50 and "12.1" in numbers, numbers[:10]
    missing = [n for n in numbers if f"({n})" not in book_pdf.text]
    assert not missing, f"equation numbers missing from the PDF: {missing[:10]}"
    raw = [tex for tex in ("\\[", "\\(", "$$", "\\frac", "\\begin{") if tex in book_pdf.text]
    assert not raw, f"untypeset TeX in the PDF's text: {raw}"


def test_internal_links_point_into_the_pdf(book_pdf):
    links = _internal_links(book_pdf.reader)
    n_refs = len(re.findall(r'class="reference internal" href="#', book_pdf.html))
    assert len(links) >= 0.5 * n_refs, f"{len(links)} internal links in the PDF for {n_refs} in the HTML"
    dests = book_pdf.reader.named_destinations
    named = [str(a["/Dest"]) for a in links if "/Dest" in a and isinstance(a["/Dest"], str)]
    assert all(d in dests for d in named), [d for d in named if d not in dests][:5]


def _indented_code_lines(html: str) -> list[str]:
    """Indented lines of the chapters' code cells, as plain text, that occur once in the code: long
    enough to be found again in the PDF's text, free of runs of spaces inside (which a PDF's text
    need not keep)."""
    lines = []
    for block in re.findall(r'<div class="cell_input[^"]*">.*?<pre>(.*?)</pre>', html, re.S):
        lines += unescape(re.sub(r"<[^>]+>", "", block)).splitlines()
    every = [line for block in re.findall(r"<pre>(.*?)</pre>", html, re.S)  # code cells, outputs, listings
             for line in unescape(re.sub(r"<[^>]+>", "", block)).splitlines()]
    once = Counter(line.strip() for line in every)
    return [line for line in lines if re.match(r" {4,}\S", line) and 20 <= len(line.strip()) and len(line) < 80
            and once[line.strip()] == 1 and line.isascii() and "  " not in line.strip()]


def test_code_keeps_its_indentation(book_pdf):
    # Lines of collapsed cells and solutions are in the HTML but not printed: only printed lines count.
    raw = [line for page in book_pdf.pages for line in page.splitlines()]
    stripped = Counter(line.strip() for line in raw)
    printed = [line for line in _indented_code_lines(book_pdf.html) if stripped[line.strip()] == 1]
    assert len(printed) >= 20, f"only {len(printed)} indented code lines found in the PDF's text"
    kept = set(raw)
    lost = [line for line in printed if line not in kept]
    # a handful may come out of the text extraction out of order (next to a figure, at a page break)
    assert len(lost) <= 0.01 * len(printed), (
        f"{len(lost)} of {len(printed)} code lines lose their leading spaces in the PDF's text: {lost[:5]}")
