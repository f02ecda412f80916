"""The whole book as one PDF: a single-page HTML build, printed by headless Chromium.

    .venv/bin/python scripts/pdf.py [--path-output DIR] [extra jupyter-book options]

(``bash scripts/pdf.sh`` sets up .venv and the browser first, then runs this.) Two steps:

1. ``jupyter-book build --builder singlehtml`` writes every page of _toc.yml into one HTML file,
   DIR/_build/singlehtml/index.html. Chapters come from the execution cache of the run mode
   (``execute_notebooks: cache``), so after ``scripts/book.sh`` or ``scripts/test.sh`` in the same
   mode nothing is executed again.
2. Debian's Chromium (driven by selenium, offline) opens that page, waits until MathJax has
   typeset every formula, every image has loaded and the fonts are ready, adds a table of
   contents and prints to DIR/_build/pdf/book.pdf through the DevTools call Page.printToPDF:
   A4, page numbers in the footer, PDF bookmarks from the headings, and internal links (equation,
   section and figure references point into the same PDF). _static/print.css hides the
   navigation bars and sidebars and starts each chapter on a new page.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in the page: resolves when MathJax has typeset everything (or there is no MathJax), every
# image has loaded (or failed) and the web fonts are ready; returns what a reader would miss.
WAIT_FOR_PAGE = """
const done = arguments[arguments.length - 1];
const start = Date.now();
function imagesLoaded() {
  return Promise.all(Array.from(document.images).map(img => {
    img.loading = 'eager';
    return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
  }));
}
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise
      .then(() => imagesLoaded()).then(() => document.fonts.ready)
      .then(() => done({
        math: document.querySelectorAll('div.math, span.math').length,
        typeset: document.querySelectorAll('mjx-container').length,
        broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => i.src.slice(-80)),
        seconds: (Date.now() - start) / 1000}))
      .catch(e => done({error: String(e)}));
  } else if (Date.now() - start > 60000) {
    done({error: 'MathJax did not start within 60 s'});
  } else { setTimeout(poll, 100); }
})();
"""

# Runs in the page, laid out for print. Sphinx's single page lives at the root document's path (book/intro.html) but
# writes its links as if it were at the top folder ("book/intro.html#sec-ddpm"): make every link
# into the page a plain "#anchor", which the printed PDF keeps as a link to a place in itself.
FIX_LINKS = """
const page = arguments[0];
let n = 0;
for (const a of document.querySelectorAll('a[href]')) {
  const href = a.getAttribute('href');
  if (href === page || href.startsWith(page + '#')) {
    a.setAttribute('href', href.startsWith(page + '#') ? href.slice(page.length) : '#');
    n += 1;
  }
}
// Ids are unique per page of the HTML book, not across pages: the single page can hold "summary"
// or "id36" several times (a citation's entry and a heading of a collapsed solution, say), and a
// link to it would land on the first. Each such id becomes unique, and each link to it goes to
// the element it means: a citation to the bibliography entry, any other link to the printed
// element in its own chapter (else the first printed one).
function docOf(el) {
  for (let a = el; a; a = a.parentElement) {
    const marker = a.previousElementSibling;
    if (marker && marker.id && marker.id.startsWith('document-')) return marker.id;
  }
  return '';
}
const byId = new Map();
for (const el of document.querySelectorAll('[id]')) {
  if (!byId.has(el.id)) byId.set(el.id, []);
  byId.get(el.id).push(el);
}
const renamed = new Map();  // old id -> its elements, now with new ids
for (const [id, els] of byId) {
  if (els.length < 2) continue;
  els.forEach((e, i) => { e.id = id + '--' + i; });
  renamed.set(id, els);
}
const ambiguous = new Set();
for (const a of document.querySelectorAll('a[href^="#"]')) {
  const els = renamed.get(decodeURIComponent(a.getAttribute('href').slice(1)));
  if (!els) continue;
  const shown = els.filter(e => e.getClientRects().length > 0);
  const citation = a.closest('.bibtex-citation, .citation-reference') && shown.find(e => e.closest('.citation'));
  const here = shown.filter(e => docOf(e) === docOf(a));
  if (!citation && here.length !== 1 && shown.length !== 1) ambiguous.add(els[0].id.replace(/--0$/, ''));
  a.setAttribute('href', '#' + (citation || here[0] || shown[0] || els[0]).id);
}
return {links: n, ambiguous_ids: Array.from(ambiguous)};
"""

# Runs in the page: a "Contents" after the book's title: the parts (the captions of the
# navigation, one per toctree of the root page), their chapters (h2) and sections (h3), each
# chapter and section a link to its heading.
ADD_CONTENTS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
const title = article.querySelector('h1');
const captions = Array.from(document.querySelectorAll('.bd-sidebar-primary p.caption'))
  .map(p => p.textContent.trim());
const wrappers = Array.from(article.querySelectorAll('div.toctree-wrapper'));
const nav = document.createElement('div');
nav.id = 'pdf-contents';
nav.innerHTML = '<h2 class="pdf-contents-title">Contents</h2>';
const list = document.createElement('ul');
function entry(cls, text, id) {
  const li = document.createElement('li');
  li.className = cls;
  const node = document.createElement(id ? 'a' : 'span');
  if (id) node.href = '#' + id;
  node.textContent = text;
  li.appendChild(node);
  list.appendChild(li);
}
function headingText(h) {
  const copy = h.cloneNode(true);
  copy.querySelectorAll('.headerlink').forEach(a => a.remove());
  return copy.textContent.trim();
}
let n = 0;
wrappers.forEach((wrapper, i) => {
  if (captions.length === wrappers.length) entry('pdf-contents-part', captions[i], null);
  for (const h of wrapper.querySelectorAll(':scope > section > h2, :scope > section > section > h3')) {
    entry(h.tagName === 'H2' ? 'pdf-contents-chapter' : 'pdf-contents-section', headingText(h),
          h.parentElement.id);
    n += 1;
  }
});
nav.appendChild(list);
title.parentNode.insertBefore(nav, title.nextSibling);
return n;
"""

FOOTER = ('<div style="font-size: 8px; width: 100%; text-align: center; color: #555;">'
          '<span class="pageNumber"></span></div>')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # keep the kernel's inline figures
    env["DMLIB_STATIC"] = "1"  # interactive widgets become JavaScript-only sliders (the first frame prints)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def build_singlehtml(path_output: Path, extra: list[str] = ()) -> Path:
    """Run jupyter-book's singlehtml builder; return the page and write its log next to it."""
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb), "build", str(ROOT), "--builder", "singlehtml", "--path-output", str(path_output),
           "-W", "-n", "--keep-going", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=3600)
    log = proc.stdout + proc.stderr
    out = path_output / "_build" / "singlehtml"
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "singlehtml.log").write_text(log)
    if proc.returncode != 0:
        raise RuntimeError(f"the single-page build failed (exit {proc.returncode}):\n{log[-6000:]}")
    return out / "index.html"


def single_page(index: Path) -> tuple[Path, str]:
    """The page to print, and the path by which its links refer to itself.

    With the root document in a folder (book/intro), the build writes the single page there and
    an index.html that only redirects to it, yet the page's links to its styles, scripts and
    images are written relative to the top folder. A copy of it at the top, book.html, finds them.
    """
    text = index.read_text(encoding="utf-8")
    m = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', text)
    if not m:
        return index, index.name
    page = index.parent / "book.html"
    page.write_text((index.parent / m.group(1)).read_text(encoding="utf-8"), encoding="utf-8")
    return page, m.group(1)


def browser():
    """Debian's headless Chromium through selenium, never downloading a driver."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise FileNotFoundError("chromium and chromedriver are needed (scripts/ensure_browser.sh installs "
                                "Debian's chromium and chromium-driver where it may)")
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1200,1600",
                 "--allow-file-access-from-files"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def print_pdf(html: Path, pdf: Path) -> dict:
    """Print the single page to a PDF once it is fully rendered; return what was waited for."""
    drv = browser()
    try:
        drv.set_page_load_timeout(600)
        drv.set_script_timeout(900)
        page, self_path = single_page(html)
        drv.get(page.resolve().as_uri())
        state = drv.execute_async_script(WAIT_FOR_PAGE)
        if "error" in state:
            raise RuntimeError(f"the page did not finish rendering: {state['error']}")
        if state["typeset"] < state["math"] or state["broken"]:
            raise RuntimeError(f"{state['typeset']} typeset formulas for {state['math']} math elements; "
                               f"images that did not load: {state['broken'][:5]}")
        drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})  # what is printed is visible
        state.update(drv.execute_script(FIX_LINKS, self_path))
        state["contents"] = drv.execute_script(ADD_CONTENTS)
        result = drv.execute_cdp_cmd("Page.printToPDF", {
            "paperWidth": 8.27, "paperHeight": 11.69,  # A4, in inches
            "marginTop": 0.6, "marginBottom": 0.6, "marginLeft": 0.65, "marginRight": 0.65,
            "printBackground": True,
            "displayHeaderFooter": True, "headerTemplate": "<span></span>", "footerTemplate": FOOTER,
            "generateDocumentOutline": True,  # PDF bookmarks from the headings
            "transferMode": "ReturnAsStream",
        })
        chunks = []
        while True:  # read the PDF from the browser in pieces: the whole book is tens of MB
            part = drv.execute_cdp_cmd("IO.read", {"handle": result["stream"], "size": 8 << 20})
            chunks.append(base64.b64decode(part["data"]) if part.get("base64Encoded") else part["data"].encode())
            if part.get("eof"):
                break
        drv.execute_cdp_cmd("IO.close", {"handle": result["stream"]})
    finally:
        drv.quit()
    pdf.parent.mkdir(parents=True, exist_ok=True)
    pdf.write_bytes(b"".join(chunks))
    return state


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path-output", type=Path, default=ROOT,
                        help="folder that receives _build/singlehtml and _build/pdf (default: the book's root)")
    args, extra = parser.parse_known_args(argv)
    out = args.path_output.resolve()
    t0 = time.time()
    print(f"[pdf] single-page build, run mode {os.environ.get('DMLIB_MODE') or 'full'} "
          "(chapters not in the execution cache are executed)", flush=True)
    html = build_singlehtml(out, extra)
    t1 = time.time()
    print(f"[pdf] {html} built in {t1 - t0:.0f} s; printing with Chromium", flush=True)
    pdf = out / "_build" / "pdf" / "book.pdf"
    state = print_pdf(html, pdf)
    print(f"[pdf] {state['typeset']} formulas typeset, {state['contents']} entries in the contents, "
          f"{state['links']} links made internal; printed in {time.time() - t1:.0f} s "
          f"({pdf.stat().st_size / 2**20:.1f} MB)", flush=True)
    if state["ambiguous_ids"]:
        print(f"[pdf] note: ids printed more than once, links to them may land on either: "
              f"{state['ambiguous_ids'][:10]}", flush=True)
    return pdf


if __name__ == "__main__":
    print(f"[pdf] done: {main()}")
