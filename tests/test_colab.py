"""The first cell of every chapter: on Colab it installs dmlib at this release and sets up the
session; anywhere else it does nothing (dmlib.colab, scripts/sync_notebooks.py; Chapter 1).

Colab is faked: a stand-in ``google.colab`` module with a Drive that mounts into a temporary
folder, a recorder in place of ``subprocess.run`` (nothing is installed) and of
``dmlib.fetch.everything`` (nothing is downloaded).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import jupytext
import pytest

import dmlib
from dmlib import colab, fetch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sync_notebooks", ROOT / "scripts" / "sync_notebooks.py")
sync = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sync)

CHAPTERS = [md for md in sync.chapters() if sync.CHAPTER_NAME.fullmatch(md.name)]
URL = "https://github.com/ann/dm-book"


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].strip().lower()


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A Colab runtime without a GPU: records pip commands, Drive mounts and fetches."""
    calls = {"run": [], "mount": [], "fetch": []}
    drive = types.SimpleNamespace()

    def mount(path):
        calls["mount"].append(path)
        (Path(path) / "MyDrive").mkdir(parents=True, exist_ok=True)

    drive.mount = mount
    google = types.ModuleType("google")
    module = types.ModuleType("google.colab")
    module.drive = drive
    google.colab = module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls["run"].append((cmd, kw)))
    monkeypatch.setattr(fetch, "everything", lambda **kw: calls["fetch"].append(kw) or {"fetched": True})
    monkeypatch.setattr(colab, "DRIVE_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("DMLIB_CACHE", str(tmp_path / "cache"))  # restored after the test
    monkeypatch.setenv("DMLIB_DEVICE", "cpu")
    monkeypatch.delenv("DMLIB_MODE", raising=False)
    return calls


def _run_cell(source: str) -> dict:
    namespace = {}
    exec(compile(source, "first cell", "exec"), namespace)
    return namespace


def test_elsewhere_the_cell_does_nothing(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)

    def no_subprocess(*a, **k):
        raise AssertionError("the first cell ran a command outside Colab")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    _run_cell(colab.first_cell(7, URL))
    assert colab.setup(7, use_drive=True) is None
    assert capsys.readouterr().out == ""


def test_on_colab_the_cell_installs_this_release_and_keeps_colabs_packages(fake_colab, capsys, tmp_path):
    _run_cell(colab.first_cell(7, URL))
    [(cmd, kw)] = fake_colab["run"]
    assert cmd == colab.pip_command(URL) and kw == {"check": True}
    assert cmd[:6] == [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    wanted = cmd[6:]
    assert wanted[0] == f"dmlib @ git+{URL}@v{dmlib.__version__}"
    names = {_requirement_name(w) for w in wanted}
    assert not names & {"torch", "numpy", "scipy", "matplotlib", "scikit-learn", "tqdm"}
    assert "dmlib" not in wanted  # the package index's dmlib is another project
    assert fake_colab["fetch"] == [{"verbose": True}] and fake_colab["mount"] == []
    out = capsys.readouterr().out
    assert f"dmlib {dmlib.__version__} | run mode: full | device: cpu" in out
    assert "!!! NO GPU" in out and "Chapter 7 trains" in out and "Change runtime type" in out
    assert str(tmp_path / "drive") not in out


def test_use_drive_keeps_the_trained_models_on_drive(fake_colab, capsys, tmp_path):
    source = colab.first_cell(12, URL)
    assert source.count("USE_DRIVE = False") == 1
    _run_cell(source.replace("USE_DRIVE = False", "USE_DRIVE = True"))  # what the learner flips
    assert fake_colab["mount"] == [str(tmp_path / "drive")]
    cache = tmp_path / "drive" / "MyDrive" / "dmbook" / "cache"
    assert dmlib.run.cache_dir() == cache and cache.is_dir()
    assert f"Google Drive: {cache}" in capsys.readouterr().out


def test_a_chapter_that_trains_nothing_big_has_no_cpu_alarm(fake_colab, capsys):
    out = colab.setup(3)
    assert out["device"].type == "cpu" and "!!!" not in capsys.readouterr().out
    assert colab.TRAINING_CHAPTERS == set(range(7, 14))


def test_without_a_repository_url_the_cell_says_how_to_install(fake_colab, capsys):
    _run_cell(colab.first_cell(1, ""))
    out = capsys.readouterr().out
    assert fake_colab["run"] == [] and fake_colab["fetch"] == []
    assert "names no repository" in out and "git clone" in out and "pip install -q --no-deps -e dmbook" in out


def test_every_runtime_dependency_is_on_colab_or_installed_by_the_cell():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {_requirement_name(d) for d in deps}
    assert names == set(colab.COLAB_PROVIDES) | set(colab.COLAB_EXTRA), (
        "a runtime dependency of pyproject.toml is neither on Colab (COLAB_PROVIDES) nor installed by the "
        "first cell (COLAB_EXTRA) in dmlib/colab.py")


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_opens_with_the_colab_cell(md):
    first = jupytext.read(md).cells[0]
    chapter = int(sync.CHAPTER_NAME.fullmatch(md.name).group(1))
    assert first.cell_type == "code" and first.metadata.get("tags") == ["remove-cell", "colab-setup"]
    assert first.source == colab.first_cell(chapter, sync.repository_url()), (
        f"{md.name}'s first cell is not dmlib.colab.first_cell's: run scripts/sync_notebooks.py")
    assert sync.with_colab_cell(md) == md.read_text(encoding="utf-8")


def test_the_chapters_are_all_there():
    assert [int(sync.CHAPTER_NAME.fullmatch(m.name).group(1)) for m in CHAPTERS] == list(range(1, 14))


def test_a_drifted_first_cell_is_found_and_rewritten(tmp_path):
    # A test of the test: another URL, version or hand edit makes the chapter stale, and the
    # sync puts the template back (inserting it where a chapter has none).
    md = CHAPTERS[0]
    text = md.read_text(encoding="utf-8")
    assert sync.with_colab_cell(md, text, url="https://github.com/bob/other") != text
    edited = text.replace("USE_DRIVE = False", "USE_DRIVE = True", 1)
    assert edited != text and sync.with_colab_cell(md, edited) == text
    without = text.replace(sync.colab_cell(1), "", 1)
    assert without != text and sync.with_colab_cell(md, without) == text
    assert sync.repository_url() == ""  # the repository names no URL yet: launch buttons stay hidden
    config = tmp_path / "_config.yml"
    config.write_text("title: x\nrepository:\n  url: https://github.com/ann/dm-book\n")
    assert sync.repository_url(config) == URL
