"""The trust boundary: every value that comes out of a sandbox is read here, strictly.

A grading child reports on one channel, one JSON object per line, in one order::

    {"event": "start", "uid": N}
    {"event": "cells", "errors": [{"cell": i, "error": "…"}], "ended": null | {...}, "not_carried": ["…"]}
    then for each test, in the order it was asked: {"use": "dotted.name", "probe": T} lines (the
    forbidden code its answer ran), then {"probe": T, "outputs": …} or {"probe": T, "error": "…"}
    {"event": "done"}

`parse_line` reads one line: UTF-8 JSON, an object, no key twice, integers of at most
`MAX_DIGITS` digits, finite floats (``NaN`` and ``Infinity`` refused, ``1e999`` too), nesting and
sizes bounded. `read_stream` checks the events, their order, their keys and the types and sizes of
every field. Outputs are plain JSON plus three tagged forms the child writes itself: arrays
(``{"__array__": "<f8", "shape": [...], "data": base64}``), non-finite floats (``{"__float__":
"nan"}``) and integers too long to write (``{"__bigint__": digits}``); `decode` turns them into
numpy and Python values. Anything else is a `Violation`: the child does not write it, so the
submission did, and its row is ``invalid`` with the reason. A last line cut short (the child
was killed while writing) is not one: the child ended there.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_DIGITS = 400  # a longer integer is never written by the child (it tags it); Python's own limit is 4300
MAX_LINE = 32 * 2**20
MAX_DEPTH = 40
MAX_TEXT = 4000  # an error message, a cell error
MAX_NAME = 300
MAX_ELEMENTS = 10**8
DTYPES = {"<f8": np.float64, "<i8": np.int64}
SIGNALS = range(1, 65)


class Violation(ValueError):
    """Something in a child's channel that the child's own code does not write."""


class Unreadable:
    """An output the child could not write as it is (an integer of `digits` digits): that test fails."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a number of {self.digits} digits>"


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise Violation(f"a number of {len(text.lstrip('-'))} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= MAX_DIGITS else math.inf
    if not math.isfinite(value):
        raise Violation(f"a number that is not finite ({text[:20]})")
    return value


def _constant(text: str) -> Any:
    raise Violation(f"{text} (not JSON)")


def _object(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Violation("an object with a key twice")
    return out


def parse_line(raw: bytes) -> dict:
    """One line of a child's channel as a dict, or `Violation` saying what is wrong with it."""
    if len(raw) > MAX_LINE:
        raise Violation(f"a line of {len(raw) / 2**20:.0f} MB")
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant,
                         object_pairs_hook=_object)
    except Violation:
        raise
    except RecursionError:
        raise Violation("a line nested too deeply") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise Violation("a line that is not JSON") from None
    if type(obj) is not dict:
        raise Violation("a line that is not a JSON object")
    return obj


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if type(value) is not str or len(value) > limit:
        raise Violation(f"{what} that is not a short string")
    return value


def _small_int(value: Any, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise Violation(f"{what} out of range")
    return value


def _array(value: dict) -> np.ndarray:
    if set(value) != {"__array__", "shape", "data"} or value["__array__"] not in DTYPES:
        raise Violation("a malformed array")
    shape, data = value["shape"], value["data"]
    if type(shape) is not list or len(shape) > 32 or not all(type(s) is int and 0 <= s <= MAX_ELEMENTS for s in shape):
        raise Violation("an array with a malformed shape")
    n = math.prod(shape)
    if n > MAX_ELEMENTS or type(data) is not str:
        raise Violation("a malformed array")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise Violation("an array whose data is not base64") from None
    if len(raw) != 8 * n:
        raise Violation("an array whose data does not match its shape")
    return np.frombuffer(raw, dtype=DTYPES[value["__array__"]]).reshape(shape)


def decode(value: Any, depth: int = 0) -> Any:
    """A reported output as Python and numpy values; `Violation` for anything the child does not write."""
    if depth > MAX_DEPTH:
        raise Violation("an output nested too deeply")
    t = type(value)
    if t in (str, int, float, bool) or value is None:
        return value
    if t is list:
        return [decode(v, depth + 1) for v in value]
    if t is not dict:
        raise Violation(f"an output of type {t.__name__}")
    if "__array__" in value:
        return _array(value)
    if "__float__" in value:
        if set(value) != {"__float__"} or value["__float__"] not in ("nan", "inf", "-inf"):
            raise Violation("a malformed number")
        return float(value["__float__"])
    if "__bigint__" in value:
        if set(value) != {"__bigint__"}:
            raise Violation("a malformed number")
        return Unreadable(_small_int(value["__bigint__"], "a number's length", MAX_DIGITS + 1, 10**12))
    if any(k.startswith("__") for k in value):
        raise Violation("an output with an unknown tag")
    return {k: decode(v, depth + 1) for k, v in value.items()}


def contains_unreadable(value: Any) -> Unreadable | None:
    """The first `Unreadable` inside a decoded output, if any."""
    if isinstance(value, Unreadable):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((u for u in map(contains_unreadable, items) if u is not None), None)


def test_line(obj: dict) -> tuple[str, Any]:
    """A line of one test's own channel (inside the sandbox): ("use", name) | ("outputs", value) | ("error", text)."""
    if set(obj) == {"use"}:
        return "use", _text(obj["use"], "a use", MAX_NAME)
    if set(obj) == {"outputs"}:
        decode(obj["outputs"])
        return "outputs", obj["outputs"]
    if set(obj) == {"error"}:
        return "error", _text(obj["error"], "an error")
    raise Violation(f"a line with the keys {sorted(obj)[:4]}")


@dataclass
class Record:
    """One test's result as reported: its decoded outputs, or what it raised."""

    outputs: Any = None
    error: str | None = None


@dataclass
class Stream:
    """What a child reported, checked: the events in order, or the first `violation`."""

    uid: int | None = None
    events: list[str] = field(default_factory=list)
    cell_errors: list[dict] = field(default_factory=list)
    ended: dict | None = None  # how the cells' process ended, when it did not finish its cells
    not_carried: list[str] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)
    uses: list[tuple[str, str]] = field(default_factory=list)  # (test, forbidden name)
    violation: str = ""

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "done"


def _cells(obj: dict, n_cells: int, s: Stream) -> None:
    if set(obj) != {"event", "errors", "ended", "not_carried"} or type(obj["errors"]) is not list \
            or type(obj["not_carried"]) is not list or len(obj["errors"]) > n_cells or len(obj["not_carried"]) > 1000:
        raise Violation("a malformed cells event")
    for e in obj["errors"]:
        if type(e) is not dict or set(e) != {"cell", "error"}:
            raise Violation("a malformed cell error")
        s.cell_errors.append({"cell": _small_int(e["cell"], "a cell number", 1, n_cells),
                              "error": _text(e["error"], "a cell error")})
    s.not_carried = [_text(n, "a name", MAX_NAME) for n in obj["not_carried"]]
    ended = obj["ended"]
    if ended is not None:
        if type(ended) is not dict or set(ended) not in ({"after", "code"}, {"after", "signal"}):
            raise Violation("a malformed end of the cells")
        _small_int(ended["after"], "a cell count", 0, n_cells)
        _small_int(ended.get("code", 1), "an exit code", 0, 255)
        _small_int(ended.get("signal", 1), "a signal", 1, 64)
        s.ended = dict(ended)


def _misplaced(obj: dict, tests: list[str], step: int) -> str:
    due = "the end" if step >= len(tests) else repr(tests[step])
    probe, event = obj.get("probe"), obj.get("event")
    if type(probe) is str and (step >= len(tests) or probe != tests[step]):
        return f"a line out of order (test {probe[:60]!r} where {due} was due)"
    if event in ("start", "cells", "done"):
        return f"a {event} event out of order ({due} was due)"
    return f"a line with the keys {sorted(obj)[:4]}"


def _feed(obj: dict, tests: list[str], n_cells: int, s: Stream) -> None:
    step = len(s.records)
    event = obj.get("event")
    if not s.events:
        if event != "start" or set(obj) != {"event", "uid"} or not (obj["uid"] is None or type(obj["uid"]) is int):
            raise Violation("the first line is not the start")
        s.uid = obj["uid"]
    elif s.events == ["start"]:
        if event != "cells":
            raise Violation("the second line is not the cells' report")
        _cells(obj, n_cells, s)
    elif s.done:
        raise Violation("a line after the end")
    elif event == "done" and set(obj) == {"event"}:
        if step != len(tests):
            raise Violation(f"the end after {step} of {len(tests)} tests")
    elif set(obj) == {"use", "probe"} and step < len(tests) and obj["probe"] == tests[step]:
        s.uses.append((tests[step], _text(obj["use"], "a use", MAX_NAME)))
        return
    elif set(obj) in ({"probe", "outputs"}, {"probe", "error"}) and step < len(tests) and obj["probe"] == tests[step]:
        s.records[tests[step]] = Record(decode(obj["outputs"])) if "outputs" in obj else \
            Record(error=_text(obj["error"], "an error"))
        event = "probe"
    else:
        raise Violation(_misplaced(obj, tests, step))
    s.events.append(event)


def read_stream(raw: bytes, tests: list[str], n_cells: int) -> Stream:
    """The child's channel ``raw`` checked line by line; reading stops at the first violation."""
    s = Stream()
    lines = raw.split(b"\n")
    for i, line in enumerate(lines[:-1]):  # the last piece has no newline: cut short, or empty
        try:
            _feed(parse_line(line), tests, n_cells, s)
        except Violation as v:
            s.violation = f"line {i + 1} of its results: {v}"
            break
    return s
