"""Which library code an answer runs: the reference implementations a graded part may not call.

An assignment names, per question, the functions, classes and modules a student may not
delegate to (``FORBIDDEN`` in its ``hidden_tests.py``; the resnet_basics list is
`checks.FORBIDDEN`). They are resolved to code objects *before* any submitted code runs
(`resolve`), and while a graded probe runs a profile hook (`Watch`) records every call
of one of them made on the answer's behalf, however it was reached: an alias
(``ShortcutA = model.ShortcutA``), a subclass, a wrapper, ``super().forward``, a module's
function called by name. A call is the answer's unless the nearest caller outside torch and
the standard library is the library itself (``build`` counts its spec; the library's block
calls its own shortcut): so a library function that uses a reference internally must be
listed too if it would answer the question. The probe's record carries what was used, and
the grader gives that test no points.

What it does not see (say so to students and IT): code run outside the traced thread (a
thread started with ``_thread``, a subprocess), a reference copied and re-compiled with
different line numbers, or a submission that removes the hook and puts it back; the hook
itself being replaced is reported.
"""

from __future__ import annotations

import importlib
import inspect
import importlib.util
import sys
import sysconfig
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def _module_file(dotted: str) -> str | None:
    """The file of module ``dotted`` (a package's folder + "/"), found without importing it, or None."""
    try:
        spec = importlib.util.find_spec(dotted)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.has_location:
        return None
    path = Path(spec.origin)
    return str(path.parent) + "/" if path.name == "__init__.py" else str(path)


def _object(dotted: str) -> Any:
    """The object a dotted name denotes (``pkg.module.Class.method``), or None when it does not exist."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _codes(obj: Any, seen: set[int] | None = None) -> set[types.CodeType]:
    """The code objects of a function, a class's own methods (properties included), and what they nest."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return set()
    seen.add(id(obj))
    found: set[types.CodeType] = set()
    if isinstance(obj, types.CodeType):
        found.add(obj)
        for const in obj.co_consts:
            if isinstance(const, types.CodeType):
                found |= _codes(const, seen)
    elif isinstance(obj, (staticmethod, classmethod)):
        found |= _codes(obj.__func__, seen)
    elif isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                found |= _codes(f, seen)
    elif isinstance(obj, types.FunctionType):
        # a decorated function (torch.no_grad, functools.wraps): its own code, not the decorator's shared wrapper
        found |= _codes(inspect.unwrap(obj).__code__, seen)
    elif isinstance(obj, type):
        for value in vars(obj).values():
            found |= _codes(value, seen)
    return found


@dataclass
class Forbidden:
    """The code one question may not run: exact code objects (by identity) and whole module files."""

    codes: dict[int, str] = field(default_factory=dict)  # id(code) -> the name it was forbidden as
    files: dict[str, str] = field(default_factory=dict)  # a module's file -> its name
    packages: dict[str, str] = field(default_factory=dict)  # a package's folder + "/" -> its name
    library: str = ""  # resnet_explorer's folder + "/": its own internal calls are not the student's
    passthrough: tuple[str, ...] = ()  # torch and the standard library: callers looked through
    _kept: list[types.CodeType] = field(default_factory=list, repr=False)  # keeps the ids valid

    def __bool__(self) -> bool:
        return bool(self.codes or self.files or self.packages)

    def name_of(self, code: types.CodeType) -> str | None:
        name = self.codes.get(id(code))
        if name is not None:
            return name
        filename = code.co_filename
        name = self.files.get(filename)
        if name is None and self.packages and filename.startswith(tuple(self.packages)):
            name = next(n for p, n in self.packages.items() if filename.startswith(p))
        return name

    def called_by_library(self, frame: types.FrameType) -> bool:
        """Whether the nearest caller of ``frame`` outside torch and the standard library is the
        library itself (``build`` counting a spec, a block calling its shortcut): not the answer's doing."""
        caller = frame.f_back
        while caller is not None and caller.f_code.co_filename.startswith(self.passthrough):
            caller = caller.f_back
        if caller is None or not self.library:
            return False
        filename = caller.f_code.co_filename
        # the grading package calls the student's code (checks, probes): its calls are the answer's
        return filename.startswith(self.library) and not filename.startswith(self.library + "grading/")


def resolve(names: list[str]) -> Forbidden:
    """Dotted names → what to watch for. Names that do not exist here (a package not installed) are skipped."""
    import torch

    import resnet_explorer

    out = Forbidden(library=str(Path(resnet_explorer.__file__).parent) + "/",
                    passthrough=(str(Path(torch.__file__).parent) + "/", sysconfig.get_paths()["stdlib"] + "/"))
    for name in names:
        file = _module_file(name)
        if file is not None:
            (out.packages if file.endswith("/") else out.files)[file] = name
            continue
        obj = _object(name)
        if obj is None or isinstance(obj, types.ModuleType):
            continue
        else:
            for code in _codes(obj):
                if id(code) not in out.codes:
                    out.codes[id(code)] = name
                    out._kept.append(code)
    return out


class Watch:
    """While active, records the forbidden code run in this thread and in threads started from it."""

    def __init__(self, forbidden: Forbidden):
        self.forbidden = forbidden
        self.used: list[str] = []
        self.tampered = False
        self._hook: Callable | None = None
        self._previous: Callable | None = None

    def __enter__(self) -> "Watch":
        forbidden, name_of, used = self.forbidden, self.forbidden.name_of, self.used

        def hook(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "call":
                name = name_of(frame.f_code)
                if name is not None and name not in used and not forbidden.called_by_library(frame):
                    used.append(name)

        self._hook = hook
        self._previous = sys.getprofile()  # a profiler the user had (the visible checks run in their kernel)
        threading.setprofile(hook)
        sys.setprofile(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.tampered = sys.getprofile() is not self._hook
        sys.setprofile(self._previous)
        threading.setprofile(None)

    def report(self) -> list[str]:
        """What was used, and whether the hook was taken away (then nothing can be vouched for)."""
        return self.used + (["(the call tracer was removed while the probe ran)"] if self.tampered else [])


def uses(forbidden: Forbidden, fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()``'s result and the forbidden code it ran (for the visible checks)."""
    with Watch(forbidden) as w:
        result = fn()
    return result, w.report()
