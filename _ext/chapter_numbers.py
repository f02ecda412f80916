"""Equations, figures and tables numbered per chapter: (2.7), not (27).

The chapters write their own numbers into their headings ("# 2. Denoising diffusion ...",
"## 2.1 ..."), so the table of contents is not numbered (``numbered: false`` in _toc.yml): a
numbered toctree would print a second number in front of every heading and every entry of the
navigation. Without section numbers, though, Sphinx counts every numbered equation (and every
captioned figure, table or code block) through the whole book: the seventh equation of
Chapter 12 would be (137).

This extension renumbers after Sphinx has counted (``env-get-updated``, after the toctree
collector): in a chapter whose title starts with its number, "12. Latent ...", the k-th item of
each kind becomes 12.k; in any other page (the introduction, the appendices) it becomes k. The
new numbers are what the pages show next to the equations and what ``{eq}`` and ``{numref}``
references print, in the HTML and in the single-page (PDF) build alike, so references across
chapters resolve to the right chapter.
"""

from __future__ import annotations

import re

CHAPTER_TITLE = re.compile(r"\s*(\d+)\.\s")


def chapter_number(env, docname: str) -> int | None:
    """The number a page's title starts with ("12. Latent diffusion" -> 12), else None."""
    title = env.titles.get(docname)
    m = CHAPTER_TITLE.match(title.astext()) if title is not None else None
    return int(m.group(1)) if m else None


def renumber(app, env) -> list[str]:
    if not (env.config.numfig and env.toc_fignumbers):
        return []
    for docname, kinds in env.toc_fignumbers.items():
        chapter = chapter_number(env, docname)
        prefix = () if chapter is None else (chapter,)
        for figtype, numbers in kinds.items():
            # Sphinx's numbers follow the order of the page (numbered toctrees included)
            in_order = sorted(numbers, key=numbers.__getitem__)
            kinds[figtype] = {node_id: (*prefix, k) for k, node_id in enumerate(in_order, start=1)}
    return []


def setup(app):
    app.connect("env-get-updated", renumber, priority=900)  # after the toctree collector (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
