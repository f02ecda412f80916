"""The course built from the chapters (course/make_course.py) with nbgrader.

* Every chapter's problem set follows the format (make_course validates it).
* The student notebooks contain no line of any solution or hidden test.
* Autograding, per chapter, in quick mode: the instructor version gets every automatic point;
  the untouched student version gets none and runs to the end; each planted-wrong submission
  (tests/course_plants.py) loses exactly the points of the parts it breaks, including a
  submission that calls the dmlib function its exercise asks for.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "course"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_course  # noqa: E402
from course_plants import PLANTS  # noqa: E402

CHAPTERS = make_course.chapters()
NAMES = [make_course.assignment_name(p) for p in CHAPTERS]
nbgrader_missing = shutil.which("nbgrader", path=str(Path(sys.executable).parent)) is None
needs_nbgrader = pytest.mark.skipif(nbgrader_missing, reason="nbgrader is not installed")


def _gid(cell):
    return cell["metadata"].get("nbgrader", {}).get("grade_id")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    made = make_course.write_course(out, CHAPTERS)
    if not nbgrader_missing:
        make_course.release(out, made)
    return out, made


def test_every_chapter_has_a_problem_set_in_the_format(course):
    _, made = course
    assert sorted(made) == NAMES
    for name, (_, exercises) in made.items():
        kinds = {e.kind for e in exercises}
        assert "lab" in kinds and kinds & {"proof", "concept"} and "drill" in kinds, (
            f"{name}: a problem set needs a lab, a proof or concept exercise, and drills; "
            f"has {sorted(kinds)}")
        lab = [e for e in exercises if e.kind == "lab"]
        assert any(len(e.parts) >= 2 for e in lab), f"{name}: the lab has no parts"
        assert any(p.written for e in exercises for p in e.parts.values()), (
            f"{name}: no written answer (graded by hand)")


def _split(text):
    """(lines inside solution or hidden-test markers, lines outside them), stripped."""
    inside_lines, outside_lines, inside = [], [], False
    for line in text.splitlines():
        s = line.strip()
        if s in (make_course.BEGIN, make_course.HIDDEN_BEGIN):
            inside = True
        elif s in (make_course.END, make_course.HIDDEN_END):
            inside = False
        else:
            (inside_lines if inside else outside_lines).append(s)
    return inside_lines, outside_lines


def _solution_lines(text):
    return _split(text)[0]


def _outside(text):
    return _split(text)[1]


@needs_nbgrader
@pytest.mark.parametrize("name", NAMES)
def test_student_notebooks_hold_no_line_of_any_solution(course, name):
    out, _ = course
    src = json.loads((out / "source" / name / f"{name}.ipynb").read_text())
    rel = json.loads((out / "release" / name / f"{name}.ipynb").read_text())
    secret, public = [], []
    for cell in src["cells"]:
        text = "".join(cell["source"])
        secret += _solution_lines(text)
        public += _outside(text)
    student = {line.strip() for c in rel["cells"] for line in "".join(c["source"]).splitlines()}
    # a line also written outside every solution (a blank, "return x") is not a leak
    leaks = [s for s in secret if s and s in student and s not in set(public)]
    assert not leaks, f"{name}: the student notebook holds solution lines {leaks[:5]}"
    assert len(secret) > 10



def test_the_leak_check_finds_a_planted_leak():
    text = "def f():\n    ### BEGIN SOLUTION\n    return 42 * x\n    ### END SOLUTION\n"
    assert _solution_lines(text) == ["return 42 * x"]
    assert _outside(text) == ["def f():", ""] or _outside(text) == ["def f():"]


def _grade(base, name, submissions: dict, group: int):
    """Autograde several submissions in one nbgrader call, in a course directory of its own
    (copied from ``base``), so that groups grade side by side without sharing a gradebook.
    One call per group, not one per student: nbgrader starts once, each notebook still runs
    in a fresh kernel of its own."""
    course_dir = base.parent / f"{base.name}-{group}"
    shutil.copytree(base, course_dir)
    for student, nb in submissions.items():
        d = course_dir / "submitted" / student / name
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.ipynb").write_text(json.dumps(nb))
    exe = Path(sys.executable).parent / "nbgrader"
    env = dict(os.environ, DMLIB_MODE="quick",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    r = subprocess.run([str(exe), "autograde", name, "--force"],
                       cwd=course_dir, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"autograde of {sorted(submissions)} failed:\n{r.stderr[-3000:]}"
    return {student: _scores(course_dir, name, student) for student in submissions}


def _scores(course_dir, name, student):
    from nbgrader.api import Gradebook

    with Gradebook("sqlite:///" + str(course_dir / "gradebook.db")) as gb:
        nb = gb.find_submission_notebook(name, name, student)
        return {g.name: (g.auto_score, g.max_score, g.needs_manual_grade) for g in nb.grades}


@needs_nbgrader
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_autograding(course, tmp_path, name):
    out, made = course
    # a course directory of its own, so chapters grade side by side with separate gradebooks
    here = tmp_path / "course"
    here.mkdir()
    for f in ("nbgrader_config.py", "grading_preprocessor.py", "grading_blocks.json"):
        shutil.copy(out / f, here / f)
    shutil.copytree(out / "source" / name, here / "source" / name)
    shutil.copytree(out / "release" / name, here / "release" / name)
    shutil.copy(out / "gradebook.db", here / "gradebook.db")
    source = json.loads((out / "source" / name / f"{name}.ipynb").read_text())
    release = json.loads((out / "release" / name / f"{name}.ipynb").read_text())
    plants = PLANTS.get(name, [])
    assert len(plants) >= 2, f"{name}: needs two planted-wrong submissions in course_plants"

    submissions = {"instructor": source, "untouched": release}
    for plant in plants:
        nb = copy.deepcopy(source)
        cells = {_gid(c): c for c in nb["cells"]}
        for gid, new in plant["answers"].items():
            assert gid in cells, f"{name}: plant {plant['name']} edits unknown cell {gid}"
            cells[gid]["source"] = new
        submissions[plant["name"]] = nb
    # two groups side by side, each graded by one nbgrader call (a kernel per submission)
    items = list(submissions.items())
    groups = [dict(items[0::2]), dict(items[1::2])]
    with ThreadPoolExecutor(2) as pool:
        graded = {}
        for part in pool.map(lambda ig: _grade(here, name, ig[1], ig[0]), enumerate(groups)):
            graded.update(part)
    assert set(graded) == set(submissions), f"{name}: graded {sorted(graded)}"
    checks = {g: m for g, (_, m, _) in graded["instructor"].items() if g.endswith("_check")}
    written = [g for g in graded["instructor"] if g.endswith("_written")]
    got = {g: graded["instructor"][g][0] for g in checks}
    assert got == checks, f"{name}: the instructor version loses points: {got} of {checks}"
    assert all(graded["instructor"][g][2] for g in written), "written answers need a person"
    lost = {g: s for g, (s, _, _) in graded["untouched"].items() if s}
    assert not lost, f"{name}: the untouched student version scores {lost}"
    for plant in plants:
        assert plant["fails"] and set(plant["fails"]) <= set(checks), plant["name"]
        want = {g: (0.0 if g in plant["fails"] else m) for g, m in checks.items()}
        have = {g: graded[plant["name"]][g][0] for g in checks}
        assert have == want, (f"{name}, plant {plant['name']}: expected {want}, got {have}")
    assert any(p.get("calls_dmlib") for p in plants) or not any(
        e.rebuilds for e in made[name][1]), (
        f"{name}: one plant must call a dmlib function its exercise rebuilds")


def _guide_block(title: str) -> str:
    text = (ROOT / "book" / "appendix_instructor.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


@needs_nbgrader
@pytest.mark.slow
def test_the_instructor_guides_commands_run_as_written(tmp_path):
    """The guide's walk-through, on a fresh copy of the book (its tracked and new files),
    with the test's environment as .venv and a fresh home folder for ~/dm-course."""
    clone, home = tmp_path / "book", tmp_path / "home"
    home.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, clone / f)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    script = _guide_block("The whole cycle on one chapter")
    assert "make_course.py" in script and "nbgrader autograde" in script
    env = dict(os.environ, HOME=str(home))
    if (ROOT / "data").is_dir():
        env.setdefault("DMLIB_DATA", str(ROOT / "data"))
    r = subprocess.run(["bash", "-e", "-c", script], cwd=clone, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, f"the guide's commands failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    course = home / "dm-course"
    assert (course / "release" / "ch01" / "ch01.ipynb").is_file()
    assert (course / "autograded" / "student-1" / "ch01" / "ch01.ipynb").is_file()
    import csv

    rows = list(csv.DictReader((course / "grades.csv").open()))
    mine = [r for r in rows if r["student_id"] == "student-1" and r["assignment"] == "ch01"]
    assert len(mine) == 1, rows
    _, exercises = make_course.write_course(tmp_path / "c", make_course.chapters([1]))["ch01"]
    points = sum(e.points for e in exercises)
    assert float(mine[0]["score"]) == 0 and float(mine[0]["max_score"]) == points, mine


@needs_nbgrader
def test_public_edition_and_instructor_bundle(tmp_path):
    """--public: every chapter without a line of any solution or hidden test; --bundle: the
    instructor versions and a rubric for every written answer."""
    import tarfile

    make_course.main(["--out", str(tmp_path / "c"), "--public", str(tmp_path / "pub"),
                      "--bundle", str(tmp_path / "instructor.tar.gz")])
    for path in CHAPTERS:
        chapter = path.read_text()
        secret = [s for s in _solution_lines(chapter) if s]
        public = set(_outside(chapter))
        edition = json.loads((tmp_path / "pub" / f"{path.stem}.ipynb").read_text())
        lines = {line.strip() for c in edition["cells"]
                 for line in "".join(c["source"]).splitlines()}
        leaks = [s for s in secret if s in lines and s not in public]
        assert not leaks, f"{path.stem}: the public edition holds {leaks[:3]}"
        text = "\n".join("".join(c["source"]) for c in edition["cells"])
        assert "## Problem set" in text and "raise NotImplementedError()" in text, path.stem
    with tarfile.open(tmp_path / "instructor.tar.gz") as tar:
        names = set(tar.getnames())
        rubrics = tar.extractfile("instructor/RUBRICS.md").read().decode()
    assert {f"instructor/source/{n}/{n}.ipynb" for n in NAMES} <= names
    for path in CHAPTERS:
        _, exercises, _ = make_course.problem_set(path)
        for e in exercises:
            if any(p.written for p in e.parts.values()):
                assert f"## Exercise {e.number}:" in rubrics and "**Rubric" in rubrics


# (what to replace in Chapter 5's source, with what, a phrase the error must contain)
MALFORMED = [
    ("*(a) (3 points)* Write `marginal_velocity", "*(a) (4 points)* Write `marginal_velocity",
     "parts add up to"),
    ('\n:mystnb: {code_prompt_show: "Show the solution", '
     'code_prompt_hide: "Hide the solution"}\n:rebuilds: [flow.ot_pairing]',
     "\n:rebuilds: [flow.ot_pairing]", "toggle must read"),
    (":rebuilds: [flow.ot_pairing]", ":rebuilds: [flow.no_such_function]", "rebuilds"),
    ("**Rubric (1 point).**", "**Marking (1 point).**", "Rubric' paragraph"),
    ("*About 3 hours of work; no GPU needed.*", "", "introduction needs the sentence"),
    ("(drill, ★, 2 points): the floor", "(quiz, ★, 2 points): the floor", "has kind"),
    ('print("Exercise 5.4: correct")', 'print("correct")', "never graded"),
]


@pytest.mark.parametrize("old,new,message", MALFORMED, ids=[m[2] for m in MALFORMED])
def test_the_format_check_names_what_is_wrong(tmp_path, old, new, message):
    source = ROOT / "book" / "ch05_flow_matching.md"
    text = source.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the test's anchor {old[:40]!r} is gone from {source.name}"
    bad = tmp_path / source.name
    bad.write_text(text.replace(old, new), encoding="utf-8")
    make_course.overview([source])                        # the real source passes
    with pytest.raises(make_course.SourceError, match=message):
        make_course.overview([bad])                       # validates, then reads the workload
