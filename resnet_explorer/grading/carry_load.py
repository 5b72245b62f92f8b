"""The notebook's definitions built from `carry.export`'s bytes in the clean process, without running any of them.

The bytes come from the process that ran the submission's cells, so they are hostile data:
they are read with ``marshal`` (plain values and code objects, nothing is called), every node
is checked for its shape, and objects are made only in ways that run no code of the
submission: ``types.FunctionType`` from a code object, ``type()`` for a class whose metaclass is
``type`` or ``ABCMeta`` and whose bases' ``__init_subclass__`` is not the submission's, the
library's classes and functions looked up by name. A node that is malformed, too large or of
a kind this does not make becomes a `NotCarried` placeholder; the rest is carried.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import marshal
import types
from typing import Any

from .carry import ALLOWED_META, MAX_BYTES, MAX_DEPTH, MAX_NODES, PRIMITIVES, TENSOR_DTYPES, VERSION, NotCarried


class CarryError(Exception):
    """The export as a whole cannot be read (not the format `carry.export` writes)."""


def _plain_key(k: Any) -> bool:
    return type(k) in PRIMITIVES or (type(k) is tuple and all(_plain_key(x) for x in k))


def _module(name: Any) -> types.ModuleType:
    if not isinstance(name, str) or not name or name.startswith((".", "__main__")):
        raise ValueError("not a module name")
    return importlib.import_module(name)


def _lookup(module: Any, qualname: Any) -> Any:
    """What ``module.qualname`` names here (the library's own object, never the submission's)."""
    if not isinstance(qualname, str) or "<" in qualname:
        raise ValueError("not a qualified name")
    found: Any = _module(module)
    for part in qualname.split("."):
        if not part.isidentifier():
            raise ValueError("not a qualified name")
        found = getattr(found, part)
    return found


class _Builder:
    def __init__(self, table: tuple, ns: dict):
        self.table, self.ns = table, ns
        self.objects: dict[int, Any] = {}
        self.building: set[int] = set()
        self.made_here: set[int] = set()  # ids of the classes made from the export (the submission's)
        self.keep: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.budget = 2 * MAX_NODES

    def value(self, node: Any, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:
            return NotCarried("a value too large or too deeply nested")
        if type(node) is not tuple or not node or type(node[0]) is not str:
            return NotCarried("a malformed value")
        if id(node) in self.memo:
            return self.memo[id(node)]
        try:
            made = self._make(node, depth + 1)
        except Exception as e:  # a malformed or unbuildable node stays behind, the rest goes on
            made = NotCarried(f"a value ({type(e).__name__})")
        self.memo[id(node)] = made
        return made

    def _items(self, node: tuple, depth: int) -> list:
        if type(node[1]) is not tuple:
            raise ValueError("malformed")
        return [self.value(x, depth) for x in node[1]]

    def _make(self, node: tuple, depth: int) -> Any:
        tag = node[0]
        if tag == "=" and len(node) == 2 and type(node[1]) in PRIMITIVES:
            return node[1]
        if tag in ("L", "T", "S", "F"):
            items = self._items(node, depth)
            if tag in ("S", "F") and not all(_plain_key(x) for x in items):
                raise ValueError("a set of objects")
            return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "D":
            return self._dict(node, depth)
        if tag == "M":
            return _module(node[1])
        if tag == "R":
            return _lookup(node[1], node[2])
        if tag == "O":
            return self.object(node[1])
        if tag == "X":
            return NotCarried(str(node[1])[:200])
        return self._wrapper(node, depth) if tag in ("SM", "CM", "P", "B", "PA", "LRU") else self._data(node, depth)

    def _dict(self, node: tuple, depth: int) -> dict:
        out = {}
        for pair in node[1]:
            if type(pair) is not tuple or len(pair) != 2:
                raise ValueError("malformed")
            k = self.value(pair[0], depth)
            if not _plain_key(k):
                raise ValueError("a key that is not a plain value")
            out[k] = self.value(pair[1], depth)
        return out

    def _wrapper(self, node: tuple, depth: int) -> Any:
        tag, args = node[0], [self.value(x, depth) for x in node[1:]]
        if tag == "SM":
            return staticmethod(args[0])
        if tag == "CM":
            return classmethod(args[0])
        if tag == "P":
            return property(*args[:3], args[3] if isinstance(args[3], str) else None)
        if tag == "B":
            return types.MethodType(args[0], args[1])
        if tag == "PA":
            if type(args[1]) is not tuple or type(args[2]) is not dict or not all(type(k) is str for k in args[2]):
                raise ValueError("malformed")
            return functools.partial(args[0], *args[1], **args[2])
        if not (args[1] is None or type(args[1]) is int) or type(args[2]) is not bool:
            raise ValueError("malformed")
        return functools.lru_cache(maxsize=args[1], typed=args[2])(args[0])

    def _data(self, node: tuple, depth: int) -> Any:
        tag = node[0]
        if tag == "DT":
            import torch

            dtype = getattr(torch, str(node[1]))
            if not isinstance(dtype, torch.dtype):
                raise ValueError("not a dtype")
            return dtype
        if tag == "TEN":
            return _tensor(*node[1:])
        if tag == "ARR":
            return _array(*node[1:])
        if tag == "I":
            return self._instance(node, depth)
        raise ValueError(f"unknown node {tag[:20]!r}")

    def _instance(self, node: tuple, depth: int) -> Any:
        cls, state = self.value(node[1], depth), self.value(node[2], depth)
        if not isinstance(cls, type) or id(cls) in self.made_here or type(state) is not dict \
                or not all(type(k) is str for k in state):
            raise ValueError("not an object of a library class")
        obj = cls.__new__(cls)
        vars(obj).update(state)
        return obj

    def object(self, i: Any) -> Any:
        if type(i) is not int or not 0 <= i < len(self.table):
            raise ValueError("malformed")
        if i not in self.objects:
            entry = self.table[i]
            if type(entry) is not tuple or len(entry) != 5 or entry[0] != "cls":
                raise ValueError("malformed")
            return self._class(i, entry)
        return self.objects[i]

    def _class(self, i: int, entry: tuple) -> Any:
        _, name, qualname, base_nodes, items = entry
        if i in self.building:
            return NotCarried(f"the class {str(name)[:60]} (it refers to itself)")
        self.building.add(i)
        try:
            made = self._new_class(name, qualname, base_nodes, items)
        except Exception as e:
            made = NotCarried(f"the class {str(name)[:60]} ({type(e).__name__}: {str(e)[:100]})")
        finally:
            self.building.discard(i)
        self.objects[i] = made
        return made

    def _new_class(self, name: Any, qualname: Any, base_nodes: Any, items: Any) -> type:
        if type(name) is not str or type(qualname) is not str or type(base_nodes) is not tuple \
                or type(items) is not tuple:
            raise ValueError("malformed")
        bases = tuple(self.value(b, 1) for b in base_nodes) or (object,)
        for b in bases:
            if not isinstance(b, type) or type(b) not in ALLOWED_META:
                raise ValueError("a base that is not a plain class")
            if any(id(k) in self.made_here and "__init_subclass__" in vars(k) for k in b.__mro__):
                raise ValueError("a base with its own __init_subclass__")
        body: dict[str, Any] = {}
        for pair in items:
            if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str:
                raise ValueError("malformed")
            body[pair[0]] = self.value(pair[1], 1)
        body["__qualname__"] = qualname
        cls = type(name, bases, body)
        self.made_here.add(id(cls))
        self.keep.append(cls)
        return cls

    def functions(self) -> list[tuple[types.FunctionType, tuple]]:
        """Every function of the table made first, empty: classes and values can then refer to them."""
        made = []
        for i, entry in enumerate(self.table):
            if type(entry) is tuple and entry and entry[0] == "fn":
                try:
                    fn = self._shell(entry)
                    made.append((fn, entry))
                except Exception as e:
                    fn = NotCarried(f"the function {str(entry[3] if len(entry) > 3 else '?')[:60]} "
                                    f"({type(e).__name__})")
                self.objects[i] = fn
        return made

    def _shell(self, entry: tuple) -> types.FunctionType:
        _, code, where, name, qualname, _defaults, _kwdefaults, cells, _dict, doc = entry
        if type(code) is not types.CodeType or type(cells) is not tuple or len(cells) != len(code.co_freevars) \
                or type(name) is not str or type(qualname) is not str or type(where) is not tuple:
            raise ValueError("malformed")
        if where == ("ns",):
            scope = self.ns
        elif len(where) == 2 and where[0] == "mg":
            scope = vars(_module(where[1]))
        else:
            scope = {"__builtins__": builtins}
        fn = types.FunctionType(code, scope, name, None, tuple(types.CellType() for _ in cells))
        fn.__qualname__ = qualname
        fn.__doc__ = doc if type(doc) is str else None
        return fn

    def fill(self, fn: types.FunctionType, entry: tuple) -> None:
        """A function's closure, defaults and attributes, once every object exists."""
        for cell, node in zip(fn.__closure__ or (), entry[7]):
            if node is not None:
                cell.cell_contents = self.value(node, 1)
        defaults, kwdefaults, attrs = self.value(entry[5], 1), self.value(entry[6], 1), self.value(entry[8], 1)
        if defaults is None or type(defaults) is tuple:
            fn.__defaults__ = defaults
        if kwdefaults is None or (type(kwdefaults) is dict and all(type(k) is str for k in kwdefaults)):
            fn.__kwdefaults__ = kwdefaults
        if type(attrs) is dict:
            vars(fn).update({k: v for k, v in attrs.items() if type(k) is str})


def _tensor(dtype: Any, shape: Any, data: Any, requires_grad: Any) -> Any:
    import torch

    if dtype not in TENSOR_DTYPES or type(shape) is not tuple or not all(type(s) is int and s >= 0 for s in shape) \
            or type(data) is not bytes:
        raise ValueError("malformed tensor")
    kind = getattr(torch, dtype)
    n = 1
    for s in shape:
        n *= s
    if n * torch.empty(0, dtype=kind).element_size() != len(data):
        raise ValueError("tensor data does not match its shape")
    t = torch.frombuffer(bytearray(data), dtype=kind).reshape(shape).clone() if n else torch.empty(shape, dtype=kind)
    return t.requires_grad_(bool(requires_grad)) if t.dtype.is_floating_point else t


def _array(dtype: Any, shape: Any, data: Any) -> Any:
    import numpy as np

    kind = np.dtype(str(dtype))
    if kind.kind not in "biufc" or type(shape) is not tuple or not all(type(s) is int and s >= 0 for s in shape) \
            or type(data) is not bytes:
        raise ValueError("malformed array")
    return np.frombuffer(data, dtype=kind).reshape(shape).copy()


def load(blob: bytes) -> tuple[dict, list[str]]:
    """(the notebook's namespace as the tests see it, "name (why)" of each value that could not be carried)."""
    if len(blob) > MAX_BYTES + 2**20:
        raise CarryError(f"the definitions are larger than {MAX_BYTES // 2**20} MB")
    try:
        version, table, tree = marshal.loads(blob)
    except Exception as e:  # not what export writes: the cells' process was tampered with
        raise CarryError(f"the definitions are not readable ({type(e).__name__})") from None
    if version != VERSION or type(table) is not tuple or type(tree) is not tuple:
        raise CarryError("the definitions are not readable (unknown layout)")
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    b = _Builder(table, ns)
    try:
        shells = b.functions()
        for fn, entry in shells:
            try:
                b.fill(fn, entry)
            except Exception:  # a closure or default that cannot be made: that function keeps None there
                pass
        missing = []
        for pair in tree:
            if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str \
                    or (pair[0].startswith("__") and pair[0].endswith("__")):
                continue
            v = b.value(pair[1])
            if isinstance(v, NotCarried):
                what = repr(v).removeprefix("<not carried: ").removesuffix(">")
                v = NotCarried(f"{pair[0]} ({what})")
                missing.append(f"{pair[0]} ({what})")
            ns[pair[0]] = v
    except RecursionError:
        raise CarryError("the definitions are nested too deeply") from None
    return ns, missing
