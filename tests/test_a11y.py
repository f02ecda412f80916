"""The book for readers who use a screen reader or see colours differently.

* Every image on a chapter page has alt text that says something: the caption of its figure
  (``_ext/alt_text.py`` gives it), never a file name, never empty.
* dmlib's colour cycle is Okabe and Ito's colour-blind-safe palette: its first six colours (all a
  chapter uses) stay apart under simulated protanopia, deuteranopia and tritanopia, where
  Matplotlib's default (tab10) lets its green and red run together.
* The chapters' code takes its hues from that cycle ("C0", "C1", ...), never pairs a red with a
  green named colour in one figure, and uses no rainbow or red-green colour map.

The HTML checks read the book built once per session (``built_book``, tests/conftest.py); each
check is also run on a planted bug, to show that it can fail.
"""

from __future__ import annotations

import ast
import colorsys
import re
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from test_book import CHAPTER_PAGES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))
import alt_text  # noqa: E402

CHAPTERS = sorted((ROOT / "book").glob("ch[0-9][0-9]_*.md"))


# ---------------------------------------------------------------------------------------
# Alt text on the built pages

IMG = re.compile(r"<img\b[^>]*>", re.I)
ATTR = re.compile(r"""\b(alt|src)\s*=\s*("[^"]*"|'[^']*')""", re.I)
FILE_NAME = re.compile(r"(^|[/\\])[\w.-]+\.(png|jpe?g|svg|gif|webp)$|^data:", re.I)


def alt_problems(page_html: str) -> list[str]:
    """Each <img> of a page whose alt text is missing, short (< 10 characters) or a file name."""
    problems = []
    for tag in IMG.findall(page_html):
        attrs = {k.lower(): unescape(v[1:-1]) for k, v in ATTR.findall(tag)}
        alt, src = attrs.get("alt"), attrs.get("src", "")[:60]
        if alt is None:
            problems.append(f"no alt: {src}")
        elif FILE_NAME.search(alt.strip()) or alt.strip() == Path(attrs.get("src", "")).name:
            problems.append(f"alt is a file name ({alt!r}): {src}")
        elif len(alt.strip()) < 10:
            problems.append(f"alt too short ({alt!r}): {src}")
    return problems


def test_the_alt_check_catches_missing_short_and_file_name_alts():
    bad = ('<img src="../_images/a1.png"><img src="b.png" alt="../_images/b.png">'
           '<img src="c.png" alt="c.png"><img src="d.png" alt="t = 0.5"><img src="e.png" alt="">'
           '<img src="data:image/png;base64,AAAA" alt="data:image/png;base64,AAAA">')
    problems = alt_problems(bad)
    assert len(problems) == 6, problems
    assert alt_problems('<img src="x.png" alt="Figure 1.2: samples of the two moons at four times">') == []


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_every_image_on_a_chapter_page_has_meaningful_alt_text(built_book, page):
    html = (built_book / page).read_text(encoding="utf-8")
    assert IMG.search(html), f"{page} has no image"
    problems = alt_problems(html)
    assert not problems, (f"{page}: {len(problems)} images without meaningful alt text (give the figure a "
                          f"caption paragraph '_**Figure N.M.** ..._' right after its cell, or the cell the "
                          f"metadata mystnb: {{image: {{alt: ...}}}}): {problems[:5]}")


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_a_figures_alt_text_is_its_caption(built_book, page):
    html = (built_book / page).read_text(encoding="utf-8")
    alts = [unescape(a) for a in re.findall(r'<img\b[^>]*\balt="([^"]*)"', html)]
    captions = re.findall(r"<strong>(Figure \d+\.\d+)\.</strong>", html)
    labelled = {a.split(":")[0].split(" (image")[0].split(",")[0] for a in alts if a.startswith("Figure ")}
    assert labelled, f"{page}: no image takes its alt text from a caption"
    assert labelled <= set(captions), labelled - set(captions)


# ---------------------------------------------------------------------------------------
# Alt text: the transform on its own


def _doctree(caption: str | None, *, alt: str | None = None, n_images: int = 1, raw: str | None = None):
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    doc = new_document("test", get_default_settings(Parser))
    section = nodes.section()
    doc += section
    cell = nodes.container(classes=["cell", "tag_hide-input"])
    output = nodes.container(classes=["cell_output"])
    for k in range(n_images):
        image = nodes.image(uri=f"../_images/img{k}.png")
        if alt:
            image["alt"] = alt
        output += image
    if raw:
        output += nodes.raw("", raw, format="html")
    cell += output
    section += cell
    if caption is not None:
        para = nodes.paragraph()
        emph = nodes.emphasis()
        emph += nodes.strong(text=caption.split(" ", 2)[0] + " " + caption.split(" ", 2)[1])
        emph += nodes.Text(" " + caption.split(" ", 2)[2])
        para += emph
        section += para
    return doc


def _alts(doc):
    from docutils import nodes

    return [img.get("alt") for img in doc.findall(nodes.image)]


def test_a_cells_image_gets_the_caption_that_follows_the_cell():
    doc = _doctree("Figure 12.4. Left: the cost of one step.  Right: images per second.")
    assert alt_text.add_alt_text(doc) == 1
    assert _alts(doc) == ["Figure 12.4: Left: the cost of one step. Right: images per second."]
    two = _doctree("Figure 3.5. Two figures.", n_images=2)
    alt_text.add_alt_text(two)
    assert _alts(two) == ["Figure 3.5 (image 1 of 2): Two figures.", "Figure 3.5 (image 2 of 2): Two figures."]


def test_explicit_alt_text_wins_and_an_uncaptioned_image_keeps_none():
    doc = _doctree("Figure 1.1. A caption.", alt="Four panels of noisy points")
    alt_text.add_alt_text(doc)
    assert _alts(doc) == ["Four panels of noisy points"]
    doc = _doctree("Some text that is not a caption.")
    alt_text.add_alt_text(doc)
    assert _alts(doc) == [None]  # left for test_every_image_on_a_chapter_page_has_meaningful_alt_text to find


def test_slider_frames_keep_their_label_inside_the_caption():
    frames = '<div><img src="data:image/png;base64,AA" alt="t = 0.50" style="x"><img src="data:,B"></div>'
    doc = _doctree("Figure 1.3. The marginals along the chain.", n_images=0, raw=frames)
    alt_text.add_alt_text(doc)
    from docutils import nodes

    html = next(iter(doc.findall(nodes.raw))).astext()
    assert 'alt="Figure 1.3, t = 0.50: The marginals along the chain."' in html
    assert 'alt="Figure 1.3: The marginals along the chain."' in html
    assert alt_problems(html) == []


def test_formulas_in_a_caption_are_written_out_readably():
    from docutils import nodes

    doc = _doctree("Figure 1.2. The residual of the chain.")
    para = next(iter(doc.findall(nodes.paragraph)))
    para[0] += nodes.math(text=r"x_t - \sqrt{\bar\alpha_t}\,x_0")
    alt_text.add_alt_text(doc)
    assert _alts(doc) == ["Figure 1.2: The residual of the chain.x_t - sqrt(bar alpha_t) x_0"]
    assert alt_text.tex_to_words(r"\epsilon \sim \mathcal{N}(0, I)") == "epsilon ~ N(0, I)"
    assert alt_text.tex_to_words(r"q(x_{t-1} \mid x_t, x_0)") == "q(x_(t-1) | x_t, x_0)"
    assert alt_text.tex_to_words(r"\ell = \log(\alpha/\sigma)") == "ℓ = log (alpha/sigma)"


def test_long_captions_are_trimmed_at_a_sentence():
    caption = "Figure 9.2. " + " ".join(f"Sentence number {k} says a little more." for k in range(40))
    alt = alt_text.caption_alt(caption)
    assert alt.startswith("Figure 9.2: Sentence number 0") and alt.endswith(".") and len(alt) <= alt_text.MAX_CHARS
    assert alt_text.caption_alt("A paragraph that is not a caption.") is None


# ---------------------------------------------------------------------------------------
# Colours: dmlib's palette

OKABE_ITO = {"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"}
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

# Machado, Oliveira and Fernandes (2009): full-severity dichromacy as a linear map of linear RGB.
CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
MIN_DELTA_E = 12.0  # CIE76 distance that two line colours of one figure keep under each simulation


def _lab(rgb) -> np.ndarray:
    """CIELAB (D65) of sRGB colours in [0, 1], shape (N, 3)."""
    c = np.asarray(rgb, float)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _simulated(hex_colours, matrix) -> np.ndarray:
    from matplotlib.colors import to_rgb

    c = np.array([to_rgb(h) for h in hex_colours])
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    lin = np.clip(lin @ np.array(matrix).T, 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def closest_pair_under_cvd(hex_colours) -> tuple[float, str]:
    """The smallest CIELAB distance between two of the colours, over the three simulations."""
    worst = (np.inf, "")
    for name, matrix in CVD.items():
        lab = _lab(_simulated(hex_colours, matrix))
        d = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(len(lab)) * 1e9
        i, j = np.unravel_index(np.argmin(d), d.shape)
        worst = min(worst, (float(d[i, j]), f"{hex_colours[i]} and {hex_colours[j]} under {name}"))
    return worst


def test_dmlibs_colour_cycle_is_okabe_ito():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from dmlib import plot

    assert set(plot.PALETTE) == OKABE_ITO and len(plot.PALETTE) == len(OKABE_ITO)
    plot.use_style()
    cycle = [c.upper() for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
    assert cycle == [c.upper() for c in plot.PALETTE]
    # "C2" and "C3" are the hues the captions call green and red
    assert [to_hex(f"C{k}").upper() for k in range(4)] == ["#0072B2", "#E69F00", "#009E73", "#D55E00"]


def test_the_palettes_colours_stay_apart_for_colour_blind_readers():
    from dmlib import plot

    distance, pair = closest_pair_under_cvd(list(plot.PALETTE[:6]))
    assert distance >= MIN_DELTA_E, f"{pair}: only {distance:.1f} apart"


def test_the_colour_blindness_check_fails_on_matplotlibs_default_cycle():
    # the planted bug: tab10, whose green (C2) and red (C3) a deuteranope can hardly tell apart
    distance, pair = closest_pair_under_cvd(TAB10[:6])
    assert distance < MIN_DELTA_E, (distance, pair)
    assert closest_pair_under_cvd(TAB10[2:4])[0] < MIN_DELTA_E


# ---------------------------------------------------------------------------------------
# Colours: the chapters' code

COLOUR_KWARGS = {"color", "colour", "c", "colors", "facecolor", "facecolors", "edgecolor", "edgecolors", "fc", "ec",
                 "mfc", "mec", "markerfacecolor", "markeredgecolor", "ecolor"}
PLOT_CALLS = {"plot", "loglog", "semilogx", "semilogy", "errorbar", "step"}
FMT = re.compile(r"^[-.:,o^v<>sp*hH+xXdD|_1-4]*([bgrcmykw])[-.:,o^v<>sp*hH+xXdD|_1-4]*$")
# rainbow-like maps whose lightness is not monotone, and red-green diverging maps
BAD_CMAPS = {"jet", "rainbow", "gist_rainbow", "hsv", "nipy_spectral", "gist_ncar", "prism", "flag", "brg",
             "turbo", "spectral", "rdylgn", "rdgn"}


def _code_cells(md_text: str) -> list[str]:
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", md_text, re.S | re.M)
    return ["\n".join(line for line in cell.splitlines() if not line.startswith((":", "%", "!")))
            for cell in cells]


def colours_used(code: str) -> list[str]:
    """The colour strings a piece of chapter code gives Matplotlib: colour keyword arguments, format
    strings ("r--"), any "tab:..." / "xkcd:..." / "#rrggbb" string, and colour names in a list literal."""
    from matplotlib.colors import is_color_like

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in COLOUR_KWARGS:
                    found += [c.value for c in ast.walk(kw.value)
                              if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in PLOT_CALLS:
                found += [FMT.match(a.value).group(1) for a in node.args
                          if isinstance(a, ast.Constant) and isinstance(a.value, str) and FMT.match(a.value)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(("tab:", "xkcd:", "#")) and is_color_like(node.value):
            found.append(node.value)
        elif isinstance(node, (ast.List, ast.Tuple)):  # a list of colours given to a plot later
            found += [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
                      and e.value.isalpha() and len(e.value) >= 3 and is_color_like(e.value)]
    return [c for c in found if is_color_like(c) and c.lower() != "none"]


def hue_family(colour: str) -> str | None:
    """"red", "green", "other" for a chromatic named colour; None for a grey or a cycle colour ("C3")."""
    from matplotlib.colors import to_rgb

    if re.fullmatch(r"C\d+", colour):
        return None
    h, s, v = colorsys.rgb_to_hsv(*to_rgb(colour))
    if s < 0.25 or v < 0.2:
        return None
    deg = 360 * h
    return "red" if deg < 20 or deg >= 330 else "green" if 75 <= deg < 165 else "other"


def colour_problems(code: str) -> list[str]:
    """What in one cell (one figure) a colour-blind reader could not read, or bypasses the palette."""
    problems = []
    colours = colours_used(code)
    families = {c: hue_family(c) for c in colours}
    reds = sorted({c for c, f in families.items() if f == "red"})
    greens = sorted({c for c, f in families.items() if f == "green"})
    if reds and greens:
        problems.append(f"red {reds} and green {greens} in one figure")
    named = sorted({c for c, f in families.items() if f is not None})
    if named:
        problems.append(f"hues {named} not from the palette: use 'C0', 'C1', ... (dmlib.plot.PALETTE)")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        tree = None
    for node in ast.walk(tree) if tree else []:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.lower().removesuffix("_r") in BAD_CMAPS:
            problems.append(f"colour map {node.value!r} is not colour-blind safe")
    return problems


PLANTED = {
    "named red and green": ('ax.plot(x, y, color="red")\nax.plot(x, z, color="green")\n', "red ['red'] and green"),
    "format strings": ('ax.plot(x, y, "r-")\nax.plot(x, z, "g--")\n', "red ['r'] and green ['g']"),
    "tableau names in a list": ('colors = ["tab:red", "tab:green"]\nax.bar(x, y, color=colors)\n', "red ['tab:red']"),
    "names in a list": ('for c in ["green", "crimson"]:\n    ax.plot(x, y, color=c)\n', "red ['crimson']"),
    "a rainbow map": ('ax.imshow(img, cmap="jet")\n', "colour map 'jet'"),
    "a red-green map": ('ax.imshow(img, cmap="RdYlGn_r")\n', "colour map 'RdYlGn_r'"),
    "a hue outside the palette": ('ax.plot(x, y, color="tab:purple")\n', "not from the palette"),
}


@pytest.mark.parametrize("case", PLANTED)
def test_the_colour_check_catches_a_planted_bug(case):
    code, expected = PLANTED[case]
    assert any(expected in p for p in colour_problems(code)), colour_problems(code)


def test_the_colour_check_accepts_the_palette_and_greys():
    code = ('for i, t in enumerate(ts):\n    ax.plot(x, y, "o-", color=f"C{i}")\nax.plot(x, y, "C3--")\n'
            'ax.axhline(1, color="k", ls="--")\nax.contour(a, b, c, colors="0.6")\n'
            'ax.imshow(img, cmap="magma")\nax.text(0, 0, "red", color="w")\nax.plot(x, y, "k:")\n')
    assert colour_problems(code) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_uses_colour_blind_safe_colours(chapter):
    problems = [f"cell {k}: {p}" for k, cell in enumerate(_code_cells(chapter.read_text(encoding="utf-8")))
                for p in colour_problems(cell)]
    assert not problems, f"{chapter.name}: {problems}"
