"""Each chapter's .md (the source) and .ipynb (for Colab, JupyterLab, nbval) are in sync.

`jupytext --diff` exits 0 even when the two differ, and `jupytext --sync` keeps whichever
file is newer, so the check compares the cells that jupytext reads from both files.
"""

import importlib.util
import json
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
    edited.write_text(md.read_text(encoding="utf-8").replace("```{code-cell} ipython3\n", "```{code-cell} ipython3\nx_planted = 1\n", 1))
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
