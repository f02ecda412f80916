"""Regenerate every book/**/*.ipynb from its MyST-Markdown source, without outputs.

The .md file is the source a person edits and reviews; the .ipynb is derived from it for
Colab, JupyterLab and nbval. Run after editing a chapter:

    .venv/bin/python scripts/sync_notebooks.py          # rewrite the .ipynb files
    .venv/bin/python scripts/sync_notebooks.py --check  # exit 1 if any .ipynb is stale

tests/test_pairing.py runs the same check.

It also keeps the first cell of every chapter (chNN_*.md) equal to the Colab cell that
dmlib.colab.first_cell makes from the one repository-URL setting (`repository: url:` in
_config.yml) and dmlib.__version__: a chapter whose first cell differs is rewritten (or
reported by --check); tests/test_colab.py checks it too.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_NAME = re.compile(r"ch(\d\d)_\w+\.md")
COLAB_TAGS = "[remove-cell, colab-setup]"  # hidden on the web page; the .ipynb keeps it
_COLAB_CELL = re.compile(r"\A(---\n.*?\n---\n)\n*(```\{code-cell\} ipython3\n:tags: \[remove-cell, colab-setup\]\n"
                         r"\n.*?\n```\n\n?)?", re.S)


def chapters() -> list[Path]:
    """Every paired MyST notebook under book/ (a .md whose header names a kernel)."""
    out = []
    for md in sorted((ROOT / "book").rglob("*.md")):
        if "_build" in md.parts:
            continue
        head = md.read_text(encoding="utf-8")[:600]
        if head.startswith("---") and "kernelspec:" in head:
            out.append(md)
    return out


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """The book's one repository-URL setting, `repository: url:` of _config.yml ("" when unset)."""
    import yaml

    repo = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("repository") or {}
    return str(repo.get("url") or "").strip()


def colab_cell(chapter: int, url: str | None = None) -> str:
    """The MyST text of chapter `chapter`'s first cell (dmlib.colab.first_cell)."""
    sys.path.insert(0, str(ROOT))
    try:
        from dmlib import colab
    finally:
        sys.path.remove(str(ROOT))
    source = colab.first_cell(chapter, repository_url() if url is None else url)
    return f"```{{code-cell}} ipython3\n:tags: {COLAB_TAGS}\n\n{source}\n```\n\n"


def with_colab_cell(md: Path, text: str | None = None, url: str | None = None) -> str:
    """The text of `md` with the Colab cell as its first cell (unchanged for a page that is not a chapter)."""
    text = md.read_text(encoding="utf-8") if text is None else text
    name = CHAPTER_NAME.fullmatch(md.name)
    if not name:
        return text
    head = _COLAB_CELL.match(text)
    if not head or not head.group(1):
        raise ValueError(f"{md.name} does not start with a YAML header")
    return head.group(1) + "\n" + colab_cell(int(name.group(1)), url) + text[head.end():]


def render(md: Path) -> str:
    """The .ipynb text that the .md source defines: its cells, no outputs."""
    nb = jupytext.read(md)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"  # stable ids, so regenerating an unchanged chapter changes nothing
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = ap.parse_args()
    stale = []
    for md in chapters():
        first = with_colab_cell(md)
        if first != md.read_text(encoding="utf-8"):
            stale.append(md.relative_to(ROOT))
            if not args.check:
                md.write_text(first, encoding="utf-8")
        ipynb = md.with_suffix(".ipynb")
        text = render(md)
        if not ipynb.exists() or ipynb.read_text(encoding="utf-8") != text:
            stale.append(ipynb.relative_to(ROOT))
            if not args.check:
                ipynb.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of sync with their .md source, or a chapter's first cell with dmlib.colab.first_cell "
              "(run scripts/sync_notebooks.py):", *stale, sep="\n  ")
        return 1
    if not args.check:
        print(f"{len(chapters())} notebook(s) in sync" + (f"; rewrote {len(stale)}" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
