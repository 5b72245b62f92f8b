"""Judging in the trusted process: a child's reported data decoded and compared with the solution's.

Nothing the child reports is trusted: arrays come as base64 with a whitelisted dtype
(nothing is unpickled), and every value is checked for its type before it is compared.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .assignment import Assignment, HiddenTest
from .sandbox import ChildResult, TooLong

MAX_MESSAGE = 600

_DTYPES = {"<f8": np.float64, "<i8": np.int64}


def decode(value: Any, depth: int = 0) -> Any:
    """A child's reported value as plain Python / numpy, without trusting anything in it."""
    if depth > 20:
        raise ValueError("nested too deep")
    if isinstance(value, dict):
        if "__array__" in value:
            dtype = _DTYPES.get(value.get("__array__"))
            shape = value.get("shape")
            if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
                raise ValueError("malformed array")
            data = base64.b64decode(str(value.get("data", "")), validate=True)
            arr = np.frombuffer(data, dtype=dtype)
            if arr.size != int(np.prod(shape)):
                raise ValueError("array data does not match its shape")
            return arr.reshape(shape)
        return {str(k): decode(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, depth + 1) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, TooLong):
        raise ValueError(f"a number of {value.digits} digits")
    raise ValueError(f"unexpected {type(value).__name__}")


def _fmt(x: Any) -> str:
    text = np.array2string(x, threshold=6, precision=4) if isinstance(x, np.ndarray) else repr(x)
    return text if len(text) < 200 else text[:199] + "…"


def difference(got: Any, want: Any, test: HiddenTest, where: str = "output") -> str | None:
    """None when ``got`` matches ``want``; else what differs, in one sentence."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where} should be a dict, got {type(got).__name__}"
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
                    ([f"unexpected {', '.join(extra[:5])}"] if extra else [])
            return f"{where} keys differ: {'; '.join(parts)}"
        for k in want:
            msg = difference(got[k], want[k], test, f"{where}[{k!r}]")
            if msg:
                return msg
        return None
    if isinstance(want, np.ndarray):
        if not isinstance(got, np.ndarray):
            return f"{where} should be a tensor, got {type(got).__name__}"
        if got.shape != want.shape:
            return f"{where} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if not np.allclose(got, want, rtol=test.rtol, atol=test.atol):
            err = float(np.max(np.abs(got.astype(float) - want.astype(float))))
            return f"{where} differs from the solution's (max |difference| {err:.3g})"
        return None
    if isinstance(want, bool) or isinstance(want, str) or want is None:
        return None if got == want else f"{where} is {_fmt(got)}, expected {_fmt(want)}"
    if isinstance(want, int):
        if isinstance(got, bool) or not isinstance(got, int) or got != want:
            return f"{where} is {_fmt(got)}, expected {want:,}"
        return None
    if isinstance(want, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not np.isclose(got, want, rtol=test.rtol, atol=test.atol):
            return f"{where} is {_fmt(got)}, expected {want:.6g}"
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where} should be a list of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            msg = difference(g, w, test, f"{where}[{i}]")
            if msg:
                return msg
        return None
    return f"{where}: cannot compare a {type(want).__name__}"


def _outputs(record: dict | None) -> tuple[Any, str | None]:
    if record is None:
        return None, "not run (the process ended before this test)"
    if "error" in record:
        return None, _clip(f"raised {record['error']}")
    try:
        return decode(record.get("outputs")), None
    except Exception as e:  # anything in a child's record is the child's problem, not the grader's
        return None, _clip(f"malformed output ({e})")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def forbidden_use(record: dict | None, names: list[str]) -> str | None:
    """Why a test's record shows a forbidden call (None when clean). Its question is watched
    (``names``), so a genuine record says what it ran; one that does not was not made by the probe."""
    if not names or record is None:
        return None
    used = record.get("uses")
    if not isinstance(used, list) or not all(isinstance(u, str) for u in used):
        return "not graded: the record of this test does not say which code it ran (not made by the probe)"
    if used:
        return _clip(f"not graded: the answer calls {', '.join(used)}, which this question may not use "
                     f"(the assignment forbids {', '.join(names)})")
    return None


def compare(got: Any, want: Any, test: HiddenTest) -> str | None:
    """`difference`, and a mismatch message where comparing itself fails (a number too large for a float)."""
    try:
        return difference(got, want, test)
    except Exception as e:
        return _clip(f"output cannot be compared with the solution's ({type(e).__name__}: {e})")


@dataclass
class TestResult:
    name: str
    question: str
    points: float
    max_points: float
    passed: bool
    message: str = ""


@dataclass
class SubmissionResult:
    submission: str
    status: str
    reason: str = ""
    tests: list[TestResult] = field(default_factory=list)
    cell_errors: list[dict] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_peak_mb: float | None = None
    flags: list[str] = field(default_factory=list)  # forbidden library code the answers called

    @property
    def points(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def failed(self) -> list[str]:
        return [t.name for t in self.tests if not t.passed]


def judge(assignment: Assignment, child: ChildResult, reference: dict[str, Any], name: str,
          written: list[str]) -> SubmissionResult:
    """The submission's score: each test's outputs compared with the solution's, here in the trusted process."""
    result = SubmissionResult(name, child.status, child.reason, cell_errors=child.cell_errors,
                              written=written, seconds=round(child.seconds, 1), cpu_seconds=child.cpu_seconds,
                              memory_peak_mb=child.memory_peak_mb)
    for test in assignment.tests:
        record = child.probes.get(test.name)
        got, problem = _outputs(record)
        if problem is None:
            problem = compare(got, reference[test.name], test)
        flagged = forbidden_use(record, assignment.forbidden.get(test.question, []))
        if flagged:
            problem = flagged
            used = record.get("uses") if isinstance(record, dict) else None
            for u in used[:10] if isinstance(used, list) and used else ["(no call report)"]:
                flag = f"{test.question}: {str(u)[:200]}"
                if flag not in result.flags:
                    result.flags.append(flag)
        if problem and child.status != "ok" and test.name not in child.probes:
            problem = f"not run: {child.status} ({child.reason})"
        ok = problem is None
        result.tests.append(TestResult(test.name, test.question, test.points if ok else 0.0,
                                       test.points, ok, problem or ""))
    return result
