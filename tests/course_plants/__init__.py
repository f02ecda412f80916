"""Planted-wrong submissions for tests/test_course.py, one module per chapter.

Each chapter module defines ``PLANTS``: a list of submissions, each the instructor version
with some answer cells replaced. ``answers`` maps a cell's grade_id (see the source notebook
that course/make_course.py writes) to its new source; ``fails`` lists the check cells that
must then score zero (the broken part and the parts that use it), every other check keeping
its points; ``calls_dmlib`` marks a submission that calls a dmlib function its exercise asks
the student to write.
"""

import importlib
import pkgutil

PLANTS = {}
for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("ch"):
        PLANTS[_info.name] = importlib.import_module(f"{__name__}.{_info.name}").PLANTS
