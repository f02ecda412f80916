"""nbgrader's configuration for the book's course directory (copied there by make_course.py).

Grading runs the chapters in quick mode (tiny training budgets), so a notebook grades in
seconds to a minute on a CPU; set DMLIB_MODE before calling nbgrader to change that.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("DMLIB_MODE", "quick")

from nbgrader.preprocessors import (  # noqa: E402
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    OverwriteCells,
    OverwriteKernelspec,
)

from grading_preprocessor import SwitchOff  # noqa: E402

c = get_config()  # noqa: F821  (nbgrader provides it)
c.CourseDirectory.root = HERE
c.CourseDirectory.course_id = "diffusion-models"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")
# Grading: restore the locked cells, then switch off the dmlib functions each exercise rebuilds.
c.Autograde.sanitize_preprocessors = [
    ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, SwitchOff,
    CheckCellMetadata,
]
c.OverwriteCells.add_missing_cells = True   # a deleted check cell is put back and run
c.Execute.timeout = 600                     # seconds per cell (nbgrader's default is 30)
c.Execute.kernel_name = "python3"
