"""Which library code an answer runs: the reference implementations a graded part may not call.

An assignment names, per question, the functions, classes and modules a student may not
delegate to (``FORBIDDEN`` in its ``hidden_tests.py``; the resnet_basics list is
`checks.FORBIDDEN`). They are resolved to code objects *before* any submitted code runs
(`resolve`), and while a graded probe runs a profile hook (`Watch`) reports every call of one
of them made on the answer's behalf, however it was reached: an alias (``ShortcutA =
model.ShortcutA``), a subclass, a wrapper, ``super().forward``, a module's function called by
name, a copy of the reference compiled again from the same lines. A call is the answer's
unless the nearest caller outside torch and the standard library is the library itself
(``build`` counts its spec; the library's block calls its own shortcut): so a library function
that uses a reference internally must be listed too if it would answer the question.

Code is recognised by what it is, not by the file it claims: code objects compare by their
contents (bytecode, constants, names, line numbers), so the forbidden code and the library's
own code are sets of such contents, and code compiled with a library file's name but other
contents is the answer's (`Forbidden.classify`). In the sandbox each use is reported the moment
it happens (``on_use``), so nothing the answer does to this module afterwards hides it.

What it does not see (say so to students and IT): code run outside the traced thread (a
thread started with ``_thread``, a subprocess), a reference copied with other line numbers,
a library function that calls whatever it is given (a trampoline), or a submission that
removes or alters the hook and puts it back before the test ends; the hook missing at the
end of a test is reported.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
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


def defined_codes(module: types.ModuleType) -> set[types.CodeType]:
    """The code of the functions and classes a module defines itself (not those it imports)."""
    found: set[types.CodeType] = set()
    name = module.__name__
    for obj in list(vars(module).values()):
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == name:
            found |= _codes(obj)
    return found


def library_codes(package: str = "resnet_explorer", outside: str = "resnet_explorer.grading") -> set[types.CodeType]:
    """The code of ``package``'s loaded modules, except ``outside`` (the grader calls the answers: its calls are theirs)."""
    found: set[types.CodeType] = set()
    for name, module in list(sys.modules.items()):
        if isinstance(module, types.ModuleType) and (name == package or name.startswith(package + ".")) \
                and not (name == outside or name.startswith(outside + ".")):
            found |= defined_codes(module)
    return found


def file_codes(path: str) -> set[types.CodeType]:
    """Every code object of the Python file at ``path``, compiled from the file itself (empty when unreadable)."""
    try:
        with open(path, encoding="utf-8") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return set()
    return _codes(code)


@dataclass
class Forbidden:
    """The code some questions may not run, and the library's own code: sets of code contents, and module files."""

    codes: dict[types.CodeType, str] = field(default_factory=dict)  # forbidden code (by contents) -> its name
    files: dict[str, str] = field(default_factory=dict)  # a module's file -> its name
    packages: dict[str, str] = field(default_factory=dict)  # a package's folder + "/" -> its name
    library: set[types.CodeType] = field(default_factory=set)  # resnet_explorer's own code, grading excluded
    library_root: str = ""  # resnet_explorer's folder + "/": a file there not yet loaded is read to check
    passthrough: tuple[str, ...] = ()  # torch and the standard library: callers looked through
    _seen: dict[int, tuple] = field(default_factory=dict, repr=False)  # id(code) -> (code, name, is_library)
    _read: set[str] = field(default_factory=set, repr=False)

    def __bool__(self) -> bool:
        return bool(self.codes or self.files or self.packages)

    def classify(self, code: types.CodeType) -> tuple[types.CodeType, str | None, bool]:
        """(code, the forbidden name it is or None, whether it is the library's own code), cached per code object."""
        known = self._seen.get(id(code))
        if known is not None:
            return known
        filename = code.co_filename
        name = self.codes.get(code) or self.files.get(filename)
        if name is None and self.packages and filename.startswith(tuple(self.packages)):
            name = next(n for p, n in self.packages.items() if filename.startswith(p))
        mine = code in self.library
        if not mine and self.library_root and filename.startswith(self.library_root) and filename not in self._read \
                and not filename.startswith(self.library_root + "grading/"):
            self._read.add(filename)  # a module imported after `resolve`: its code, compiled from its file
            self.library |= file_codes(filename)
            mine = code in self.library
        known = self._seen[id(code)] = (code, name, mine)
        return known

    def name_of(self, code: types.CodeType) -> str | None:
        return self.classify(code)[1]

    def called_by_library(self, frame: types.FrameType) -> bool:
        """Whether the nearest caller of ``frame`` outside torch and the standard library is the library
        itself (``build`` counting a spec, a block calling its shortcut): not the answer's doing."""
        caller = frame.f_back
        while caller is not None and caller.f_code.co_filename.startswith(self.passthrough):
            caller = caller.f_back
        return caller is not None and self.classify(caller.f_code)[2]


def resolve(names: list[str]) -> Forbidden:
    """Dotted names → what to watch for. Names that do not exist here (a package not installed) are skipped."""
    import torch

    import resnet_explorer

    out = Forbidden(library=library_codes(), library_root=str(Path(resnet_explorer.__file__).parent) + "/",
                    passthrough=(str(Path(torch.__file__).parent) + "/", sysconfig.get_paths()["stdlib"] + "/"))
    for name in names:
        file = _module_file(name)
        if file is not None:
            (out.packages if file.endswith("/") else out.files)[file] = name
            module = sys.modules.get(name)
            codes = defined_codes(module) if isinstance(module, types.ModuleType) else set()
        else:
            obj = _object(name)
            codes = set() if obj is None or isinstance(obj, types.ModuleType) else _codes(obj)
        for code in codes:
            out.codes.setdefault(code, name)
    return out


TAMPERED = "(the call tracer was removed while the probe ran)"


class Watch:
    """While active, reports the forbidden code run in this thread and in threads started from it.

    ``on_use(name)`` is called the first time each forbidden name is used (the sandbox writes it
    out at once); ``only``: the names to report (all of ``forbidden``'s when None); `report` lists
    them afterwards, with `TAMPERED` when the hook was taken away."""

    def __init__(self, forbidden: Forbidden, on_use: Callable[[str], None] | None = None,
                 only: set[str] | None = None):
        self.forbidden = forbidden
        self.on_use = on_use
        self.only = only
        self.used: list[str] = []
        self.tampered = False
        self._hook: Callable | None = None
        self._previous: Callable | None = None

    def __enter__(self) -> "Watch":
        seen, classify, excused = self.forbidden._seen, self.forbidden.classify, self.forbidden.called_by_library
        used, on_use, only = self.used, self.on_use, self.only

        def hook(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "call":
                code = frame.f_code
                name = (seen.get(id(code)) or classify(code))[1]
                if name is not None and name not in used and (only is None or name in only) and not excused(frame):
                    used.append(name)
                    if on_use is not None:
                        on_use(name)

        self._hook = hook
        self._previous = sys.getprofile()  # a profiler the user had (the visible checks run in their kernel)
        threading.setprofile(hook)
        sys.setprofile(hook)
        return self

    def intact(self) -> bool:
        """Whether the hook is still this thread's profiler."""
        return sys.getprofile() is self._hook

    def __exit__(self, *exc: Any) -> None:
        self.tampered = not self.intact()
        sys.setprofile(self._previous)
        threading.setprofile(None)

    def report(self) -> list[str]:
        """What was used, and whether the hook was taken away (then nothing can be vouched for)."""
        return self.used + ([TAMPERED] if self.tampered else [])


def uses(forbidden: Forbidden, fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()``'s result and the forbidden code it ran (for the visible checks)."""
    with Watch(forbidden) as w:
        result = fn()
    return result, w.report()
