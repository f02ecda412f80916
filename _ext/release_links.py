"""Sphinx extension of the book: each chapter page offers its notebook, and says the release.

* **Download**: the chapter's ``.ipynb`` (the paired notebook of ``book/chNN_*.md``) is copied
  next to its page in the build, and the header's download menu links to it.
* **Launch**: Colab and Binder buttons open that ``.ipynb`` from the repository at the
  release's tag, built from the one setting ``repository: url:`` of ``_config.yml``. Jupyter
  Book's own launch buttons would point at the page's source, the ``.md``, which Colab cannot
  run; they stay off. While the setting is empty no launch button appears.
* **Version**: the footer names the release, ``dmlib.__version__`` (one version for the book
  and the library), read from ``dmlib/__init__.py`` without importing it.

``DMBOOK_REPOSITORY_URL`` in the environment overrides the setting; tests/test_book.py builds
the book with it to check where the buttons lead.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = re.compile(r"book/ch\d\d_\w+")
ENV = "DMBOOK_REPOSITORY_URL"


def book_version(root: Path = ROOT) -> str:
    """dmlib.__version__, read from the source (the Sphinx process need not import torch)."""
    text = (root / "dmlib" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def github_parts(url: str) -> tuple[str, str] | None:
    """(owner, repository) of a GitHub URL, else None."""
    m = re.fullmatch(r"https?://(?:www\.)?github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", url.strip())
    return (m[1], m[2]) if m else None


def launch_links(url: str, docname: str, version: str) -> dict[str, str]:
    """{"colab": ..., "binder": ...} for the notebook ``docname``.ipynb at tag ``v``version;
    {} when ``url`` is empty or not a GitHub repository."""
    parts = github_parts(url or "")
    if not parts:
        return {}
    owner, repo = parts
    tag, path = f"v{version}", f"{docname}.ipynb"
    return {
        "colab": f"https://colab.research.google.com/github/{owner}/{repo}/blob/{tag}/{path}",
        "binder": f"https://mybinder.org/v2/gh/{owner}/{repo}/{tag}?labpath={path}",
    }


def repository_url(app) -> str:
    if os.environ.get(ENV):
        return os.environ[ENV].strip()
    return str((app.config.html_theme_options or {}).get("repository_url") or "").strip()


def _config_inited(app, config):
    version = book_version()
    config.version = config.release = version
    options = dict(config.html_theme_options or {})
    footer = options.get("extra_footer") or ""
    options["extra_footer"] = (f'{footer}<p class="dmbook-version">Edition {version} '
                               f'(the book and its library dmlib {version})</p>')
    config.html_theme_options = options


def _page_context(app, pagename, templatename, context, doctree):
    if not CHAPTER.fullmatch(pagename) or app.builder.format != "html":
        return
    notebook = Path(app.srcdir) / f"{pagename}.ipynb"
    if not notebook.is_file():
        return
    target = Path(app.outdir) / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, target)
    buttons = context.setdefault("header_buttons", [])
    download = {"type": "link", "url": notebook.name, "text": ".ipynb", "icon": "fas fa-code",
                "tooltip": "Download this chapter as a Jupyter notebook", "label": "download-notebook-button"}
    group = next((b for b in buttons if b.get("label") == "download-buttons"), None)
    if group is not None:
        group["buttons"].insert(0, download)
    else:
        buttons.append({"type": "group", "tooltip": "Download this page", "icon": "fas fa-download",
                        "buttons": [download], "label": "download-buttons"})
    links = launch_links(repository_url(app), pagename, app.config.release)
    if links:
        buttons.append({"type": "group", "tooltip": "Run this chapter's notebook", "icon": "fas fa-rocket",
                        "label": "launch-buttons", "buttons": [
                            {"type": "link", "url": links["colab"], "text": "Colab", "label": "launch-colab-button",
                             "tooltip": "Open the notebook in Google Colab", "icon": "fas fa-play"},
                            {"type": "link", "url": links["binder"], "text": "Binder", "label": "launch-binder-button",
                             "tooltip": "Open the notebook on mybinder.org", "icon": "fas fa-play"}]})


def setup(app):
    app.connect("config-inited", _config_inited)
    app.connect("html-page-context", _page_context, priority=510)  # after the theme's own buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
