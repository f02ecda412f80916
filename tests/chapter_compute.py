"""How long each chapter takes to run: measured when it runs, recorded, shown at the top of its page.

Each time a chapter is executed in full run mode, by nbval (``tests/nbcache.py``, the first
pytest run of ``scripts/test.sh``) or by the book build itself (a chapter not in jupyter-cache),
its wall time and a description of the machine are written to the committed record
``book/_compute.json``: one entry per chapter and device kind (``cpu``, ``gpu``), the latest
full-mode run replacing the one before. Quick-mode runs write nothing there: their tiny budgets
say nothing about the time a reader will spend, so they never replace (or stand in for) a
full-mode measurement.

As a Sphinx extension (``_config.yml`` loads it) this module records the chapters the build
executes, and puts one line under each chapter's title, made from the record at the time the
page is written, e.g.

    Compute: about 3 min on a 2-core AMD EPYC CPU (full mode, torch 2.13.0, measured
    2026-12-03); GPU: not yet measured.

The wall time is the sum of the cells' run times under nbval (the kernel's start-up aside), and
jupyter-cache's execution time in the book build. The record is written atomically (a temporary
file renamed over it) under a file lock, so two pytest-xdist workers finishing chapters at once
cannot lose an entry. The log of a full-mode ``scripts/test.sh`` run can also fill it, on the
machine that ran it: ``python tests/chapter_compute.py --from-log <log>`` (or ``--from-cache
_build/.jupyter_cache/full-<hash>``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "book" / "_compute.json"
CHAPTER = re.compile(r"^ch\d\d_\w+$")  # the notebooks whose runs are recorded: book/chNN_*.md
KINDS = ("cpu", "gpu")
ABOUT = ("Measured wall time of each chapter, per device kind, from the latest full-mode run that executed it "
         "(tests/chapter_compute.py writes this file; do not edit it by hand).")


# ---------------------------------------------------------------------------------------
# The machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    if platform.system() == "Darwin":
        import subprocess

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                 text=True, timeout=5).stdout.strip()
            if out:
                return out
    return platform.processor() or platform.machine() or "unknown"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine(mode: str | None = None) -> dict:
    """The machine a chapter runs on now, as the notebook's kernel sees it: run mode, device kind
    (the device ``dmlib.run.get_device()`` picks, so ``DMLIB_DEVICE`` counts), CPU, GPU, torch."""
    import torch

    from dmlib.run import get_device, run_mode

    device = get_device()
    gpu = None
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        gpu = "Apple GPU (MPS)"
    return {
        "mode": mode or run_mode(),
        "device": "gpu" if gpu else "cpu",
        "cpu": _cpu_model(),
        "cores": _cores(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def describe_machine(m: dict) -> str:
    """``2-core AMD EPYC CPU`` or ``NVIDIA H200 GPU``: the machine of one entry, in words."""
    if m.get("device") == "gpu" and m.get("gpu"):
        name = m["gpu"]
        return name if "GPU" in name else f"{name} GPU"
    cpu = re.sub(r"\s*@.*$|\s*\b\d+-Core Processor\b|\(R\)|\(TM\)|\bCPU\b", "", m.get("cpu") or "")
    cpu = " ".join(cpu.split()) or "unknown"
    return f"{m.get('cores', '?')}-core {cpu} CPU"


# ---------------------------------------------------------------------------------------
# The record


def load(path: Path | None = None) -> dict:
    """The record (default: ``book/_compute.json``), or an empty one where there is no file yet."""
    path = path or RECORD
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    data.setdefault("about", ABOUT)
    data.setdefault("chapters", {})
    return data


def merge(record: dict, chapter: str, entry: dict) -> bool:
    """Put one measurement into the record (in place); return whether the record changed.

    Only full-mode measurements are kept; a full-mode one replaces the entry of the same chapter
    and device kind unless that entry was measured on a later day. A quick-mode measurement
    changes nothing.
    """
    if entry.get("mode") != "full" or entry.get("device") not in KINDS:
        return False
    if not (isinstance(entry.get("seconds"), (int, float)) and entry["seconds"] > 0):
        return False
    slot = record.setdefault("chapters", {}).setdefault(chapter, {})
    old = slot.get(entry["device"])
    if old == entry or (old and old.get("measured", "") > entry.get("measured", "")):
        return False  # the same, or older than what is recorded
    slot[entry["device"]] = entry
    return True


@contextlib.contextmanager
def _locked(path: Path):
    """Serialise the writers of one record (pytest-xdist workers): a lock on its folder, so no lock file is left."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(Path(path).parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomically(path: Path, record: dict) -> None:
    path = Path(path)
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def entry(seconds: float, m: dict, *, by: str, when: datetime.date | None = None) -> dict:
    """One measurement: the chapter's wall time in seconds, who ran it, when, and on what."""
    when = when or datetime.date.today()
    return {**m, "seconds": round(float(seconds), 1), "by": by, "measured": when.isoformat()}


def record_run(chapter: str, seconds: float, *, by: str, m: dict | None = None,
               path: Path | None = None, when: datetime.date | None = None) -> bool:
    """Record that ``chapter`` ran in ``seconds`` on machine ``m`` (default: this one).

    Returns whether the record changed (a quick-mode run never changes it).
    """
    if m is None:
        from dmlib.run import run_mode

        if run_mode() != "full":  # before describing the machine, which imports torch
            return False
        m = machine()
    if m.get("mode") != "full":
        return False
    path = Path(path or RECORD)
    with _locked(path):
        record = load(path)
        changed = merge(record, chapter, entry(seconds, m, by=by, when=when))
        if changed:
            _write_atomically(path, record)
    return changed


# ---------------------------------------------------------------------------------------
# The line at the top of a chapter


def format_duration(seconds: float) -> str:
    """``about 40 s``, ``about 3 min``, ``about 1.5 h``: a wall time as a reader would say it."""
    if seconds < 1:
        return "under a second"
    if seconds < 10:
        return f"about {round(seconds)} s"
    if seconds < 90:
        return f"about {5 * round(seconds / 5)} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    hours = round(seconds / 3600, 1)
    return f"about {hours:g} h"


def _measured(e: dict) -> str:
    return f"{format_duration(e['seconds'])} on {_article(describe_machine(e))} " \
           f"({e['mode']} mode, torch {e['torch'].split('+')[0]}, measured {e['measured']})"


def _article(words: str) -> str:
    """``a 2-core ...``, ``an 8-core ...``, ``an NVIDIA ...``: the article as the words are spoken."""
    first = words.split("-")[0].split()[0] if words.strip() else ""
    if first.isdigit():
        vowel = first.startswith("8") or first in ("11", "18")
    elif first.isupper() and len(first) > 1:  # initials or a brand in capitals: NVIDIA, AMD
        vowel = first[0] in "AEFHILMNORSX"
    else:
        vowel = first[:1].lower() in "aeiou"
    return f"{'an' if vowel else 'a'} {words}"


def compute_line(entries: dict | None) -> str:
    """The sentence shown under a chapter's title, from its record entries (``{"cpu": ..., "gpu": ...}``)."""
    entries = entries or {}
    cpu, gpu = entries.get("cpu"), entries.get("gpu")
    first = _measured(cpu) if cpu else "not yet measured on a CPU"
    second = _measured(gpu) if gpu else "not yet measured"
    return f"Compute: {first}; GPU: {second}."


# ---------------------------------------------------------------------------------------
# Sphinx extension


def _chapter_of(docname: str) -> str | None:
    stem = docname.rsplit("/", 1)[-1]
    return stem if CHAPTER.match(stem) and docname.startswith("book/") else None


def _note_start(app, docname, source) -> None:
    """source-read: when the build started reading (and maybe executing) a document."""
    app.env.dmbook_read_started = getattr(app.env, "dmbook_read_started", {})
    app.env.dmbook_read_started[docname] = time.time()


def executed_now(exec_data: dict | None, started: float | None, now: float) -> bool:
    """Whether myst-nb executed the notebook during this read (not a jupyter-cache hit).

    A cache hit reports the runtime of an earlier execution; a fresh execution ends after the read
    began and takes (nearly) the whole read time.
    """
    if not exec_data or not exec_data.get("succeeded") or not exec_data.get("runtime") or started is None:
        return False
    return exec_data["mtime"] >= started - 1 and now - started >= 0.99 * exec_data["runtime"]


def _record_execution(app, doctree) -> None:
    """doctree-read: a chapter the build executed itself is recorded like one nbval ran."""
    env = app.env
    chapter = _chapter_of(env.docname)
    if chapter is None:
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    exec_data = NbMetadataCollector.get_exec_data(env, env.docname)
    started = getattr(env, "dmbook_read_started", {}).get(env.docname)
    if executed_now(exec_data, started, time.time()):
        record_run(chapter, exec_data["runtime"], by="book build", path=Path(app.config.dmbook_compute_record))


def compute_paragraph(text: str):
    from docutils import nodes

    head, _, rest = text.partition(" ")
    para = nodes.paragraph(classes=["dmbook-compute"])
    para += nodes.strong(text=head)
    para += nodes.Text(" " + rest)
    return para


def _add_line(app, doctree, docname) -> None:
    """doctree-resolved: the compute line right under the chapter's title, from the record as it is now."""
    from docutils import nodes

    chapter = _chapter_of(docname)
    if chapter is None:
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    entries = load(Path(app.config.dmbook_compute_record))["chapters"].get(chapter)
    section.insert(1, compute_paragraph(compute_line(entries)))


def setup(app):
    app.add_config_value("dmbook_compute_record", str(RECORD), "env")
    app.connect("source-read", _note_start)
    app.connect("doctree-read", _record_execution)
    app.connect("doctree-resolved", _add_line)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# ---------------------------------------------------------------------------------------
# Seeding the record from a run that happened before this module existed


def seed_from_cache(folder: Path, path: Path | None = None) -> list[str]:
    """Record the chapters held by a jupyter-cache folder of this machine (``_build/.jupyter_cache/
    <mode>-<hash>``): each entry keeps the wall time and the day of the run that stored it. Only a
    full-mode folder counts, and the machine is this one (the cache never leaves it)."""
    from jupyter_cache import get_cache

    mode = Path(folder).name.rsplit("-", 1)[0]
    done = []
    for rec in get_cache(str(folder)).list_cache_records():
        chapter, seconds = Path(rec.uri).stem, rec.data.get("execution_seconds")
        if not (CHAPTER.match(chapter) and seconds):
            continue
        by = "nbval" if rec.data.get("executed_by") == "nbval" else "book build"
        if record_run(chapter, seconds, by=by, m=machine(mode), path=path, when=rec.created.date()):
            done.append(f"{chapter}: {seconds:.0f} s ({mode} mode, {by}, {rec.created.date()})")
    return done


LOG_MODE = re.compile(r"^\[test\] run mode: (\w+)", re.M)
LOG_STORED = re.compile(r"^book/(ch\d\d_\w+)\.ipynb: stored as \w+ \((\d+) s of cells\)", re.M)


def seed_from_log(log: Path, path: Path | None = None) -> list[str]:
    """Record the chapter times of a ``scripts/test.sh`` log (the lines of ``executed notebooks stored
    for the book build``), dated by the log file. Run it on the machine that wrote the log: the
    log does not describe the machine."""
    text = Path(log).read_text(encoding="utf-8", errors="replace")
    modes = LOG_MODE.findall(text)
    if modes != ["full"]:
        raise ValueError(f"{log}: not one full-mode run of scripts/test.sh (run modes found: {modes})")
    when = datetime.date.fromtimestamp(Path(log).stat().st_mtime)
    m, done = machine("full"), []
    for chapter, seconds in LOG_STORED.findall(text):
        if record_run(chapter, float(seconds), by="nbval", m=m, path=path, when=when):
            done.append(f"{chapter}: {seconds} s (full mode, nbval, {when})")
    return done


if __name__ == "__main__":
    import sys

    how = {"--from-cache": seed_from_cache, "--from-log": seed_from_log}
    if len(sys.argv) != 3 or sys.argv[1] not in how:
        sys.exit("usage: python tests/chapter_compute.py --from-cache _build/.jupyter_cache/full-<hash>\n"
                 "       python tests/chapter_compute.py --from-log <log of DMLIB_MODE=full bash scripts/test.sh>")
    for line in how[sys.argv[1]](Path(sys.argv[2])) or ["nothing recorded"]:
        print(line)
