#!/usr/bin/env python
"""Build an nbgrader course from the chapters: one source, three products.

    python course/make_course.py                     # course directory in _build/course
    python course/make_course.py --out ~/ml-course --chapters 1 2 3
    python course/make_course.py --release           # ... and the student notebooks
    python course/make_course.py --public DIR        # student edition of every chapter
    python course/make_course.py --bundle FILE.tar.gz  # private instructor bundle

The chapter's MyST file (book/chNN_*.md) is the only source. Each chapter becomes one
assignment, ``chNN``: a notebook made of the chapter's cells tagged ``problem-set-setup``
(imports, data, the trained models the exercises use; training runs at the budget of the run
mode, quick while grading) followed by the chapter's problem set. The generator turns the
problem set's cells into nbgrader cells:

* the exercise prompts become locked markdown cells;
* code cells with ``### BEGIN SOLUTION`` / ``### END SOLUTION`` become answer cells (the
  student version keeps the lines outside the markers and stubs the rest); in the book they
  are folded behind a "Show the solution" toggle (the options ``:tags: [hide-input]`` and
  ``:mystnb: {code_prompt_show: ...}``, see ``SOLUTION_OPTION``);
* the check that follows an answer, a code cell whose label reads ``Exercise 8.1(a): ...``,
  becomes a locked test cell worth the points of that part (``### BEGIN HIDDEN TESTS`` lines
  are removed from the student version);
* a ``{dropdown} Model answer`` becomes a written-answer cell graded by hand; its rubric, the
  paragraph starting ``**Rubric``, sits inside the solution markers and reaches instructors only.

An answer cell may name the dmlib functions it rebuilds in its options
(``:rebuilds: [flow.straightness]``); the autograder switches them off (``dmlib.grading``)
from the exercise's first cell to its last, so a submission that calls them gets no points.
A check cell calls the answer before it defines its own oracle functions, so that no answer
can call them.

The course directory holds ``nbgrader_config.py`` (grading in quick mode, the switch-off
preprocessor), ``grading_blocks.json`` (which functions each exercise switches off) and
``source/chNN/chNN.ipynb``. ``--release`` runs ``nbgrader generate_assignment`` for every
assignment. The problem sets are described in the instructor guide (book/appendix_instructor.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jupytext
import nbformat

from dmlib import grading

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
# the toggle of an answer cell in the rendered book (myst-nb's prompt, set per cell)
SOLUTION_PROMPT = "Show the solution"
SOLUTION_OPTION = (':mystnb: {code_prompt_show: "Show the solution", '
                   'code_prompt_hide: "Hide the solution"}')
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
KINDS = ("lab", "proof", "concept", "drill")
SETUP_TAG = "problem-set-setup"
COLAB_TAG = "colab-setup"  # the first cell of every chapter (dmlib.colab)

HEADING = re.compile(r"^## Problem set\s*$", re.M)
EXERCISE = re.compile(
    r"\*\*Exercise (\d+)\.(\d+) \(([a-z]+), (★+), (\d+) points?\): ([^*]+?)\.\*\*"
)
EXERCISE_LOOSE = re.compile(r"\*\*Exercise \d+\.\d+")
PART = re.compile(r"(?m)^\*\(([a-z])\) \((\d+) points?\)\*")
PART_LOOSE = re.compile(r"(?m)^\*\(([a-z])\)")
LABEL = re.compile(r"""["']Exercise (\d+)\.(\d+)(?:\(([a-z])\))?: """)
WORKLOAD = re.compile(
    r"\*About (\d+(?:–\d+)?) hours? of work; (no GPU needed|a GPU helps|needs a GPU)\.\*")
DROPDOWN = re.compile(r"(?ms)^(`{3,}|:{3,})\{dropdown\} Model answer[^\n]*\n(.*?)^\1[ \t]*$")


class SourceError(ValueError):
    """A chapter's problem set breaks a rule of the format (the message says which)."""


@dataclass
class Part:
    letter: str                 # "" for an exercise without parts
    points: int
    graded_by: list = field(default_factory=list)   # grade_ids of check / written cells
    written: bool = False


@dataclass
class Exercise:
    number: str                 # "8.1"
    kind: str
    stars: int
    points: int
    title: str
    parts: dict = field(default_factory=dict)        # letter -> Part
    cells: list = field(default_factory=list)        # every grade_id of the exercise
    rebuilds: list = field(default_factory=list)     # dmlib functions switched off
    prompt: list = field(default_factory=list)       # markdown of the exercise
    answers: list = field(default_factory=list)      # (part, model answer markdown)

    @property
    def key(self) -> str:
        return "ex" + self.number.replace(".", "_")


def _meta(grade_id, *, grade=False, solution=False, locked=False, points=None) -> dict:
    m = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id,
         "schema_version": 3, "task": False}
    if grade:
        m["points"] = points
    return m


def _strip_outer_blank(text: str) -> str:
    return text.strip("\n")


def read_chapter(path: Path) -> nbformat.NotebookNode:
    return jupytext.read(path)


def problem_set(path: Path):
    """The chapter's assignment (an nbgrader source notebook), its exercises in order, and
    the whole chapter with the problem set's nbgrader cells (for the public edition)."""
    path = Path(path)
    nb = read_chapter(path)
    ch = int(re.match(r"ch(\d+)", path.name).group(1))
    starts = [i for i, c in enumerate(nb.cells)
              if c.cell_type == "markdown" and HEADING.search(c.source)]
    if len(starts) != 1:
        raise SourceError(f"{path.name}: needs exactly one '## Problem set' heading, "
                          f"found {len(starts)}")
    start = starts[0]
    for i, c in enumerate(nb.cells[:start]):
        if BEGIN in c.source:
            raise SourceError(f"{path.name}: cell {i} holds a solution before the problem set")

    exercises: list[Exercise] = []
    ex: Exercise | None = None
    part = ""
    used: set[str] = set()
    out = []

    def gid(kind: str) -> str:
        base = f"{ex.key if ex else 'ps'}{part}_{kind}"
        n, name = 1, f"{ex.key if ex else 'ps'}{part}_{kind}"
        while name in used:
            n += 1
            name = f"{base}{n}"
        used.add(name)
        if ex is not None:
            ex.cells.append(name)
        return name

    def where() -> str:
        return f"{path.name}, Exercise {ex.number}{f'({part})' if part else ''}" if ex \
            else f"{path.name}, problem set"

    def scan_text(text: str) -> None:
        nonlocal ex, part
        # headers in reading order: exercises and parts
        marks = sorted([(m.start(), "ex", m) for m in EXERCISE_LOOSE.finditer(text)]
                       + [(m.start(), "part", m) for m in PART_LOOSE.finditer(text)],
                       key=lambda t: t[0])
        for pos, kind, _ in marks:
            if kind == "ex":
                m = EXERCISE.match(text, pos)
                if not m:
                    line = text[pos:].splitlines()[0]
                    raise SourceError(
                        f"{path.name}: exercise header {line[:80]!r} must read "
                        "'**Exercise N.K (kind, ★★, P points): Title.**'")
                number = f"{m.group(1)}.{m.group(2)}"
                if int(m.group(1)) != ch:
                    raise SourceError(f"{path.name}: Exercise {number} in Chapter {ch}")
                if m.group(3) not in KINDS:
                    raise SourceError(f"{path.name}: Exercise {number} has kind "
                                      f"{m.group(3)!r}; use one of {KINDS}")
                if any(e.number == number for e in exercises):
                    raise SourceError(f"{path.name}: Exercise {number} appears twice")
                ex = Exercise(number, m.group(3), len(m.group(4)), int(m.group(5)),
                              " ".join(m.group(6).split()))
                exercises.append(ex)
                part = ""
            else:
                m = PART.match(text, pos)
                if not m:
                    line = text[pos:].splitlines()[0]
                    raise SourceError(f"{where()}: part header {line[:60]!r} must read "
                                      "'*(a) (P points)*'")
                if ex is None:
                    raise SourceError(f"{path.name}: part ({m.group(1)}) before any exercise")
                part = m.group(1)
                if part in ex.parts:
                    raise SourceError(f"{where()}: part ({part}) appears twice")
                ex.parts[part] = Part(part, int(m.group(2)))
        if ex is not None:
            ex.prompt.append(text)

    for cell in nb.cells[start:]:
        if cell.cell_type == "markdown":
            pos = 0
            pieces = []
            for m in DROPDOWN.finditer(cell.source):
                if BEGIN in m.group(2):
                    pieces += [("text", cell.source[pos:m.start()]), ("answer", m.group(2))]
                    pos = m.end()
            pieces.append(("text", cell.source[pos:]))
            for kind, text in pieces:
                if not text.strip():
                    continue
                if kind == "text":
                    if BEGIN in text:
                        raise SourceError(f"{where()}: a solution in markdown must sit in a "
                                          "'{dropdown} Model answer' block")
                    scan_text(text)
                    new = nbformat.v4.new_markdown_cell(_strip_outer_blank(text))
                    new.metadata["nbgrader"] = _meta(gid("text"), locked=True)
                else:
                    if ex is None:
                        raise SourceError(f"{path.name}: a model answer before any exercise")
                    p = _part_of(ex, part, where)
                    new = nbformat.v4.new_markdown_cell(_strip_outer_blank(text))
                    grade_id = gid("written")
                    new.metadata["nbgrader"] = _meta(grade_id, grade=True, solution=True,
                                                     points=p.points)
                    p.graded_by.append(grade_id)
                    p.written = True
                    ex.answers.append((p.letter, text))
                out.append(new)
            continue
        src = cell.source
        new = nbformat.v4.new_code_cell(src)
        new.metadata.update({k: v for k, v in cell.metadata.items()
                             if k not in ("rebuilds",)})
        if BEGIN in src:
            if ex is None:
                raise SourceError(f"{path.name}: a solution cell before any exercise")
            if src.count(BEGIN) != src.count(END):
                raise SourceError(f"{where()}: unbalanced solution markers")
            if re.search(r"^\s*assert\b", src.rsplit(END, 1)[1], re.M):
                raise SourceError(f"{where()}: checks after '{END}' belong in their own cell")
            if "hide-input" not in cell.metadata.get("tags", []):
                raise SourceError(f"{where()}: an answer cell needs the tag hide-input, so "
                                  "the book shows no solution unless the reader opens it")
            if cell.metadata.get("mystnb", {}).get("code_prompt_show") != SOLUTION_PROMPT:
                raise SourceError(
                    f"{where()}: an answer cell's toggle must read {SOLUTION_PROMPT!r}; add "
                    f"the option line  {SOLUTION_OPTION}")
            for name in cell.metadata.get("rebuilds", []):
                try:
                    grading.resolve(name)
                except ValueError as err:
                    raise SourceError(f"{where()}: rebuilds {err}") from None
                if name not in ex.rebuilds:
                    ex.rebuilds.append(name)
            new.metadata["nbgrader"] = _meta(gid("answer"), solution=True)
        elif (labels := LABEL.findall(src)):
            numbers = {f"{a}.{b}" for a, b, _ in labels}
            letters = {c for _, _, c in labels}
            if ex is None or numbers != {ex.number} or len(letters) != 1:
                raise SourceError(
                    f"{where()}: a check cell must print the label of one part of the "
                    f"current exercise, found {sorted(numbers)} {sorted(letters)}")
            if not re.search(r"^\s*assert\b", src, re.M):
                raise SourceError(f"{where()}: the check labelled {labels[0]} asserts nothing")
            part = letters.pop()
            p = _part_of(ex, part, where)
            grade_id = gid("check")
            new.metadata["nbgrader"] = _meta(grade_id, grade=True, locked=True,
                                             points=p.points)
            p.graded_by.append(grade_id)
        else:
            new.metadata["nbgrader"] = _meta(gid("code"), locked=True)
        out.append(new)

    for e in exercises:
        if not e.parts:
            raise SourceError(f"{path.name}: Exercise {e.number} is never graded (no check "
                              "cell and no model answer)")
        total = sum(p.points for p in e.parts.values())
        if total != e.points:
            raise SourceError(f"{path.name}: Exercise {e.number} is worth {e.points} points "
                              f"but its parts add up to {total}")
        for p in e.parts.values():
            if len(p.graded_by) != 1:
                raise SourceError(
                    f"{path.name}: Exercise {e.number}{f'({p.letter})' if p.letter else ''} "
                    f"needs exactly one check cell or model answer, has {len(p.graded_by)}")
        for a in e.answers:
            if "**Rubric" not in a[1].split(BEGIN, 1)[1]:
                raise SourceError(f"{path.name}: the model answer of Exercise {e.number} "
                                  "needs a '**Rubric' paragraph inside its solution markers")
    if not exercises:
        raise SourceError(f"{path.name}: the problem set has no exercise")
    # the chapter's Colab cell (a no-op elsewhere, also under the autograder) comes first
    setup = [c for c in nb.cells[:start] if {SETUP_TAG, COLAB_TAG} & set(c.metadata.get("tags", []))]
    if any(c.cell_type != "code" for c in setup):
        raise SourceError(f"{path.name}: only code cells can carry the tag {SETUP_TAG}")
    if not any(SETUP_TAG in c.metadata.get("tags", []) for c in setup):
        raise SourceError(f"{path.name}: no cell is tagged {SETUP_TAG} (the imports and "
                          "objects the problem set uses)")
    title = next((c.source for c in nb.cells if c.cell_type == "markdown"
                  and re.search(r"(?m)^# ", c.source)), "")
    title = re.search(r"(?m)^# (?:\d+\.\s*)?(.*)$", title).group(1) if title else path.stem
    head = nbformat.v4.new_markdown_cell(
        f"# Problem set {ch}: {title}\n\nThe first cells set up what the exercises use "
        f"(they are the cells of Chapter {ch} that do so). Run them, then work through the "
        "exercises: write your answers in the cells that say so, and run each check below "
        "an answer to see whether it passes.")
    head.metadata["nbgrader"] = _meta("ps_title", locked=True)
    cells = [head]
    for i, c in enumerate(setup, 1):
        new = nbformat.v4.new_code_cell(c.source)
        new.metadata["nbgrader"] = _meta(f"setup_{i}", locked=True)
        cells.append(new)
    assignment = nbformat.v4.new_notebook(cells=cells + out)
    assignment.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                         "name": "python3"}
    chapter = copy.deepcopy(nb)
    chapter.cells = nb.cells[:start] + copy.deepcopy(out)
    chapter.metadata.pop("jupytext", None)
    chapter.metadata["kernelspec"] = assignment.metadata["kernelspec"]
    return assignment, exercises, chapter


def _part_of(ex: Exercise, letter: str, where) -> Part:
    if not ex.parts and letter == "":
        ex.parts[""] = Part("", ex.points)
    if letter not in ex.parts:
        raise SourceError(f"{where()}: graded as part ({letter}), which has no header")
    return ex.parts[letter]


def chapters(numbers=None) -> list[Path]:
    found = sorted(ROOT.glob("book/ch[0-9][0-9]_*.md"))
    if numbers:
        want = {int(n) for n in numbers}
        found = [p for p in found if int(p.name[2:4]) in want]
        missing = want - {int(p.name[2:4]) for p in found}
        if missing:
            raise SystemExit(f"no chapter {sorted(missing)} in book/")
    return found


def assignment_name(path: Path) -> str:
    return path.name[:4]                       # "ch08"


def write_course(out: Path, paths) -> dict:
    """Write the course directory; return {assignment: (notebook name, exercises)}."""
    out = Path(out)
    (out / "source").mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "nbgrader_config.py", out / "nbgrader_config.py")
    shutil.copy(HERE / "grading_preprocessor.py", out / "grading_preprocessor.py")
    blocks, made = {}, {}
    for path in paths:
        nb, exercises, _ = problem_set(path)
        name = assignment_name(path)
        d = out / "source" / name
        d.mkdir(parents=True, exist_ok=True)
        _write_atomic(d / f"{name}.ipynb", nbformat.writes(nb))
        blocks[name] = {name: [
            {"exercise": e.number, "names": e.rebuilds, "cells": e.cells}
            for e in exercises if e.rebuilds]}
        made[name] = (name, exercises)
    _write_atomic(out / "grading_blocks.json", json.dumps(blocks, indent=1) + "\n")
    _write_atomic(out / "POINTS.md", points_table(made))
    return made


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def overview(paths) -> list[dict]:
    """One row per problem set: exercises, points (automatic and by hand), the time it takes
    a student and whether it needs a GPU (the sentence '*About N hours of work; no GPU
    needed.*' of the problem set's introduction)."""
    rows = []
    for path in paths:
        _, exercises, _ = problem_set(path)
        text = path.read_text()
        m = WORKLOAD.search(" ".join(text[HEADING.search(text).start():].split()))
        if not m:
            raise SourceError(f"{path.name}: the problem set's introduction needs the sentence "
                              "'*About N hours of work; no GPU needed.*' (or 'a GPU helps', "
                              "'needs a GPU')")
        auto = sum(p.points for e in exercises for p in e.parts.values() if not p.written)
        hand = sum(p.points for e in exercises for p in e.parts.values() if p.written)
        rows.append({"assignment": assignment_name(path), "chapter": path.stem,
                     "exercises": [(e.number, e.kind, e.stars, e.points, e.title)
                                   for e in exercises],
                     "auto": auto, "hand": hand, "hours": m.group(1), "gpu": m.group(2)})
    return rows


def points_table(made: dict) -> str:
    rows = ["| Assignment | Exercise | Kind | Difficulty | Points | Graded |",
            "|---|---|---|---|---|---|"]
    for name, (_, exercises) in made.items():
        for e in exercises:
            graded = ("by hand" if all(p.written for p in e.parts.values()) else
                      "automatically" if not any(p.written for p in e.parts.values()) else
                      "automatically and by hand")
            rows.append(f"| {name} | {e.number} {e.title} | {e.kind} | {'★' * e.stars} | "
                        f"{e.points} | {graded} |")
    return "\n".join(rows) + "\n"


def rubrics(made: dict) -> str:
    """Every written exercise with its prompt, model answer and rubric (instructors only)."""
    lines = ["# Model answers and rubrics", ""]
    for _, exercises in made.values():
        for e in exercises:
            if not e.answers:
                continue
            lines += [f"## Exercise {e.number}: {e.title} ({e.points} points)", ""]
            for letter, text in e.answers:
                body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")
                lines += [f"### Part ({letter})" if letter else "### Answer", "", body, ""]
    return "\n".join(lines)


# `nbgrader generate_assignment NAME --force` for each name, through nbgrader's own API in one
# process: nbgrader starts once for the whole course, not once per chapter
_RELEASE = """
import sys
from nbgrader.apps import NbGraderAPI
from traitlets.config.loader import PyFileConfigLoader

api = NbGraderAPI(config=PyFileConfigLoader("nbgrader_config.py", path=".").load_config())
for name in sys.argv[1:]:
    result = api.generate_assignment(name, force=True)
    if not result["success"]:
        sys.exit(f"nbgrader generate_assignment {name} failed:\\n{result.get('error')}\\n"
                 f"{result.get('log', '')[-4000:]}")
"""


def release(out: Path, made: dict) -> None:
    """The student versions (release/chNN/chNN.ipynb) of every assignment in ``made``."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([sys.executable, "-c", _RELEASE, *made], cwd=out, env=env,
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"nbgrader generate_assignment failed in {out}:\n"
                           f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "_build" / "course"),
                    help="the course directory (default: _build/course)")
    ap.add_argument("--chapters", nargs="*", type=int, help="chapter numbers (default: all)")
    ap.add_argument("--release", action="store_true",
                    help="also run nbgrader generate_assignment (student notebooks in release/)")
    ap.add_argument("--public", metavar="DIR",
                    help="write the student edition (no solutions, no hidden tests) to DIR")
    ap.add_argument("--bundle", metavar="FILE",
                    help="write the private instructor bundle (.tar.gz) to FILE")
    args = ap.parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    try:
        made = write_course(out, chapters(args.chapters))
    except SourceError as err:
        raise SystemExit(f"make_course: {err}") from None
    print(f"[course] {len(made)} assignments in {out}/source")
    if args.release:
        release(out, made)
        print(f"[course] student notebooks in {out}/release")
    if args.public:
        pub = Path(args.public).expanduser().resolve()
        n = public_edition(pub, chapters(args.chapters))
        print(f"[course] public edition ({n} chapters, no solutions) in {pub}")
    if args.bundle:
        bundle(out, made, Path(args.bundle).expanduser().resolve())
        print(f"[course] instructor bundle {args.bundle}")


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with its solutions stubbed and its hidden tests removed, by nbgrader's own
    preprocessors (as ``generate_assignment`` does)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    nb = copy.deepcopy(nb)
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
        if cell.cell_type == "code":
            tags = [t for t in cell.metadata.get("tags", []) if t != "hide-input"]
            if tags:
                cell.metadata["tags"] = tags
            else:
                cell.metadata.pop("tags", None)
    return nb


def public_edition(target: Path, paths) -> int:
    """Every chapter as a notebook without solutions: for students and public courses."""
    target.mkdir(parents=True, exist_ok=True)
    for path in paths:
        _, _, chapter = problem_set(path)
        _write_atomic(target / f"{path.stem}.ipynb", nbformat.writes(student_version(chapter)))
    return len(paths)


def bundle(out: Path, made: dict, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "instructor"
        base.mkdir()
        (base / "RUBRICS.md").write_text(rubrics(made))
        for f in ("POINTS.md", "grading_blocks.json", "nbgrader_config.py",
                  "grading_preprocessor.py"):
            shutil.copy(out / f, base / f)
        shutil.copytree(out / "source", base / "source")
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".tmp")
        with tarfile.open(part, "w:gz") as tar:
            tar.add(base, arcname="instructor")
        os.replace(part, target)


if __name__ == "__main__":
    main()
