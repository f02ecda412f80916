"""Each chapter's .md (the source) and .ipynb (for Colab, JupyterLab, nbval) are in sync.

`jupytext --diff` exits 0 even when the two differ, and `jupytext --sync` keeps whichever
file is newer, so the check compares the cells that jupytext reads from both files.
"""

import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sync_notebooks", ROOT / "scripts" / "sync_notebooks.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

CHAPTERS = sync.chapters()


def cells(path):
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]


def test_book_has_chapters():
    assert CHAPTERS, "no paired MyST notebooks found under book/"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_md_and_ipynb_have_the_same_cells(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run scripts/sync_notebooks.py"
    a, b = cells(md), cells(ipynb)
    for i, (ca, cb) in enumerate(zip(a, b)):
        assert ca == cb, f"cell {i} differs between {md.name} and {ipynb.name}: run scripts/sync_notebooks.py"
    assert len(a) == len(b), f"{md.name} has {len(a)} cells, {ipynb.name} has {len(b)}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_ipynb_is_exactly_what_the_md_generates(md):
    assert md.with_suffix(".ipynb").read_text(encoding="utf-8") == sync.render(md), (
        f"{md.with_suffix('.ipynb').name} is stale: run scripts/sync_notebooks.py"
    )


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_ipynb_committed_without_outputs(md):
    nb = json.loads(md.with_suffix(".ipynb").read_text(encoding="utf-8"))
    with_out = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and c.get("outputs")]
    assert not with_out, f"{md.with_suffix('.ipynb').name} has outputs in cells {with_out}"


def test_pairing_check_detects_an_edit(tmp_path):
    # A test of the test: an edit to the .md alone must be reported.
    md = CHAPTERS[0]
    edited = tmp_path / md.name
    cell = "```{code-cell} ipython3\n"
    edited.write_text(md.read_text(encoding="utf-8").replace(cell, cell + "x_planted = 1\n", 1))
    (tmp_path / md.with_suffix(".ipynb").name).write_text(md.with_suffix(".ipynb").read_text(encoding="utf-8"))
    assert cells(edited) != cells(tmp_path / md.with_suffix(".ipynb").name)
    assert sync.render(edited) != md.with_suffix(".ipynb").read_text(encoding="utf-8")


# The rendered text column shows about 88 characters of code (_static/code.css); longer lines
# get a horizontal scroll bar. Cells whose input is hidden behind a toggle are exempt.
CODE_COLUMNS = 88


def long_code_lines(path):
    """(line, length) of every visible code line wider than the rendered column."""
    out = []
    for c in jupytext.read(path).cells:
        if c.cell_type != "code" or "hide-input" in c.metadata.get("tags", []):
            continue
        out += [(line, len(line)) for line in c.source.splitlines() if len(line) > CODE_COLUMNS]
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_visible_code_fits_the_column(md):
    assert long_code_lines(md) == []


def test_long_code_line_check_sees_a_long_line(tmp_path):
    wide = "x = 1  # " + "y" * CODE_COLUMNS
    (tmp_path / "c.md").write_text(f"# t\n\n```{{code-cell}} ipython3\n{wide}\n```\n\n"
                                   f"```{{code-cell}} ipython3\n:tags: [hide-input]\n\n{wide}\n```\n")
    assert long_code_lines(tmp_path / "c.md") == [(wide, len(wide))]  # the hidden cell is exempt


# The chapters also show dmlib's own code with plot.show_source(X), which appends the
# unchecked twin of a public function (see dmlib/plot.py); that code must fit the column
# too.
SHOW_SOURCE = re.compile(r"plot\.show_source\(\s*([A-Za-z_][\w.]*)\s*\)")
BOOK_PAGES = sorted((ROOT / "book").glob("*.md"))


def shown_targets(paths):
    """The distinct X of every ``plot.show_source(X)`` in the given pages, in order."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in paths)
    return list(dict.fromkeys(SHOW_SOURCE.findall(text)))


SHOWN = shown_targets(BOOK_PAGES)


def resolve_shown(expr):
    """(name, object) of what ``plot.show_source(expr)`` displays in a chapter.

    ``expr`` is a dotted name below dmlib (the chapters import dmlib's modules by name).
    After the object itself comes its unchecked twin, by the rule of dmlib/plot.py: a
    function of the same module named ``_`` + name or ``_`` + name without ``_step``,
    for a public name whose source calls it.
    """
    import dmlib

    obj = dmlib
    for part in expr.split("."):
        obj = getattr(obj, part)
    out = [(expr, obj)]
    name = getattr(obj, "__name__", "")
    if name and not name.startswith("_"):
        module = sys.modules.get(getattr(obj, "__module__", ""))
        src = inspect.getsource(obj)
        for twin_name in dict.fromkeys(("_" + name, "_" + name.removesuffix("_step"))):
            twin = getattr(module, twin_name, None)
            if inspect.isfunction(twin) and f"{twin_name}(" in src:
                out.append((f"{module.__name__}.{twin_name}", twin))
    return out


def long_source_lines(expr):
    """(name, line, length) of every displayed source line wider than the column."""
    return [
        (name, line, len(line))
        for name, obj in resolve_shown(expr)
        for line in inspect.getsource(obj).splitlines()
        if len(line) > CODE_COLUMNS
    ]


@pytest.mark.parametrize("expr", SHOWN, ids=str)
def test_shown_source_fits_the_column(expr):
    assert long_source_lines(expr) == []


def test_shown_source_resolver_finds_targets_and_twins(tmp_path, capsys):
    # A test of the test: the chapters' targets are found, twins included, and what is
    # checked is exactly what plot.show_source displays.
    from dmlib import plot, samplers

    page = tmp_path / "c.md"
    page.write_text("```{code-cell} ipython3\nplot.show_source(samplers.ddim_step)\n"
                    "plot.show_source( toy.GaussianMixture.score )\n```\n")
    assert shown_targets([page]) == ["samplers.ddim_step", "toy.GaussianMixture.score"]
    assert {"samplers.ddim_step", "diffusion.q_sample", "nn.MLP"} <= set(SHOWN)
    shown = resolve_shown("samplers.ddim_step")
    assert [name for name, _ in shown] == ["samplers.ddim_step", "dmlib.samplers._ddim"]
    no_twin = resolve_shown("diffusion.q_sample")
    assert [name for name, _ in no_twin] == ["diffusion.q_sample"]
    plot.show_source(samplers.ddim_step)
    displayed = "\n\n".join(inspect.getsource(obj) for _, obj in shown) + "\n"
    assert capsys.readouterr().out == displayed


def syntax_errors(path):
    """(cell index, message) for every code cell that is not valid Python (IPython magics and
    shell escapes, lines starting with % or !, are left out): caught here in milliseconds
    instead of minutes into a notebook run."""
    out = []
    for i, c in enumerate(jupytext.read(path).cells):
        if c.cell_type != "code":
            continue
        src = "\n".join(line for line in c.source.splitlines()
                        if not line.lstrip().startswith(("%", "!")))
        try:
            compile(src, f"{path.name} cell {i}", "exec")
        except SyntaxError as err:
            out.append((i, f"line {err.lineno}: {err.msg}"))
    return out


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_every_code_cell_compiles(md):
    assert syntax_errors(md) == []


def test_syntax_check_sees_a_broken_cell(tmp_path):
    (tmp_path / "c.md").write_text("# t\n\n```{code-cell} ipython3\n%matplotlib inline\nx = f(1);\n```"
                                   "\n\n```{code-cell} ipython3\nx = f(1);;\n```\n")
    assert [i for i, _ in syntax_errors(tmp_path / "c.md")] == [2]   # cell 0 is the title


def test_a_trailing_semicolon_hides_the_value_as_in_jupyter():
    # tests/nbcache.py stores nbval's runs for the book; a cell ending in ';' shows no value
    sys.path.insert(0, str(ROOT / "tests"))
    import nbcache

    assert nbcache.ends_with_semicolon("x = 1\nf(x);")
    assert nbcache.ends_with_semicolon("f(x,\n  y);  # a note\n\n")
    assert not nbcache.ends_with_semicolon("f(x)")
    assert not nbcache.ends_with_semicolon("s = 'a;'")
    assert not nbcache.ends_with_semicolon("x = 1; f(x)")
    assert not nbcache.ends_with_semicolon("f(x;")        # broken code: not ours to judge
