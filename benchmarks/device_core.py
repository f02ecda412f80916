"""The device core on whatever accelerator is here: every chapter in full mode, and the cost
of a sampler step.

    .venv/bin/python benchmarks/device_core.py            # every chapter in full mode + step timings
    .venv/bin/python benchmarks/device_core.py --quick    # step timings only, small batches (seconds)

Two measurements, written to ``results/device_core.json`` with the machine:

1. **Chapters.** Each chapter notebook of book/ runs top to bottom in a fresh kernel on the
   default device (``dmlib.run.get_device()``: CUDA, then MPS, then the CPU) in the chosen run
   mode; the wall time and any error are recorded, and the executed notebooks' logs are kept
   under ``results/device_core_logs/``.
2. **Sampler steps.** DDIM and DDPM with an MLP on a batch of 2D points and a small
   image-shaped batch: milliseconds per step, and host syncs per ``sample()`` call counted
   the way tests/test_devices.py counts them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from _common import HERE, RESULTS, write  # noqa: E402

sys.path.insert(0, str(HERE.parent / "tests"))  # the host-sync counter of the tests

BOOK = HERE.parent / "book"


def run_chapters(quick: bool = False) -> list[dict]:
    import nbformat
    from nbclient import NotebookClient

    env_mode = "quick" if quick else "full"
    chapters = sorted(BOOK.glob("ch*.ipynb"))[: 2 if quick else None]
    logs = RESULTS / "device_core_logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = []
    for nb_path in chapters:
        nb = nbformat.read(nb_path, as_version=4)
        os.environ["DMLIB_MODE"] = env_mode
        t0 = time.perf_counter()
        error = None
        try:
            NotebookClient(nb, timeout=3600, kernel_name="python3",
                           resources={"metadata": {"path": str(BOOK)}}).execute()
        except Exception as err:  # noqa: BLE001  (recorded, and the next chapter still runs)
            error = f"{type(err).__name__}: {str(err)[-2000:]}"
        seconds = time.perf_counter() - t0
        text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                         if o.get("output_type") == "stream")
        (logs / f"{nb_path.stem}.log").write_text(text)
        first_line = next((line for line in text.splitlines() if line.startswith("run mode:")), None)
        out.append({"chapter": nb_path.stem, "mode": env_mode, "seconds": round(seconds, 1), "error": error,
                    "setup_line": first_line})
        print(f"{nb_path.stem}: {seconds:.0f} s" + (f"  ERROR {error[:200]}" if error else ""))
    return out


def time_steps(device: torch.device, batches=(4096, 65536), n_steps: int = 50) -> list[dict]:
    from _syncs import count_syncs
    from dmlib import samplers, schedules
    from dmlib.nn import MLP

    sched = schedules.CosineSchedule()
    model = MLP(hidden=256, depth=3).to(device).eval()
    out = []
    for method in ("ddim", "ddpm"):
        for batch in batches:
            x = torch.randn(batch, 2, generator=torch.Generator().manual_seed(0)).to(device)
            g = torch.Generator().manual_seed(1)
            samplers.sample(model, x, sched, method=method, n_steps=5, generator=g)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with count_syncs() as log:
                samplers.sample(model, x, sched, method=method, n_steps=n_steps, generator=g)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / n_steps * 1e3
            out.append({"method": method, "batch": batch, "device": str(device), "ms_per_step": round(ms, 3),
                        "host_syncs_per_sample": log.count})
            print(f"{method} batch {batch} on {device}: {ms:.2f} ms/step, {log.count} host syncs per sample()")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="step timings only, small batches")
    parser.add_argument("--no-chapters", action="store_true", help="only the sampler-step timings")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON (default: results/)")
    args = parser.parse_args(argv)
    from dmlib.run import get_device

    device = get_device()
    small = dict(batches=(256,), n_steps=5) if args.quick else {}
    steps = time_steps(device, **small)
    if device.type != "cpu":
        steps += time_steps(torch.device("cpu"), batches=(4096,), n_steps=10)
    chapters = [] if (args.quick or args.no_chapters) else run_chapters(quick=False)
    out = write("device_core" + ("_quick" if args.quick else ""),
                {"device": str(device), "chapters": chapters, "sampler_steps": steps}, args.out)
    if any(c["error"] for c in chapters):
        sys.exit(1)
    return out


if __name__ == "__main__":
    main()
