"""The autograder's switch-off step (copied into the course directory by make_course.py).

For each exercise listed in grading_blocks.json (written by make_course.py from the chapter's
``:rebuilds:`` options, never read from a submission), insert a cell that switches the listed
dmlib functions off before the exercise's first cell and one that switches them back on after
its last cell (``dmlib.grading``). Deleting or editing cells cannot remove them: they are added
at grading time. When none of the exercise's cells survives, the switch-off goes first.
"""
import json
import os

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor

OFF = ("import dmlib.grading as _grading\n"
       "_grading.make_unavailable({names!r}, globals(), exercise={exercise!r})")
ON = "_grading.restore()"


def _cell(src):
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["grading"] = "switch-off"
    return cell


class SwitchOff(NbGraderPreprocessor):
    """Switch off the dmlib functions that an exercise asks the student to write."""

    def preprocess(self, nb, resources):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grading_blocks.json")
        with open(path) as f:
            table = json.load(f)
        assignment = resources["nbgrader"]["assignment"]
        notebook = resources["nbgrader"]["notebook"]
        for block in table.get(assignment, {}).get(notebook, []):
            ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
            where = [i for i, g in enumerate(ids) if g in block["cells"]]
            off = _cell(OFF.format(names=block["names"], exercise=block["exercise"]))
            if where:
                nb.cells.insert(where[-1] + 1, _cell(ON))
                nb.cells.insert(where[0], off)
            else:
                nb.cells.insert(0, off)
            self.log.info("Exercise %s: switched off %s", block["exercise"], block["names"])
        return nb, resources
