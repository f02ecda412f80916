"""Switching dmlib functions off while the exercise that rebuilds them is graded.

An exercise that asks for, say, ``flow.straightness`` must not be passed by calling
``flow.straightness``. The autograder of the course (``course/``, the instructor guide)
therefore runs ``make_unavailable(["flow.straightness"], globals(), exercise="5.2")``
before the exercise's cells and ``restore()`` after them. In between, a call of that function
from the notebook raises :class:`ExerciseUnavailable`, whether it is reached through its
module (``flow.straightness``) or through a name the notebook bound earlier
(``from dmlib.flow import straightness``). Calls from inside dmlib go through, so the rest of
the library keeps working. Readers and students never meet this module; nothing in dmlib
calls it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from typing import Callable

__all__ = ["ExerciseUnavailable", "make_unavailable", "restore", "resolve"]


class ExerciseUnavailable(RuntimeError):
    """A dmlib function was called by an exercise that asks the student to write it
    (Instructor guide)."""


# what restore() must undo, newest last: one function per switch-off
_switched_off: list[Callable[[], None]] = []


def resolve(name: str):
    """The module and function (or class) named ``"module.name"`` inside dmlib
    (``"flow.straightness"`` or ``"dmlib.flow.straightness"``). Instructor guide."""
    if not isinstance(name, str) or name.count(".") < 1:
        raise ValueError(
            f"name must read 'module.function' (e.g. 'flow.straightness'), got {name!r}"
        )
    module_name, _, attr = name.removeprefix("dmlib.").rpartition(".")
    try:
        module = importlib.import_module(f"dmlib.{module_name}")
    except ModuleNotFoundError:
        raise ValueError(f"{name!r}: dmlib has no module {module_name!r}") from None
    fn = getattr(module, attr, None)
    fn = getattr(fn, "__wrapped_by_grading__", fn)
    if not (inspect.isfunction(fn) or inspect.isclass(fn)):
        raise ValueError(
            f"{name!r}: dmlib.{module_name} has no function or class {attr!r}"
        )
    return module, attr, fn


def _from_dmlib(frame) -> bool:
    caller = frame.f_globals.get("__name__", "")
    return caller == "dmlib" or caller.startswith("dmlib.")


def _message(name: str, exercise: str) -> str:
    where = f"Exercise {exercise}" if exercise else "this exercise"
    return (f"dmlib.{name} is switched off while {where} is graded: the exercise asks "
            "you to write it yourself, so your answer must not call it.")


def _guard(fn: Callable, message: str) -> Callable:
    @functools.wraps(fn)
    def unavailable(*args, **kwargs):
        # the library's own calls go through, and every call once restore() has run (a
        # module imported during the exercise may still hold the guard)
        if not unavailable.active or _from_dmlib(sys._getframe(1)):
            return fn(*args, **kwargs)
        raise ExerciseUnavailable(message)

    unavailable.__wrapped_by_grading__ = fn
    unavailable.active = True
    return unavailable


def _switch_off_class(cls: type, message: str) -> Callable[[], None]:
    # The class itself refuses to be built outside dmlib, however it is reached (its
    # module, an earlier alias, type(instance)); instances that exist keep working.
    own = cls.__dict__.get("__init__")
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if not _from_dmlib(sys._getframe(1)):
            raise ExerciseUnavailable(message)
        init(self, *args, **kwargs)

    cls.__init__ = __init__

    def undo():
        if own is None:
            del cls.__init__
        else:
            cls.__init__ = own
    return undo


def make_unavailable(names, namespace: dict | None = None, *, exercise: str = "") -> None:
    """Switch off each dmlib function and class in ``names`` until :func:`restore`: a
    function in every dmlib module that holds it (its own and those that import it)
    and under every name of ``namespace`` (a notebook's ``globals()``) that holds it; a
    class wherever it is reached, by refusing to build instances outside dmlib.
    Instructor guide."""
    if isinstance(names, str):
        names = [names]
    for name in names:
        module, attr, fn = resolve(name)
        message = _message(f"{module.__name__.removeprefix('dmlib.')}.{attr}", exercise)
        if inspect.isclass(fn):
            _switched_off.append(_switch_off_class(fn, message))
            continue
        guard = _guard(fn, message)
        held = []
        if namespace is not None:
            held = [k for k, v in namespace.items() if v is fn]
            for k in held:
                namespace[k] = guard
        # the module that defines it and every dmlib module that imported it under
        # some name (flow.sample is samplers.sample)
        places = [(mod, key) for mod in list(sys.modules.values())
                  if getattr(mod, "__name__", "").split(".")[0] == "dmlib"
                  for key, value in list(vars(mod).items()) if value is fn]
        for mod, key in places:
            setattr(mod, key, guard)

        def undo(fn=fn, held=held, guard=guard, places=places):
            guard.active = False
            for mod, key in places:
                if getattr(mod, key, None) is guard:
                    setattr(mod, key, fn)
            for k in held:
                if namespace.get(k) is guard:
                    namespace[k] = fn
        _switched_off.append(undo)


def restore() -> None:
    """Switch every function and class that :func:`make_unavailable` switched off back on
    (Instructor guide)."""
    while _switched_off:
        _switched_off.pop()()
