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
    """A dmlib function was called by an exercise that asks the student to write it."""


# (module, attribute, original function, namespace or None, names in the namespace)
_switched_off: list[tuple[object, str, Callable, dict | None, list[str]]] = []


def resolve(name: str):
    """The module and function named ``"module.function"`` inside dmlib
    (``"flow.straightness"`` or ``"dmlib.flow.straightness"``)."""
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


def _guard(fn: Callable, name: str, exercise: str) -> Callable:
    where = f"Exercise {exercise}" if exercise else "this exercise"
    message = (f"dmlib.{name} is switched off while {where} is graded: the exercise asks "
               "you to write it yourself, so your answer must not call it.")
    if inspect.isclass(fn):
        # A subclass whose construction is refused outside dmlib (inside, it builds as usual).
        def __new__(cls, *args, **kwargs):
            if not _from_dmlib(sys._getframe(1)):
                raise ExerciseUnavailable(message)
            if fn.__new__ is object.__new__:
                return object.__new__(cls)
            return fn.__new__(cls, *args, **kwargs)

        unavailable = type(fn.__name__, (fn,), {
            "__new__": __new__, "__module__": fn.__module__, "__doc__": fn.__doc__,
            "__qualname__": fn.__qualname__,
        })
    else:
        @functools.wraps(fn)
        def unavailable(*args, **kwargs):
            if _from_dmlib(sys._getframe(1)):
                return fn(*args, **kwargs)        # the library's own calls go through
            raise ExerciseUnavailable(message)

    unavailable.__wrapped_by_grading__ = fn
    return unavailable


def make_unavailable(names, namespace: dict | None = None, *, exercise: str = "") -> None:
    """Switch off each dmlib function in ``names`` until :func:`restore`: in its module and
    under every name of ``namespace`` (a notebook's ``globals()``) that holds it."""
    if isinstance(names, str):
        names = [names]
    for name in names:
        module, attr, fn = resolve(name)
        guard = _guard(fn, f"{module.__name__.removeprefix('dmlib.')}.{attr}", exercise)
        held = []
        if namespace is not None:
            held = [k for k, v in namespace.items() if v is fn]
            for k in held:
                namespace[k] = guard
        setattr(module, attr, guard)
        _switched_off.append((module, attr, fn, namespace, held))


def restore() -> None:
    """Switch every function that :func:`make_unavailable` switched off back on."""
    while _switched_off:
        module, attr, fn, namespace, held = _switched_off.pop()
        setattr(module, attr, fn)
        for k in held:
            if namespace is not None and getattr(
                namespace.get(k), "__wrapped_by_grading__", None
            ) is fn:
                namespace[k] = fn
