"""The book builds cleanly, its pages need nothing from the network, and a real browser
shows Chapter 1 with typeset equations and every image loaded.

The build runs once per session (in the run mode of the test run) into a temporary folder;
the browser is Debian's headless Chromium. Under scripts/test.sh nbval has just run every
chapter and stored it in jupyter-cache (tests/nbcache.py), and the build must take every
chapter from there instead of executing it a second time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _chapters_in_toc() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [f + ".html" for f in files if re.match(r"book/ch\d\d_", f)]


CHAPTER_PAGES = _chapters_in_toc()


# built_book (tests/conftest.py): the book built once per session into a temporary folder, shared
# with tests/test_numbering.py.


# ---------------------------------------------------------------------------------------
# Each chapter executes once: the build takes what nbval ran from jupyter-cache

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KERNEL_START = "[IPKernelApp] WARNING | Kernel is running"  # printed once by every kernel the build starts


def build_log(built_book) -> str:
    return ANSI.sub("", (built_book.parents[1] / "build.log").read_text())


def chapter_source(page: str) -> Path:
    return ROOT / page.replace(".html", ".md")


def _after_nbval(request):
    """The built book, when nbval has just run every chapter in this run mode (scripts/test.sh)."""
    if os.environ.get("DMLIB_BOOK_FROM_CACHE") != "1":
        pytest.skip("checked only right after nbval has run every chapter in the same run mode "
                    "(scripts/test.sh sets DMLIB_BOOK_FROM_CACHE=1 for its second pytest run)")
    return request.getfixturevalue("built_book")


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_build_takes_the_chapter_from_nbvals_run(request, page):
    built_book = _after_nbval(request)
    md = page.replace(".html", ".md")
    lines = [line for line in build_log(built_book).splitlines() if f"/{md}: " in line]
    assert any("Using cached notebook" in line for line in lines), (
        f"the book build executed {page} again instead of taking nbval's run from jupyter-cache "
        "(see 'executed notebooks stored for the book build' in the first pytest run: was it stored? "
        "did dmlib or the chapter change in between?):\n" + "\n".join(lines))
    assert not any("Executing notebook" in line for line in lines)


def test_build_starts_no_kernel_after_nbval(request):
    log = build_log(_after_nbval(request))
    assert log.count(KERNEL_START) == 0, [line for line in log.splitlines() if "Executing notebook" in line]


def test_nbval_and_the_book_build_share_one_cache_per_run_mode(clean_env):
    import nbcache

    folders = {mode: nbcache.cache_dir(mode) for mode in ("quick", "full")}
    assert folders["quick"] != folders["full"]  # a quick run never feeds a full build
    assert all(f.parent == ROOT / "_build" / ".jupyter_cache" for f in folders.values())
    clean_env.setattr(nbcache, "prune_stale_caches", lambda current: None)

    class SphinxConfig:
        nb_execution_cache_path = ""

    for env, mode in (("quick", "quick"), ("full", "full"), ("", "full")):
        clean_env.setenv("DMLIB_MODE", env)
        config = SphinxConfig()
        nbcache._set_cache_path(None, config)  # the book build's side (config-inited)
        assert config.nb_execution_cache_path == str(folders[mode])
        assert nbcache.cache_dir() == folders[mode]  # nbval's side


def test_cache_folder_changes_with_dmlibs_source(monkeypatch, tmp_path):
    import nbcache

    (tmp_path / "dmlib").mkdir()
    (tmp_path / "dmlib" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(nbcache, "ROOT", tmp_path)
    before = nbcache.source_fingerprint()
    (tmp_path / "dmlib" / "a.py").write_text("x = 2\n")
    assert nbcache.source_fingerprint() != before


def _md_key(md_text: str, path: Path) -> str:
    from jupyter_cache.cache.main import JupyterCacheBase

    import nbcache

    path.write_text(md_text, encoding="utf-8")
    return nbcache.book_source_hash(JupyterCacheBase(str(path.parent / "cache")), path)


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_nbvals_notebook_has_the_key_the_book_build_looks_up(page, tmp_path):
    # nbval runs the .ipynb; the book build hashes the code cells it reads from the .md.
    import nbformat
    from jupyter_cache.cache.main import JupyterCacheBase

    md = chapter_source(page)
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    key = JupyterCacheBase(str(tmp_path / "cache")).create_hashed_notebook(nb)[1]
    text = md.read_text(encoding="utf-8")
    assert _md_key(text, tmp_path / md.name) == key
    # A test of the test: an edited code cell is a new key, so the build executes that chapter.
    edited = text.replace("```{code-cell} ipython3\n", "```{code-cell} ipython3\nx_planted = 1\n", 1)
    assert _md_key(edited, tmp_path / md.name) != key


NOTEBOOKS = {
    "good": ["print('hello')",
             "from IPython.display import display\n"
             "display({'text/plain': 'glued'}, metadata={'scrapbook': {'name': 'x'}}, raw=True)",
             "1 + 1"],
    "cleared": ["from IPython.display import clear_output\nprint('gone')\nclear_output()"],
    "failing": ["x = 1", "raise ValueError('planted')"],
}


def test_nbval_runs_are_stored_with_their_outputs(tmp_path):
    # The plugin end to end, on three small notebooks: one is stored with every output (display
    # metadata too: myst-nb's glue needs it); the other two are left for the build to execute.
    import jupytext
    import nbformat
    from jupyter_cache import get_cache

    import nbcache

    header = "---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n" \
             "  display_name: Python 3\n  language: python\n  name: python3\n---\n\n# T\n\n"
    for name, cells in NOTEBOOKS.items():
        md = tmp_path / f"{name}.md"
        md.write_text(header + "".join(f"```{{code-cell}} ipython3\n{c}\n```\n\n" for c in cells))
        nbformat.write(jupytext.read(md, fmt="md:myst"), md.with_suffix(".ipynb"))
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\nimport nbcache\n"
        f"nbcache.CACHE_ROOT = nbcache.Path({str(tmp_path / 'cache')!r})\n"
        "def pytest_configure(config):\n    config.pluginmanager.register(nbcache, 'dmbook-nbcache')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval-lax",
         "good.ipynb", "cleared.ipynb", "failing.ipynb"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 failed" in out, out[-3000:]
    assert "good.ipynb: stored as" in out, out[-3000:]
    assert "cleared.ipynb: not stored (it sends clear_output" in out, out[-3000:]
    assert "failing.ipynb: not stored (1 of 2 code cells did not pass" in out, out[-3000:]

    folders = list((tmp_path / "cache").iterdir())
    assert [f.name for f in folders] == [nbcache.cache_dir().name]
    cache = get_cache(str(folders[0]))
    assert [Path(r.uri).name for r in cache.list_cache_records()] == ["good.md"]
    # What myst-nb does with the .md in the book build: match by hash, merge the outputs in.
    from myst_nb.core.read import read_myst_markdown_notebook

    md_nb = read_myst_markdown_notebook((tmp_path / "good.md").read_text(), add_source_map=True)
    _, merged = cache.merge_match_into_notebook(md_nb)
    hello, glued, two = (c for c in merged.cells if c.cell_type == "code")
    assert [c.execution_count for c in (hello, glued, two)] == [1, 2, 3]
    assert hello.outputs[0].output_type == "stream" and hello.outputs[0].text == "hello\n"
    assert glued.outputs[0].output_type == "display_data"
    assert glued.outputs[0].metadata == {"scrapbook": {"name": "x"}}
    assert two.outputs[0].output_type == "execute_result" and two.outputs[0].data["text/plain"] == "2"
    assert merged.metadata["language_info"]["name"] == "python"


def test_build_has_no_warnings(built_book):
    log = (built_book.parents[1] / "build.log").read_text()
    # Sphinx writes "file:line: WARNING: ..."; the kernel's own "[IPKernelApp] WARNING |" lines are not build warnings.
    warnings = [line for line in log.splitlines() if "WARNING: " in line]
    assert not warnings, "\n".join(warnings[:20])


@pytest.mark.parametrize("page", ["index.html", *CHAPTER_PAGES, "book/appendix_notation.html",
                                  "book/appendix_instructor.html", "book/references.html"])
def test_page_exists(built_book, page):
    assert (built_book / page).is_file()


def _html_pages(html_root: Path):
    return [p for p in html_root.rglob("*.html") if "_static" not in p.parts]


def test_no_page_loads_anything_from_the_network(built_book):
    pattern = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"'](https?:)?//", re.I)
    offenders = {}
    for page in _html_pages(built_book):
        hits = [m.group(0)[:120] for m in pattern.finditer(page.read_text(encoding="utf-8"))]
        if hits:
            offenders[str(page.relative_to(built_book))] = hits[:3]
    assert not offenders, f"pages load resources from the network: {offenders}"


def test_mathjax_is_shipped_with_the_book(built_book):
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    page = (built_book / CHAPTER_PAGES[0]).read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in page


def test_toc_lists_the_chapters():
    assert CHAPTER_PAGES and CHAPTER_PAGES[0] == "book/ch01_forward_process.html"


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_citations_resolve(built_book, page):
    chapter = (built_book / page).read_text(encoding="utf-8")
    refs = (built_book / "book" / "references.html").read_text(encoding="utf-8")
    assert 'href="references.html#' in chapter, f"{page} cites nothing"
    assert "denoising diffusion probabilistic models" in refs.lower()
    assert "??" not in re.sub(r"<[^>]+>", "", chapter), "an unresolved reference ('??') is on the page"


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_chapter_has_figures(built_book, page):
    chapter = (built_book / page).read_text(encoding="utf-8")
    n_img = len(re.findall(r"<img\b", chapter))
    assert n_img >= 5, f"{page} shows only {n_img} images"


# ---------------------------------------------------------------------------------------
# A real browser


def _browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium is not installed (scripts/ensure_browser.sh installs Debian's "
                    "chromium and chromium-driver where it may)")
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", "--window-size=1280,2000",
                 "--allow-file-access-from-files"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


@pytest.fixture(scope="module")
def browser():
    drv = _browser()
    yield drv
    drv.quit()


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const start = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done('typeset')).catch(e => done('error: ' + e));
  } else if (Date.now() - start > 20000 || !document.querySelector('script[src*="mathjax" i]')) {
    done('no MathJax');
  }
  else { setTimeout(poll, 100); }
})();
"""


def page_problems(browser, url: str) -> list[str]:
    """What a reader would see wrong on a page: untypeset math, raw TeX, broken images."""
    browser.set_script_timeout(60)
    browser.get(url)
    problems = []
    state = browser.execute_async_script(WAIT_FOR_MATHJAX)
    if state != "typeset":
        problems.append(f"MathJax did not typeset the page ({state})")
    n_math = browser.execute_script("return document.querySelectorAll('div.math, span.math').length")
    n_typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    if n_math == 0 or n_typeset < n_math:
        problems.append(f"{n_typeset} typeset formulas for {n_math} math elements")
    text = browser.execute_script("return document.querySelector('main, article, body').innerText")
    problems += [f"raw TeX {raw!r} left in the visible text" for raw in ("\\[", "\\(", "$$") if raw in text]
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.src.slice(0, 80))")
    if broken:
        problems.append(f"{len(broken)} images did not load: {broken[:5]}")
    return problems


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_browser_typesets_math_and_loads_images(built_book, browser, page):
    assert page_problems(browser, (built_book / page).as_uri()) == []
    n_images = browser.execute_script("return document.images.length")
    assert n_images >= 5, f"only {n_images} images on {page}"
    shots = os.environ.get("DMLIB_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.execute_script("document.body.style.zoom = '1'")
        browser.save_screenshot(str(Path(shots) / (Path(page).stem + ".png")))


def test_browser_check_catches_a_broken_page(browser, tmp_path):
    # A test of the test: raw TeX with no MathJax, and an image that does not exist.
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><main><div class="math">\\[x^2\\]</div><img src="missing.png"></main></body></html>')
    problems = page_problems(browser, bad.as_uri())
    assert any("MathJax" in p for p in problems)
    assert any("raw TeX" in p for p in problems)
    assert any("images did not load" in p for p in problems)


def test_browser_slider_changes_frame(built_book, browser):
    browser.get((built_book / CHAPTER_PAGES[0]).as_uri())
    sliders = browser.execute_script("return document.querySelectorAll('.dmlib-time-slider').length")
    assert sliders >= 1, "Chapter 1 has no JavaScript slider on the rendered page"
    shown = browser.execute_script("""
        const r = document.querySelector('.dmlib-time-slider');
        const inp = r.querySelector('input');
        const visible = () => Array.from(r.querySelectorAll('img')).findIndex(i => i.style.display !== 'none');
        const before = visible();
        inp.value = inp.max; inp.dispatchEvent(new Event('input'));
        return [before, visible(), +inp.max];""")
    assert shown[0] == 0 and shown[1] == shown[2] > 0, shown


# ---------------------------------------------------------------------------------------
# Solutions stay collapsed: the reader sees one only after opening it


def _dmlib_lines() -> set[str]:
    # the chapters display dmlib's own source (plot.show_source): not a solution's leak
    return {" ".join(line.split()) for p in (ROOT / "dmlib").rglob("*.py")
            for line in p.read_text().splitlines()}


def _solution_lines(md_text: str) -> list[str]:
    """Lines between the solution markers of a chapter that appear nowhere else in it (not
    even inside a longer line) nor in dmlib's source, long enough to be recognised in the
    rendered text (no math, which MathJax re-renders)."""
    inside, secret, public = False, [], _dmlib_lines()
    for line in md_text.splitlines():
        s = " ".join(line.split())
        if s == "### BEGIN SOLUTION":
            inside = True
        elif s == "### END SOLUTION":
            inside = False
        elif inside:
            secret.append(s)
        else:
            public.add(s)
    public_text = "\n".join(public)
    return [s for s in secret if len(s) >= 20 and "$" not in s and "{" not in s
            and s not in public_text]


def _visible_secrets(browser, url: str, lines: list[str], open_all: bool = False):
    browser.get(url)
    if open_all:
        browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    text = browser.execute_script("return document.querySelector('main, article, body').innerText")
    text = " ".join(text.split())
    return [s for s in lines if s in text]


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_browser_shows_no_solution_until_the_reader_opens_it(built_book, browser, page):
    lines = _solution_lines(chapter_source(page).read_text())
    assert len(lines) >= 5, f"{page}: too few solution lines to check ({len(lines)})"
    url = (built_book / page).as_uri()
    shown = _visible_secrets(browser, url, lines)
    assert not shown, f"{page} shows solution lines before any toggle is opened: {shown[:3]}"
    # the check can fail: with every toggle opened, the solutions are there to read
    opened = _visible_secrets(browser, url, lines, open_all=True)
    assert len(opened) >= 0.5 * len(lines), (
        f"{page}: only {len(opened)} of {len(lines)} solution lines found with the toggles open")


# ---------------------------------------------------------------------------------------
# Each chapter offers its notebook: download, and Colab / Binder at the release's tag
# (_ext/release_links.py; the session's build sets the repository URL TEST_REPOSITORY)


def test_launch_buttons_open_the_chapters_notebook_at_the_release(built_book):
    import dmlib
    from conftest import TEST_REPOSITORY

    tag = f"v{dmlib.__version__}"
    owner_repo = TEST_REPOSITORY.removeprefix("https://github.com/")
    colab = re.compile(rf'href="https://colab\.research\.google\.com/github/{owner_repo}/blob/{tag}/([^"]+)"')
    binder = re.compile(rf'href="https://mybinder\.org/v2/gh/{owner_repo}/{tag}\?labpath=([^"]+)"')
    for page in CHAPTER_PAGES:
        html = (built_book / page).read_text(encoding="utf-8")
        targets = colab.findall(html) + binder.findall(html)
        assert len(targets) == 2 and set(targets) == {page.replace(".html", ".ipynb")}, (page, targets)
        assert (ROOT / targets[0]).is_file()  # the notebook is in the repository at that path
    for page in _html_pages(built_book):
        launch = re.findall(r'href="https://(?:colab\.research\.google\.com|mybinder\.org)[^"]*"',
                            page.read_text(encoding="utf-8"))
        assert not [h for h in launch if ".ipynb" not in h or ".md" in h], (page, launch)


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_chapter_offers_its_notebook_for_download(built_book, page):
    html = (built_book / page).read_text(encoding="utf-8")
    name = Path(page).with_suffix(".ipynb").name
    assert f'href="{name}"' in html
    copied = built_book / Path(page).with_suffix(".ipynb")
    assert copied.is_file() and copied.read_bytes() == (ROOT / Path(page).with_suffix(".ipynb")).read_bytes()


def test_the_footer_names_the_release(built_book):
    import dmlib

    for page in ["book/intro.html", CHAPTER_PAGES[0]]:
        html = (built_book / page).read_text(encoding="utf-8")
        assert f'<p class="dmbook-version">Edition {dmlib.__version__} ' in html


def test_no_launch_buttons_while_the_repository_url_is_empty():
    import yaml

    import dmlib

    sys.path.insert(0, str(ROOT / "_ext"))
    import release_links

    assert (yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"] or "") == ""
    assert release_links.launch_links("", "book/ch01_forward_process", "0.2.0") == {}
    links = release_links.launch_links("https://github.com/a/b.git", "book/ch01_forward_process", "0.2.0")
    assert links["colab"] == "https://colab.research.google.com/github/a/b/blob/v0.2.0/book/ch01_forward_process.ipynb"
    assert links["binder"] == "https://mybinder.org/v2/gh/a/b/v0.2.0?labpath=book/ch01_forward_process.ipynb"
    assert release_links.book_version() == dmlib.__version__
