"""Helpers live in dmlib once: no chapter defines a function that dmlib provides, no two chapters
define the same function, and the chapters and benchmarks count sampler evaluations the way
``samplers.sample`` makes them.

A chapter may still write a formula out for teaching and check it against dmlib (with
``torch.testing.assert_close``), and an exercise asks the learner to implement a dmlib function
inside nbgrader's solution markers; neither is a second helper.
"""

import ast
import collections
import importlib
import inspect
from pathlib import Path

import jupytext
import pytest
import torch

from dmlib import samplers, schedules, toy

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("ch*.md"))
MODULES = ("schedules", "diffusion", "samplers", "losses", "flow", "guidance", "toy", "metrics", "plot",
           "spectrum", "likelihood", "noise", "nn")


def defined_names(source: str) -> list[tuple[str, bool]]:
    """(name, is_exercise) of every top-level ``def``, ``class`` and ``name = lambda`` of a cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # cells with IPython magics
        return []
    exercise = "### BEGIN SOLUTION" in source
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.append((node.name, exercise))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            out += [(t.id, exercise) for t in node.targets if isinstance(t, ast.Name)]
    return out


def chapter_definitions(md: Path) -> list[tuple[str, bool]]:
    return [d for c in jupytext.read(md).cells if c.cell_type == "code" for d in defined_names(c.source)]


def dmlib_public_names() -> dict[str, str]:
    """Public functions and classes of dmlib's modules, and the public methods of its classes."""
    names = {}
    for mod_name in MODULES:
        mod = importlib.import_module(f"dmlib.{mod_name}")
        for name, obj in vars(mod).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("dmlib"):
                continue  # imported from torch, numpy, ...
            names.setdefault(name, f"dmlib.{mod_name}.{name}")
            if inspect.isclass(obj):
                for meth, fn in vars(obj).items():
                    if not meth.startswith("_") and callable(fn):
                        names.setdefault(meth, f"dmlib.{mod_name}.{name}.{meth}")
    return names


def test_the_parser_finds_definitions_and_exercises():
    cell = "import torch\n\ndef f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\ng = lambda n: n\n"
    assert defined_names(cell) == [("f", True), ("g", True)]
    assert defined_names("class A:\n    def inner(self):\n        pass\nh = toy.data_sampler('moons')\n") == [
        ("A", False)]


def test_no_chapter_redefines_a_dmlib_function():
    public = dmlib_public_names()
    clashes = [f"{md.name}: {name} (dmlib has {public[name]})"
               for md in CHAPTERS for name, exercise in chapter_definitions(md)
               if name in public and not exercise]
    assert not clashes, "chapters define helpers that dmlib already provides; call dmlib instead: " + "; ".join(clashes)


def test_a_redefinition_would_be_caught(tmp_path):
    # a test of the test: a chapter that writes its own data_sampler is reported
    md = tmp_path / "ch99_planted.md"
    header = (ROOT / "book" / "ch02_ddpm.md").read_text(encoding="utf-8").split("\n---\n", 1)[0]
    md.write_text(header + "\n---\n\n```{code-cell} ipython3\ndef data_sampler(n, generator):\n"
                  "    return None\n```\n", encoding="utf-8")
    public = dmlib_public_names()
    assert [n for n, ex in chapter_definitions(md) if n in public and not ex] == ["data_sampler"]


def test_no_function_is_defined_in_two_chapters():
    where = collections.defaultdict(set)
    for md in CHAPTERS:
        for name, _ in chapter_definitions(md):
            where[name].add(md.name)
    twice = {name: sorted(mds) for name, mds in where.items() if len(mds) > 1}
    assert not twice, f"defined in more than one chapter (move it to dmlib or rename): {twice}"


# -- counting evaluations ----------------------------------------------------------------------------
class _Counting:
    """The exact mixture denoiser, counting its calls."""

    def __init__(self, model):
        self.model, self.prediction, self.calls = model, model.prediction, 0

    def __call__(self, x_t, t, y=None):
        self.calls += 1
        return self.model(x_t, t, y)


@pytest.mark.parametrize("method", samplers.METHODS)
@pytest.mark.parametrize("t_min", [0.0, 1e-3])
def test_nfe_counts_the_calls_sample_makes(method, t_min):
    sch = schedules.LinearSchedule()
    model = _Counting(toy.GaussianMixture.eight_gaussians().denoiser(sch))
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for n in (1, 2, 5):
        model.calls = 0
        times = samplers.time_grid(n, t_min=t_min)
        samplers.sample(model, x_T, sch, method=method, times=times, generator=torch.Generator().manual_seed(1))
        assert model.calls == samplers.nfe(method, n, t_min=t_min), (method, n, t_min)
    assert samplers.nfe(method, 4, t_min=1e-3) == 4 * samplers.NFE_PER_STEP[method]


def test_chapter_4_and_the_benchmark_use_the_library_count():
    ch4 = (ROOT / "book" / "ch04_samplers.md").read_text(encoding="utf-8")
    bench = (ROOT / "benchmarks" / "samplers_nfe.py").read_text(encoding="utf-8")
    assert "samplers.nfe(" in ch4 and "samplers.nfe(" in bench
    assert "NFE_PER_STEP = " not in bench and 'if m == "heun"' not in ch4
