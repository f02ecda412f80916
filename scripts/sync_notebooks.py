"""Regenerate every book/**/*.ipynb from its MyST-Markdown source, without outputs.

The .md file is the source a person edits and reviews; the .ipynb is derived from it for
Colab, JupyterLab and nbval. Run after editing a chapter:

    .venv/bin/python scripts/sync_notebooks.py          # rewrite the .ipynb files
    .venv/bin/python scripts/sync_notebooks.py --check  # exit 1 if any .ipynb is stale

tests/test_pairing.py runs the same check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]


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
        ipynb = md.with_suffix(".ipynb")
        text = render(md)
        if not ipynb.exists() or ipynb.read_text(encoding="utf-8") != text:
            stale.append(ipynb.relative_to(ROOT))
            if not args.check:
                ipynb.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of sync with their .md source (run scripts/sync_notebooks.py):", *stale, sep="\n  ")
        return 1
    if not args.check:
        print(f"{len(chapters())} notebook(s) in sync" + (f"; rewrote {len(stale)}" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
