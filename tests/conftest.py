"""Shared fixtures for dmlib's unit tests (kept small on purpose).

* Matplotlib is switched to the non-interactive Agg backend before any test module imports
  ``dmlib.plot`` (which imports pyplot), so plotting tests never need a display.
* torch runs single-threaded in the test process unless OMP_NUM_THREADS says otherwise: the
  unit tests use small tensors, where intra-op threads only add overhead -- and on a busy
  2-core machine (or under pytest-xdist) OpenMP's spinning threads made single element-wise
  ops ~50x slower. It also makes float reductions independent of the machine's core count.
  Notebook kernels are separate processes and are not affected.
"""

import os

import matplotlib

matplotlib.use("Agg", force=True)

import pytest  # noqa: E402
import torch  # noqa: E402

if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# Environment variables that change dmlib's behaviour (dmlib.run, dmlib.plot, dmlib.data).
DMLIB_ENV = ("DMLIB_MODE", "DMLIB_DEVICE", "DMLIB_STATIC", "DMLIB_DATA")


@pytest.fixture
def clean_env(monkeypatch):
    """Unset every DMLIB_* variable for one test, so the outer environment (CI sets
    DMLIB_MODE=quick, the book build sets DMLIB_STATIC) cannot change what it checks.
    Not autouse: notebook tests must keep inheriting the outer environment."""
    for name in DMLIB_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(autouse=True)
def _same_global_seed():
    """Every test starts from the same state of torch's global generator, whatever ran before
    it in the same process (pytest-xdist spreads tests over workers differently from run to
    run), so a test that draws without a generator still repeats exactly."""
    torch.manual_seed(0)


# the repository URL of the test build only (_ext/release_links.py reads it; _config.yml names none yet)
TEST_REPOSITORY = "https://github.com/dmbook-test/diffusion-book"


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The HTML book, built once per session (in the run mode of the test run) into a temporary
    folder; the build log is in build.log two folders up. Used by test_book.py and test_numbering.py."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # keep the kernel's inline figures
    env["DMLIB_STATIC"] = "1"
    env["DMBOOK_REPOSITORY_URL"] = TEST_REPOSITORY  # launch buttons on, to check where they lead (test_book.py)
    jb = Path(sys.executable).parent / "jupyter-book"
    t0 = time.time()
    proc = subprocess.run(
        [str(jb), "build", str(root), "--path-output", str(out), "-W", "-n", "--keep-going"],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    assert proc.returncode == 0, f"jupyter-book build failed (exit {proc.returncode}):\n{log[-6000:]}"
    print(f"book built in {time.time() - t0:.0f} s")
    return out / "_build" / "html"


def pytest_configure(config):
    """Register tests/nbcache.py: with --nbval(-lax), every notebook that runs without a failure
    is stored in the jupyter-cache that the book build reads, so each chapter executes once
    per test run."""
    import nbcache

    if not config.pluginmanager.is_registered(nbcache):
        config.pluginmanager.register(nbcache, "dmbook-nbcache")


def pytest_collection_modifyitems(config, items):
    """The longest files first, so that the two workers of scripts/test.sh finish together
    (pytest-xdist's --dist loadfile hands whole files out in collection order, each to the next
    free worker): files with tests marked ``slow``, then the chapters, longest first by their
    measured compute (book/_compute.json, tests/chapter_compute.py), then the rest as
    collected. Only the order changes; items of one file stay together."""
    import json
    from pathlib import Path

    record = Path(__file__).resolve().parents[1] / "book" / "_compute.json"
    try:
        chapters = json.loads(record.read_text())["chapters"]
        seconds = {name: max(e.get("seconds") or 0 for e in kinds.values()) for name, kinds in chapters.items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        seconds = {}
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def key(item):
        if item.path in slow_files:
            return (0, 0.0)
        if item.path.suffix == ".ipynb":
            return (1, -seconds.get(item.path.stem, 0.0))
        return (2, 0.0)

    items.sort(key=key)
