"""The compute line at the top of each chapter: measured, recorded, rendered, never typed.

``tests/chapter_compute.py`` records each chapter's wall time in full run mode (nbval's run or the
book build's own execution) in ``book/_compute.json`` and shows it under the chapter's title.
The first tests check the formatting and the record's writer on their own; the last ones read
the HTML built once per session (``built_book``, tests/conftest.py): every chapter page carries
the line, and its words are the record's.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

import chapter_compute as cc
from test_book import CHAPTER_PAGES

ROOT = Path(__file__).resolve().parents[1]

CPU = {"mode": "full", "device": "cpu", "cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cores": 2, "gpu": None,
       "torch": "2.13.0+cpu", "python": "3.11.9"}
GPU = {**CPU, "device": "gpu", "gpu": "NVIDIA H200", "cores": 16, "torch": "2.13.0+cu128"}
DAY = datetime.date(2026, 12, 3)


# ---------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize("seconds, words", [
    (0.4, "under a second"), (6.4, "about 6 s"), (42.0, "about 40 s"), (88, "about 90 s"),
    (95, "about 2 min"), (181, "about 3 min"), (59 * 60, "about 59 min"), (5400, "about 1.5 h"),
    (7200, "about 2 h")])
def test_durations_read_as_a_reader_would_say_them(seconds, words):
    assert cc.format_duration(seconds) == words


def test_machines_in_words():
    assert cc.describe_machine(CPU) == "2-core Intel Xeon CPU"
    epyc = {**CPU, "cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 8}
    assert cc.describe_machine(epyc) == "8-core AMD EPYC 7B13 CPU"
    assert cc.describe_machine(GPU) == "NVIDIA H200 GPU"
    assert cc._article("2-core Intel Xeon CPU") == "a 2-core Intel Xeon CPU"
    assert cc._article("8-core AMD EPYC CPU") == "an 8-core AMD EPYC CPU"
    assert cc._article("NVIDIA H200 GPU") == "an NVIDIA H200 GPU"
    assert cc._article("Tesla T4 GPU") == "a Tesla T4 GPU"


def test_a_fake_full_mode_record_is_rendered_from_its_numbers():
    entries = {"cpu": cc.entry(181.0, CPU, by="nbval", when=DAY),
               "gpu": cc.entry(42.0, GPU, by="book build", when=DAY)}
    assert cc.compute_line(entries) == (
        "Compute: about 3 min on a 2-core Intel Xeon CPU (full mode, torch 2.13.0, measured 2026-12-03); "
        "GPU: about 40 s on an NVIDIA H200 GPU (full mode, torch 2.13.0, measured 2026-12-03).")
    assert cc.compute_line({"cpu": entries["cpu"]}).endswith("; GPU: not yet measured.")
    assert cc.compute_line(None) == "Compute: not yet measured on a CPU; GPU: not yet measured."


# ---------------------------------------------------------------------------------------
# The record


def test_a_full_run_writes_one_entry_per_chapter_and_device_kind(tmp_path):
    path = tmp_path / "_compute.json"
    assert cc.record_run("ch01_forward_process", 181.04, by="nbval", m=CPU, path=path, when=DAY)
    assert cc.record_run("ch01_forward_process", 42.0, by="nbval", m=GPU, path=path, when=DAY)
    record = json.loads(path.read_text())
    entries = record["chapters"]["ch01_forward_process"]
    assert set(entries) == {"cpu", "gpu"}
    assert entries["cpu"]["seconds"] == 181.0 and entries["cpu"]["cpu"] == CPU["cpu"]
    assert entries["cpu"]["measured"] == "2026-12-03" and entries["cpu"]["by"] == "nbval"
    assert entries["gpu"]["gpu"] == "NVIDIA H200"
    # a later full run replaces the entry of its kind, and only that one
    later = DAY + datetime.timedelta(days=1)
    assert cc.record_run("ch01_forward_process", 200.0, by="book build", m=CPU, path=path, when=later)
    entries = json.loads(path.read_text())["chapters"]["ch01_forward_process"]
    assert entries["cpu"]["seconds"] == 200.0 and entries["gpu"]["seconds"] == 42.0
    assert [p.name for p in tmp_path.iterdir()] == ["_compute.json"]  # no temporary file left behind


def test_a_quick_run_does_not_overwrite_a_full_record(tmp_path):
    path = tmp_path / "_compute.json"
    cc.record_run("ch02_ddpm", 300.0, by="nbval", m=CPU, path=path, when=DAY)
    before = path.read_bytes()
    later = DAY + datetime.timedelta(days=1)
    assert not cc.record_run("ch02_ddpm", 5.0, by="nbval", m={**CPU, "mode": "quick"}, path=path, when=later)
    assert not cc.record_run("ch03_scores", 5.0, by="nbval", m={**CPU, "mode": "quick"}, path=path, when=later)
    assert path.read_bytes() == before
    # and the rule itself: merge() takes a full measurement, refuses a quick one
    record = cc.load(path)
    assert not cc.merge(record, "ch02_ddpm", cc.entry(5.0, {**CPU, "mode": "quick"}, by="nbval", when=later))
    assert cc.merge(record, "ch02_ddpm", cc.entry(5.0, CPU, by="nbval", when=later))


def test_an_older_measurement_does_not_replace_a_newer_one(tmp_path):
    path = tmp_path / "_compute.json"
    cc.record_run("ch02_ddpm", 300.0, by="nbval", m=CPU, path=path, when=DAY)
    assert not cc.record_run("ch02_ddpm", 100.0, by="nbval", m=CPU, path=path, when=DAY - datetime.timedelta(days=3))
    assert cc.load(path)["chapters"]["ch02_ddpm"]["cpu"]["seconds"] == 300.0


def test_in_quick_mode_nothing_is_recorded_and_no_machine_is_probed(tmp_path, clean_env):
    clean_env.setenv("DMLIB_MODE", "quick")
    clean_env.setattr(cc, "machine", lambda mode=None: pytest.fail("machine() called in quick mode"))
    assert not cc.record_run("ch01_forward_process", 3.0, by="nbval", path=tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def _write_many(args):
    path, worker = args
    for k in range(8):
        cc.record_run(f"ch{worker:02d}_w{k}", 10.0 + k, by="nbval", m=CPU, path=Path(path), when=DAY)


def test_concurrent_writers_lose_no_entry(tmp_path):
    # two pytest-xdist workers finishing chapters at the same moment
    path = tmp_path / "_compute.json"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        pool.map(_write_many, [(str(path), w) for w in range(3)])
    assert len(cc.load(path)["chapters"]) == 24


def test_machine_describes_this_one(clean_env):
    m = cc.machine("full")
    assert m["mode"] == "full" and m["device"] in cc.KINDS and m["cores"] >= 1 and m["cpu"]
    import torch

    assert m["torch"] == torch.__version__


def test_the_build_tells_a_fresh_execution_from_a_cache_hit():
    run = {"succeeded": True, "runtime": 30.0, "mtime": 1_000_040.0, "method": "cache"}
    assert cc.executed_now(run, started=1_000_005.0, now=1_000_040.5)
    # a cache hit: the runtime of an earlier execution, a read much shorter than that runtime
    assert not cc.executed_now({**run, "mtime": 900_000.0}, started=1_000_005.0, now=1_000_007.0)
    assert not cc.executed_now({**run, "mtime": 1_000_006.0}, started=1_000_005.0, now=1_000_007.0)
    assert not cc.executed_now({**run, "succeeded": False}, started=1_000_005.0, now=1_000_040.5)
    assert not cc.executed_now(None, started=1_000_005.0, now=1_000_040.5)


def test_the_committed_record_holds_only_full_mode_measurements():
    record = cc.load()
    assert record["chapters"], "book/_compute.json records no chapter"
    for chapter, entries in record["chapters"].items():
        assert (ROOT / "book" / f"{chapter}.md").is_file(), f"{chapter} is not a chapter"
        for kind, e in entries.items():
            assert kind == e["device"] and e["mode"] == "full" and e["seconds"] > 0, (chapter, kind, e)
            datetime.date.fromisoformat(e["measured"])


# ---------------------------------------------------------------------------------------
# Rendering, in a small Sphinx project and in the book


def _mini_build(tmp_path, record: dict) -> str:
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    (src / "index.rst").write_text("Home\n====\n\n.. toctree::\n\n   book/ch07_unet\n   book/notes\n")
    (src / "book" / "ch07_unet.rst").write_text("7. A U-Net\n==========\n\nFirst paragraph.\n")
    (src / "book" / "notes.rst").write_text("Notes\n=====\n\nNot a chapter.\n")
    (tmp_path / "r.json").write_text(json.dumps(record))
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        f"extensions = ['chapter_compute']\ndmbook_compute_record = {str(tmp_path / 'r.json')!r}\n")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dmbook-compute" not in (tmp_path / "out" / "book" / "notes.html").read_text()
    return (tmp_path / "out" / "book" / "ch07_unet.html").read_text()


def compute_lines(page_html: str) -> list[str]:
    """The text of each compute line on a page."""
    found = re.findall(r'<p class="dmbook-compute">(.*?)</p>', page_html, re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", "", f)).split()) for f in found]


def test_the_extension_puts_the_records_line_under_the_title(tmp_path):
    entries = {"cpu": cc.entry(181.0, CPU, by="nbval", when=DAY)}
    page = _mini_build(tmp_path, {"chapters": {"ch07_unet": entries}})
    assert compute_lines(page) == [cc.compute_line(entries)]
    h1, line, first = (page.index(s) for s in ("</h1>", 'class="dmbook-compute"', "First paragraph."))
    assert h1 < line < first


def test_a_chapter_missing_from_the_record_says_so(tmp_path):
    page = _mini_build(tmp_path, {"chapters": {}})
    assert compute_lines(page) == ["Compute: not yet measured on a CPU; GPU: not yet measured."]


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_every_chapter_page_shows_its_recorded_compute(built_book, page):
    html = (built_book / page).read_text(encoding="utf-8")
    lines = compute_lines(html)
    chapter = Path(page).stem
    assert lines == [cc.compute_line(cc.load()["chapters"].get(chapter))], (
        f"{page}: the compute line {lines} is not the one book/_compute.json gives")
    # at the top: right after the chapter's title, before any of its text
    assert html.index("</h1>") < html.index('class="dmbook-compute"') < html.index("<p>", html.index("</h1>"))


def test_a_full_mode_test_log_can_seed_the_record(tmp_path, monkeypatch):
    log = tmp_path / "ci.log"
    log.write_text("[test] run mode: full\n...\n== executed notebooks stored for the book build ==\n"
                   "book/ch01_forward_process.ipynb: stored as 0123456789ab (181 s of cells)\n"
                   "book/ch05_flow_matching.ipynb: not stored (1 of 30 code cells did not pass or did not run)\n"
                   "book/appendix_instructor.ipynb: stored as 0123456789ab (9 s of cells)\n")
    monkeypatch.setattr(cc, "machine", lambda mode=None: {**CPU, "mode": mode})
    assert len(cc.seed_from_log(log, path=tmp_path / "r.json")) == 1
    assert cc.load(tmp_path / "r.json")["chapters"]["ch01_forward_process"]["cpu"]["seconds"] == 181.0
    log.write_text(log.read_text().replace("run mode: full", "run mode: quick"))
    with pytest.raises(ValueError, match="not one full-mode run"):
        cc.seed_from_log(log, path=tmp_path / "q.json")


def test_nbvals_full_run_of_a_chapter_is_recorded_and_nothing_else(tmp_path, monkeypatch):
    import nbcache

    record = tmp_path / "book" / "_compute.json"
    record.parent.mkdir()
    monkeypatch.setattr(cc, "RECORD", record)
    monkeypatch.setattr(cc, "machine", lambda mode=None: CPU)
    monkeypatch.setenv("DMLIB_MODE", "full")
    note = nbcache._record_compute(record.parent / "ch07_unet.ipynb", 181.0)
    assert note == f"; 181 s recorded in {record}"
    assert cc.load()["chapters"]["ch07_unet"]["cpu"]["by"] == "nbval"
    # a notebook outside book/ (the plugin's own tests) or not a chapter is not recorded
    assert nbcache._record_compute(tmp_path / "ch07_unet.ipynb", 5.0) == ""
    assert nbcache._record_compute(record.parent / "appendix_instructor.ipynb", 5.0) == ""
    monkeypatch.setenv("DMLIB_MODE", "quick")
    assert nbcache._record_compute(record.parent / "ch08_guidance_mnist.ipynb", 5.0) == ""
    assert set(cc.load()["chapters"]) == {"ch07_unet"}


def test_nbval_in_full_mode_writes_the_record_end_to_end(tmp_path):
    # the pytest plugin (tests/nbcache.py) as scripts/test.sh runs it, on a tiny chapter in a stand-in book/
    import jupytext
    import nbformat

    book = tmp_path / "book"
    book.mkdir()
    md = book / "ch99_tiny.md"
    md.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  display_name: "
                  "Python 3\n  language: python\n  name: python3\n---\n\n# 99. Tiny\n\n"
                  "```{code-cell} ipython3\nimport time\ntime.sleep(0.5)\n```\n")
    nbformat.write(jupytext.read(md, fmt="md:myst"), md.with_suffix(".ipynb"))
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\nimport chapter_compute, nbcache\n"
        f"nbcache.CACHE_ROOT = nbcache.Path({str(tmp_path / 'cache')!r})\n"
        f"chapter_compute.RECORD = nbcache.Path({str(book / '_compute.json')!r})\n"
        "def pytest_configure(config):\n    config.pluginmanager.register(nbcache, 'dmbook-nbcache')\n")
    env = {**os.environ, "DMLIB_MODE": "full"}
    env.pop("MPLBACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--nbval-lax",
                           "book/ch99_tiny.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "book/ch99_tiny.ipynb: stored as" in out and "recorded in" in out, out[-3000:]
    e = cc.load(book / "_compute.json")["chapters"]["ch99_tiny"]["cpu"]
    assert e["mode"] == "full" and e["by"] == "nbval" and 0.5 <= e["seconds"] < 60
    assert e["measured"] == datetime.date.today().isoformat()
