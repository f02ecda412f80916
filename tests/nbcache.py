"""Each chapter executes once per test run: nbval's runs fill the book build's jupyter-cache.

``scripts/test.sh`` runs pytest twice. In the first run nbval executes every chapter's
``.ipynb`` cell by cell in a Jupyter kernel: that is the check that every notebook runs. When
the last cell of a notebook has passed, this plugin assembles the executed notebook from the
outputs nbval recorded for each cell (display metadata included) and stores it in
jupyter-cache. The second run builds the book with ``execute_notebooks: cache``
(``_config.yml``): myst-nb reads each chapter's ``.md``, hashes its code cells (source and cell
metadata, plus the kernelspec) and looks the hash up in the cache. The paired ``.ipynb`` has the
same cells (``tests/test_pairing.py``), so every chapter is a cache hit and the build executes
nothing. A chapter that is not in the cache (never run, edited since, stored by another run
mode) is executed by the build itself, as jupyter-cache always does, so ``scripts/book.sh`` works
on its own.

One cache per run mode and per version of dmlib's source:
``_build/.jupyter_cache/<mode>-<hash of dmlib/**/*.py, *.json and checkpoints/MANIFEST.json>``.
A quick-mode run never feeds a full build (or the reverse), and outputs made by older library
code are never reused (jupyter-cache hashes only the notebook, not the code it imports).

A chapter whose cells all passed also has its wall time written to the compute record shown at
the top of its page (``tests/chapter_compute.py``; full run mode only), whether stored or not.

This module is both a pytest plugin (``tests/conftest.py`` registers it; it acts only when
``--nbval`` or ``--nbval-lax`` is given) and a Sphinx extension (``_config.yml`` loads it), so
that the two sides agree on the cache folder and on the kernel's environment.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
from pathlib import Path

try:  # the pytest plugin's side; the Sphinx extension needs neither
    import pytest
    from nbval.plugin import IPyNbCell
except ImportError:
    pytest = IPyNbCell = None

ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = ROOT / "_build" / ".jupyter_cache"
USER_PROPERTY = "nbcache"
# iopub messages that nbval does not turn into outputs; a notebook that sends them is left for
# the book build to execute (nbclient records them properly).
UNRECORDED_MESSAGES = ("clear_output", "update_display_data", "comm_open")  # comm: widget state


# ---------------------------------------------------------------------------------------
# Shared by both sides


def source_fingerprint() -> str:
    """A short hash of dmlib's Python source and run descriptions, and of the shipped
    checkpoints' manifest: chapters import the one and load the other, so their outputs
    depend on both."""
    h = hashlib.sha256()
    paths = [p for p in (ROOT / "dmlib").rglob("*") if p.suffix in (".py", ".json")]
    paths += [ROOT / "checkpoints" / "MANIFEST.json"]
    for path in sorted(paths):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cache_dir(mode: str | None = None) -> Path:
    """The jupyter-cache folder of a run mode (default: the mode ``dmlib.run`` reads now)."""
    if mode is None:
        from dmlib.run import run_mode

        mode = run_mode()
    return CACHE_ROOT / f"{mode}-{source_fingerprint()}"


def prune_stale_caches(current: Path) -> None:
    """Remove the caches of the same run mode made with other versions of dmlib."""
    mode = current.name.rsplit("-", 1)[0]
    for other in CACHE_ROOT.glob(f"{mode}-*"):
        if other != current and other.is_dir() and other.name.rsplit("-", 1)[0] == mode:
            shutil.rmtree(other, ignore_errors=True)


def prepare_kernel_environment() -> None:
    """The environment every kernel of a book execution inherits, whoever starts it.

    ``DMLIB_STATIC=1``: sliders become JavaScript-only and progress bars stay silent (no
    widgets on a static page). No ``MPLBACKEND``: a non-inline backend would drop the figures.
    """
    os.environ["DMLIB_STATIC"] = "1"
    os.environ.pop("MPLBACKEND", None)


# ---------------------------------------------------------------------------------------
# Sphinx extension: point myst-nb at the cache of the current run mode


def _set_cache_path(app, config) -> None:
    path = cache_dir()
    prune_stale_caches(path)
    config.nb_execution_cache_path = str(path)


def setup(app):
    prepare_kernel_environment()
    app.connect("config-inited", _set_cache_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ---------------------------------------------------------------------------------------
# pytest plugin: store what nbval executed

hookimpl = pytest.hookimpl if pytest is not None else (lambda **_: lambda f: f)


def _active(config) -> bool:
    return IPyNbCell is not None and bool(
        getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False))


def pytest_configure(config):
    if _active(config):
        prepare_kernel_environment()  # before pytest-xdist starts its workers, which inherit it
        config.pluginmanager.register(NotebookStore(config), "dmbook-nbcache-store")


class NotebookStore:
    """Stores each notebook that nbval ran without a failure in the cache of this run mode."""

    def __init__(self, config):
        self.folder = cache_dir()
        self.notes: list[str] = []  # one line per notebook, printed in the terminal summary
        self.controller = not hasattr(config, "workerinput")  # pytest-xdist's main process
        if self.controller:
            prune_stale_caches(self.folder)

    @hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        """Watch the kernel messages of a notebook, to notice those nbval does not record."""
        if not isinstance(item, IPyNbCell) or "_nbcache_seen" in vars(item.parent):
            return
        nbfile = item.parent
        nbfile._nbcache_seen = set()
        get = nbfile.get_kernel_message

        def get_kernel_message(*args, **kwargs):
            msg = get(*args, **kwargs)
            nbfile._nbcache_seen.add(msg["msg_type"])
            return msg

        nbfile.get_kernel_message = get_kernel_message

    @hookimpl(wrapper=True, tryfirst=True)  # outermost: sees the final report (xfail)
    def pytest_runtest_makereport(self, item, call):
        report = yield
        if report.when == "call" and isinstance(item, IPyNbCell):
            self._after_cell(item, report)
        return report

    def _after_cell(self, item, report):
        """Note the cell's result; after the notebook's last cell, store it if every cell passed."""
        nbfile = item.parent
        done = vars(nbfile).setdefault("_nbcache_done", {})
        if report.passed and not hasattr(report, "wasxfail"):
            done[item.cell_num] = (item, report.duration)
        n_code = sum(c.cell_type == "code" for c in nbfile.nb.cells)
        if item.cell_num != n_code - 1:  # the kernel is still running until the last cell
            return
        name = _shown(Path(nbfile.path))
        if len(done) < n_code:
            note = f"not stored ({n_code - len(done)} of {n_code} code cells did not pass or did not run)"
        else:
            try:
                note = _store(nbfile, [done[i] for i in range(n_code)], self.folder)
            except Exception as err:  # storing saves time, nothing more: it never fails a test
                note = f"not stored ({type(err).__name__}: {err})"
            note += _record_compute(Path(nbfile.path), sum(duration for _, duration in done.values()))
        report.user_properties.append((USER_PROPERTY, f"{name}: {note}"))

    def pytest_runtest_logreport(self, report):
        self.notes += [note for key, note in report.user_properties if key == USER_PROPERTY]

    def pytest_terminal_summary(self, terminalreporter):
        if self.controller and self.notes:
            terminalreporter.section("executed notebooks stored for the book build")
            terminalreporter.write_line(f"jupyter-cache: {_shown(self.folder)}")
            for note in sorted(self.notes):
                terminalreporter.write_line(note)


def _record_compute(path: Path, seconds: float) -> str:
    """A chapter that ran to the end: its wall time goes into the compute record shown at the top of
    its page (``tests/chapter_compute.py``; full run mode only)."""
    import chapter_compute  # beside this module (tests/), which pytest and Sphinx put on sys.path

    if path.resolve().parent != chapter_compute.RECORD.parent or not chapter_compute.CHAPTER.match(path.stem):
        return ""
    try:
        changed = chapter_compute.record_run(path.stem, seconds, by="nbval")
    except Exception as err:  # like storing, recording never fails a test
        return f"; compute not recorded ({type(err).__name__}: {err})"
    return f"; {seconds:.0f} s recorded in {_shown(chapter_compute.RECORD)}" if changed else ""


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


@contextlib.contextmanager
def _locked(folder: Path):
    """Serialise writers (pytest-xdist workers) of one cache: jupyter-cache keeps a SQLite index."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "nbcache.lock", "w") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _language_info(kernel, timeout: float = 10.0) -> dict:
    """Ask the notebook's kernel for its language_info (myst-nb picks the code lexer from it)."""
    msg_id = kernel.kc.kernel_info()
    while True:
        msg = kernel.kc.get_shell_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]["language_info"]


def ends_with_semicolon(source: str) -> bool:
    """Whether a cell's code ends in ';' (comments and blank lines after it aside): IPython then
    shows no value for its last expression. Cells that nbval runs come back with the value
    all the same, so the executed notebook drops it."""
    import io
    import tokenize

    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
            tokenize.INDENT, tokenize.DEDENT}
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in skip]
    except (tokenize.TokenError, SyntaxError):
        return False
    return bool(tokens) and tokens[-1].string == ";"


def executed_notebook(nbfile, cells):
    """The notebook nbval ran, with each code cell's outputs and execution count filled in."""
    import nbformat

    nb = copy.deepcopy(nbfile.nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, (cell, (item, _)) in enumerate(zip(code, cells)):
        outputs = [nbformat.from_dict(dict(out)) for out in item.test_outputs]
        if ends_with_semicolon(cell.source):  # as in Jupyter: `f(x);` shows no value
            outputs = [out for out in outputs if out.get("output_type") != "execute_result"]
        cell.outputs = outputs
        cell.execution_count = i + 1  # nbval sends the cells in order, one execute request each
    nb.metadata["language_info"] = _language_info(nbfile.kernel)
    nbformat.validate(nb)
    return nb


def book_source_hash(cache, md: Path) -> str:
    """The cache key the book build looks up for a chapter: myst-nb reads the .md itself."""
    from myst_nb.core.read import read_myst_markdown_notebook

    nb = read_myst_markdown_notebook(md.read_text(encoding="utf-8"), add_source_map=True, path=str(md))
    return cache.create_hashed_notebook(nb)[1]


def _store(nbfile, cells, folder: Path) -> str:
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    seen = getattr(nbfile, "_nbcache_seen", set()) & set(UNRECORDED_MESSAGES)
    if seen:
        return f"not stored (it sends {', '.join(sorted(seen))}, which nbval does not record)"
    nb = executed_notebook(nbfile, cells)
    md = Path(nbfile.path).with_suffix(".md")
    source = md if md.exists() else Path(nbfile.path)
    seconds = sum(duration for _, duration in cells)
    with _locked(folder):
        cache = get_cache(str(folder))
        key = cache.create_hashed_notebook(nb)[1]
        if source == md and book_source_hash(cache, md) != key:
            return f"not stored (its code cells differ from {md.name}: run scripts/sync_notebooks.py)"
        record = cache.cache_notebook_bundle(
            CacheBundleIn(nb, str(source), data={"executed_by": "nbval", "execution_seconds": seconds}),
            check_validity=True, overwrite=True)
        for old in cache.list_cache_records():  # one entry per chapter
            if old.uri == record.uri and old.pk != record.pk:
                cache.remove_cache(old.pk)
    return f"stored as {key[:12]} ({seconds:.0f} s of cells)"
