"""The notebook's definitions carried, as data, from the process that ran its cells to the one that tests them.

The cells run in a process of their own (`cells`); the tests run in processes forked from one
that never ran submitted code (`child`). Between them crosses data only: `export` turns the
notebook's namespace into nested tuples of plain values and code objects (``marshal``), and
`load` builds functions, classes and values from that without running any of the submission's
code: no unpickling, no class body, no decorator, no metaclass or ``__init_subclass__`` of the
submission. Modules and the library's own functions and classes travel by name and are looked
up in the clean process. What cannot travel (an instance of a class of the notebook, an open
file, a generator) becomes a `NotCarried` placeholder that raises, naming it, when a test uses it.
"""

from __future__ import annotations

import abc
import functools
import marshal
import sys
import types
from typing import Any

VERSION = 1
MAX_BYTES = 32 * 2**20  # the whole export
MAX_NODES = 200_000
MAX_DEPTH = 60
MAX_ARRAY_BYTES = 8 * 2**20
ALLOWED_META = (type, abc.ABCMeta)
PRIMITIVES = (type(None), bool, int, float, complex, str, bytes)
TENSOR_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


class NotCarriedError(Exception):
    """A test used a value of the notebook that could not be carried to it."""


class NotCarried:
    """Stands for a value of the notebook that could not be carried to the tests: any use raises."""

    def __init__(self, what: str):
        object.__setattr__(self, "_what", what)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise NotCarriedError(f"{object.__getattribute__(self, '_what')} could not be carried from the notebook's "
                              "cells to the tests (define it with def or class, from plain values)")

    __call__ = __getitem__ = __iter__ = __len__ = __bool__ = __int__ = __float__ = __index__ = _fail

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (hasattr, copy, ABCMeta) sees an ordinary object
            raise AttributeError(name)
        return self._fail()

    def __repr__(self) -> str:
        return f"<not carried: {object.__getattribute__(self, '_what')}>"


def _missing(why: str) -> tuple:
    return ("X", why)


def _reference(obj: Any) -> tuple | None:
    """``("R", module, qualname)`` when ``obj`` is what that name denotes in an importable module, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__" \
            or "<" in qualname or sys.modules.get(module) is None:
        return None
    found: Any = sys.modules[module]
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return ("R", module, qualname) if found is obj else None


def _named(obj: Any) -> tuple | None:
    """A library object found by its name in its module (``np.sqrt``, a ufunc with no ``__module__``), or None."""
    name = getattr(obj, "__name__", None)
    for module in (getattr(obj, "__module__", None), type(obj).__module__.split(".")[0]):
        found = sys.modules.get(module) if isinstance(module, str) and module != "__main__" else None
        if isinstance(name, str) and name.isidentifier() and found is not None and getattr(found, name, None) is obj:
            return ("R", module, name)
    return None


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _Exporter:
    """The notebook's namespace as marshal-able nodes; functions and classes in a table (cycles, sharing)."""

    def __init__(self, ns: dict):
        self.ns = ns
        self.table: list[Any] = []
        self.index: dict[int, int] = {}
        self.memo: dict[int, tuple] = {}
        self.keep: list[Any] = []  # the objects whose ids are in index/memo stay alive
        self.nodes = 0
        self.size = 0

    def node(self, v: Any, depth: int = 0) -> tuple:
        self.nodes += 1
        if self.nodes > MAX_NODES or self.size > MAX_BYTES or depth > MAX_DEPTH:
            return _missing("a value too large or too deeply nested")
        t = type(v)
        if t in PRIMITIVES:
            self.size += len(v) if t in (str, bytes) else 8
            return ("=", v)
        if id(v) in self.index:
            return ("O", self.index[id(v)])
        if id(v) in self.memo:
            return self.memo[id(v)]
        if isinstance(v, (int, float, str, bytes)) and not isinstance(v, bool):  # numpy scalars, IntEnum …
            base = next(b for b in (int, float, str, bytes) if isinstance(v, b))
            return self.node(base(v), depth)
        self.keep.append(v)
        self.memo[id(v)] = _missing("a container that holds itself")
        made = self._container(v, depth) or self._other(v, depth)
        self.memo[id(v)] = made
        return made

    def _container(self, v: Any, depth: int) -> tuple | None:
        if isinstance(v, dict) and type(v).__module__ in ("builtins", "collections"):
            return ("D", tuple((self.node(k, depth + 1), self.node(x, depth + 1)) for k, x in list(v.items())))
        for kind, tag in ((list, "L"), (tuple, "T"), (set, "S"), (frozenset, "F")):
            if type(v) is kind:
                return (tag, tuple(self.node(x, depth + 1) for x in list(v)))
        return None

    def _other(self, v: Any, depth: int) -> tuple:
        if isinstance(v, types.ModuleType):
            name = getattr(v, "__name__", None)
            return ("M", name) if isinstance(name, str) and sys.modules.get(name) is v else _missing("a module")
        ref = _reference(v) if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType)) else None
        if ref:
            return ref
        if isinstance(v, types.FunctionType):
            return self._function(v, depth)
        if isinstance(v, type):
            return self._class(v, depth) if type(v) in ALLOWED_META else _missing(f"a class made by {type(v).__name__}")
        return self._wrapper(v, depth) or self._data(v) or _named(v) or self._instance(v, depth)

    def _wrapper(self, v: Any, depth: int) -> tuple | None:
        d = depth + 1
        if type(v) is staticmethod:
            return ("SM", self.node(v.__func__, d))
        if type(v) is classmethod:
            return ("CM", self.node(v.__func__, d))
        if type(v) is property:
            return ("P", self.node(v.fget, d), self.node(v.fset, d), self.node(v.fdel, d), self.node(v.__doc__, d))
        if type(v) is types.MethodType:
            return ("B", self.node(v.__func__, d), self.node(v.__self__, d))
        if type(v) is functools.partial:
            return ("PA", self.node(v.func, d), self.node(v.args, d), self.node(v.keywords, d))
        if type(v).__name__ == "_lru_cache_wrapper" and hasattr(v, "__wrapped__"):
            params = v.cache_parameters()
            return ("LRU", self.node(v.__wrapped__, d), self.node(params.get("maxsize"), d),
                    self.node(bool(params.get("typed")), d))
        return None

    def _data(self, v: Any) -> tuple | None:
        torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
        if torch is not None and isinstance(v, torch.dtype):
            return ("DT", str(v).removeprefix("torch."))
        if torch is not None and type(v) in (torch.Tensor, torch.nn.Parameter):
            name = str(v.dtype).removeprefix("torch.")
            if v.device.type != "cpu" or name not in TENSOR_DTYPES or v.numel() * v.element_size() > MAX_ARRAY_BYTES:
                return _missing("a tensor (too large, or not on the CPU)")
            data = v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b""
            self.size += len(data)
            return ("TEN", name, tuple(v.shape), data, bool(v.requires_grad))
        if np is not None and type(v) is np.ndarray:
            if v.dtype.kind not in "biufc" or v.nbytes > MAX_ARRAY_BYTES:
                return _missing("an array (too large, or not numbers)")
            self.size += v.nbytes
            return ("ARR", v.dtype.str, tuple(v.shape), v.tobytes())
        return None

    def _instance(self, v: Any, depth: int) -> tuple:
        """A small object of a library class (``torch.no_grad()`` in a decorator): its class by name, its fields."""
        cls = type(v)
        torch = sys.modules.get("torch")
        state = getattr(v, "__dict__", None)
        if _reference(cls) is None or type(state) is not dict or len(state) > 50 or hasattr(cls, "__slots__") \
                or (torch is not None and isinstance(v, torch.nn.Module)):
            return _missing(f"a {cls.__name__}")
        return ("I", self.node(cls, depth + 1), self.node(state, depth + 1))

    def _reserve(self, obj: Any) -> int:
        self.keep.append(obj)
        self.index[id(obj)] = len(self.table)
        self.table.append(None)
        return self.index[id(obj)]

    def _function(self, f: types.FunctionType, depth: int) -> tuple:
        i, d = self._reserve(f), depth + 1
        g = f.__globals__
        name = g.get("__name__")
        if g is self.ns:
            where: tuple = ("ns",)
        elif isinstance(name, str) and sys.modules.get(name) is not None and vars(sys.modules[name]) is g:
            where = ("mg", name)
        else:
            where = ("new",)
        cells = []
        for c in f.__closure__ or ():
            try:
                cells.append(self.node(c.cell_contents, d))
            except ValueError:  # an empty cell
                cells.append(None)
        doc = f.__doc__ if isinstance(f.__doc__, str) else None
        self.table[i] = ("fn", f.__code__, where, f.__name__, f.__qualname__, self.node(f.__defaults__, d),
                         self.node(f.__kwdefaults__, d), tuple(cells), self.node(dict(vars(f)), d), doc)
        return ("O", i)

    def _class(self, c: type, depth: int) -> tuple:
        i, d = self._reserve(c), depth + 1
        bases = tuple(self.node(b, d) for b in c.__bases__)
        items = tuple((k, self.node(v, d)) for k, v in list(vars(c).items())
                      if isinstance(k, str) and k not in ("__dict__", "__weakref__", "__classcell__")
                      and not isinstance(v, (types.MemberDescriptorType, types.GetSetDescriptorType)))
        self.table[i] = ("cls", c.__name__, c.__qualname__, bases, items)
        return ("O", i)


def export(ns: dict) -> bytes:
    """The notebook's namespace (its own names, not ``__builtins__`` and the like) as bytes `load` reads."""
    ex = _Exporter(ns)
    tree = tuple((k, ex.node(v)) for k, v in list(ns.items()) if isinstance(k, str) and not _dunder(k))
    return marshal.dumps((VERSION, tuple(ex.table), tree))

