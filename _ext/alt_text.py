"""Alt text for the figures the chapters' code cells draw: the words of the figure's caption.

A chapter draws a figure with Matplotlib in a code cell and describes it in the paragraph that
follows, ``_**Figure 12.4.** Left: ..._``. myst-nb turns the cell's image output into an image
with no alt text (the HTML writer then falls back to the file name, which a screen reader
reads out as noise). This extension gives every such image the text of its caption:
``Figure 12.4: Left: ...``, trimmed to a length a screen reader can take in one go. The frames
of a JavaScript slider (``dmlib.plot.time_slider``, raw HTML) get the same text after their
own label (``Figure 1.3, t = 0.50: ...``).

Explicit alt text always wins: an image that already has one (the cell's metadata
``mystnb: {image: {alt: ...}}``, or a ``{figure}`` directive's ``:alt:``) is left alone; an
image in a ``{figure}`` without one gets the figure's caption. An image with neither a caption
after its cell nor explicit alt text keeps none: ``tests/test_a11y.py`` finds it on the built
page and names the chapter.
"""

from __future__ import annotations

import html
import re

from docutils import nodes

CAPTION = re.compile(r"^\s*(Figure\s+\d+\.\d+)\.?\s*(.*)$", re.S)
MAX_CHARS = 300  # about three sentences
IMG_TAG = re.compile(r"<img\b[^>]*>", re.I)
ALT_ATTR = re.compile(r"""\balt\s*=\s*("[^"]*"|'[^']*')""", re.I)


def trim(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` on one line, cut after the last whole sentence (else word) that fits in ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("; "))
    if end >= limit // 3:
        return cut[:end + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + " …"


SYMBOLS = {"pm": "±", "sim": "~", "mid": "|", "cdot": "·", "times": "×", "approx": "≈", "to": "→", "infty": "∞",
           "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠", "ell": "ℓ", "in": "∈", "propto": "∝"}


def tex_to_words(tex: str) -> str:
    """TeX made readable aloud: ``\\sqrt{1-\\beta_k}`` becomes ``sqrt(1-beta_k)``."""
    t = re.sub(r"\\(left|right|[bB]igg?)\b", "", tex)
    t = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", t)
    t = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", t)
    t = re.sub(r"\\(mathcal|mathbb|mathrm|mathbf|boldsymbol|operatorname|textrm|text)\s*\{([^{}]*)\}", r"\2", t)
    t = re.sub(r"\\[,;:! ]", " ", t).replace("\\|", "‖")
    t = re.sub(r"\\([A-Za-z]+)", lambda m: f" {SYMBOLS.get(m.group(1), m.group(1))} ", t)
    t = re.sub(r"([_^])\s*\{([^{}]{2,})\}", r"\1(\2)", t)  # x_{t-1}: x_(t-1)
    t = " ".join(t.replace("{", "").replace("}", "").split())
    t = re.sub(r"\s*([_^])\s*", r"\1", t)
    t = re.sub(r"([(\[])\s+|\s+([)\]/,.])", lambda m: m.group(1) or m.group(2), t)
    return re.sub(r"(?<=\S[-/])\s+", "", t)  # 1-beta, alpha/sigma: as written, without the spaces added above


def readable_text(node) -> str:
    """A caption's words, its formulas written out readably (``tex_to_words``)."""
    if isinstance(node, nodes.math):
        return tex_to_words(node.astext())
    if isinstance(node, nodes.Text):
        return str(node)
    return "".join(readable_text(child) for child in node.children)


def caption_alt(caption_text: str) -> str | None:
    """``Figure 12.4: <caption>`` from a caption paragraph's text, or None if it is not a caption."""
    m = CAPTION.match(" ".join(caption_text.split()))
    if not m:
        return None
    label, rest = m.groups()
    return f"{label}: {trim(rest, MAX_CHARS - len(label) - 2)}" if rest else label


def _next_block(node):
    """The next sibling of ``node`` that a reader sees (labels and comments skipped)."""
    parent = node.parent
    if parent is None:
        return None
    i = parent.index(node) + 1
    while i < len(parent) and isinstance(parent[i], (nodes.target, nodes.comment, nodes.substitution_definition)):
        i += 1
    return parent[i] if i < len(parent) else None


def _cell_of(node):
    """The code cell (myst-nb's ``container`` with class ``cell``) an output image belongs to."""
    while node is not None:
        if isinstance(node, nodes.container) and "cell" in node.get("classes", []):
            return node
        node = node.parent
    return None


def _images(cell) -> list:
    """The output images of a cell without alt text: image nodes and raw HTML holding <img> tags."""
    found = []
    for node in cell.findall(lambda n: isinstance(n, (nodes.image, nodes.raw))):
        if isinstance(node, nodes.image) and not node.get("alt"):
            found.append(node)
        elif isinstance(node, nodes.raw) and "html" in node.get("format", "").split() \
                and IMG_TAG.search(node.astext()):
            found.append(node)
    return found


def alt_for_raw_html(text: str, alt: str) -> str:
    """Every <img> of a raw HTML output gets ``alt``; one with a short alt of its own (a slider frame,
    ``t = 0.50``) keeps it inside: ``Figure 1.3, t = 0.50: <caption>``."""
    label, _, rest = alt.partition(": ")

    def fix(match):
        tag = match.group(0)
        own = ALT_ATTR.search(tag)
        own_text = html.unescape(own.group(1)[1:-1]).strip() if own else ""
        if len(own_text) >= 40:  # already a description of its own
            return tag
        text = f"{label}, {own_text}: {rest}" if own_text else alt
        new_attr = f'alt="{html.escape(text, quote=True)}"'
        if own:
            return tag[:own.start()] + new_attr + tag[own.end():]
        return re.sub(r"^<img\b", "<img " + new_attr, tag, flags=re.I)

    return IMG_TAG.sub(fix, text)


def add_alt_text(doctree) -> int:
    """Give the output images of every captioned code cell (and every {figure}) its caption's words.
    Returns the number of images changed."""
    changed = 0
    for figure in list(doctree.findall(nodes.figure)):
        caption = next(iter(figure.findall(nodes.caption)), None)
        for image in figure.findall(nodes.image):
            if caption is not None and not image.get("alt"):
                text = readable_text(caption)
                image["alt"] = caption_alt(text) or trim(text)
                changed += 1
    cells = {id(c): c for c in (_cell_of(img) for img in doctree.findall(nodes.image)) if c is not None}
    cells.update({id(c): c for c in (_cell_of(r) for r in doctree.findall(nodes.raw)) if c is not None})
    for cell in cells.values():
        targets = _images(cell)
        after = _next_block(cell)
        alt = caption_alt(readable_text(after)) if isinstance(after, nodes.paragraph) else None
        if not targets or alt is None:
            continue
        n_images = sum(isinstance(t, nodes.image) for t in targets)
        k = 0
        for target in targets:
            if isinstance(target, nodes.image):
                k += 1
                label, _, rest = alt.partition(": ")
                target["alt"] = alt if n_images == 1 else f"{label} (image {k} of {n_images}): {rest}"
            else:
                new = alt_for_raw_html(target.astext(), alt)
                if new == target.astext():
                    continue
                target.replace(target[0], nodes.Text(new))
            changed += 1
    return changed


def _on_doctree_resolved(app, doctree, docname) -> None:
    add_alt_text(doctree)


def setup(app):
    # after references are resolved: a caption's "{eq}`eq-marginal`" reads "(1.4)", as on the page
    app.connect("doctree-resolved", _on_doctree_resolved)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
