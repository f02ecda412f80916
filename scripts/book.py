"""Build the rendered book, as scripts/book.sh does, for machines without bash (Windows).

    python scripts/book.py                          # set up .venv when needed, build _build/html
    python scripts/book.py --path-output /tmp/book  # extra arguments go to `jupyter-book build`
    python scripts/book.py --dry-run                # print the commands instead of running them

DMLIB_MODE sets the run mode as for book.sh (unset: full; quick: tiny budgets).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import setup_env  # noqa: E402  (scripts/setup_env.py, beside this file)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return ap.parse_known_args(argv)


def main(argv=None) -> int:
    args, extra = parse(argv)
    run = setup_env.Runner(args.dry_run)
    setup_env.setup(run)
    env = dict(os.environ, DMLIB_STATIC="1")  # widgets become JavaScript-only sliders on the static pages
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep instead of spinning
    print(f"[book] run mode: {env.get('DMLIB_MODE') or 'full'}; chapters not in the cache are executed "
          "(a few minutes on a CPU)")
    rc = run([setup_env.venv_program("jupyter-book"), "build", ".", "-W", "-n", "--keep-going", *extra],
             check=False, env=env)
    out = Path("_build/html")
    if "--path-output" in extra and extra.index("--path-output") + 1 < len(extra):
        out = Path(extra[extra.index("--path-output") + 1]) / "_build" / "html"
    if rc == 0 and not args.dry_run:
        print(f"[book] done: open {(setup_env.ROOT / out).resolve().as_uri()}/index.html")
    return rc


if __name__ == "__main__":
    sys.exit(main())
