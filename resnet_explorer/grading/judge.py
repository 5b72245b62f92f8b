"""Judging in the trusted process: a child's checked report compared with the solution's.

The report was read by `records` (types, sizes, finite numbers, order) before it gets here;
each test's outputs are compared with the solution's, and the tests of a question whose
forbidden library code the answers ran score nothing, with a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .assignment import Assignment, HiddenTest
from .integrity import TAMPERED
from .records import Record, Stream, contains_unreadable
from .sandbox import ChildResult

MAX_MESSAGE = 600


def _fmt(x: Any) -> str:
    text = np.array2string(x, threshold=6, precision=4) if isinstance(x, np.ndarray) else repr(x)
    return text if len(text) < 200 else text[:199] + "…"


def _difference_in(got: Any, want: Any, test: HiddenTest, where: str) -> str | None:
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where} should be a dict, got {type(got).__name__}"
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
                    ([f"unexpected {', '.join(extra[:5])}"] if extra else [])
            return f"{where} keys differ: {'; '.join(parts)}"
        return next((m for k in want if (m := difference(got[k], want[k], test, f"{where}[{k!r}]"))), None)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where} should be a list of {len(want)}"
        return next((m for i, (g, w) in enumerate(zip(got, want)) if (m := difference(g, w, test, f"{where}[{i}]"))),
                    None)
    return None


def difference(got: Any, want: Any, test: HiddenTest, where: str = "output") -> str | None:
    """None when ``got`` matches ``want``; else what differs, in one sentence."""
    if isinstance(want, (dict, list)):
        return _difference_in(got, want, test, where)
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
        if isinstance(got, bool) or not isinstance(got, (int, float)) or \
                not np.isclose(got, want, rtol=test.rtol, atol=test.atol):
            return f"{where} is {_fmt(got)}, expected {want:.6g}"
        return None
    return f"{where}: cannot compare a {type(want).__name__}"


def clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def record_problem(record: Record | None) -> str | None:
    """Why a test's record has no usable output (None when it has one)."""
    if record is None:
        return "not run (the process ended before this test)"
    if record.error is not None:
        return clip(f"raised {record.error}")
    unreadable = contains_unreadable(record.outputs)
    return f"malformed output (a number of {unreadable.digits} digits)" if unreadable else None


def compare(got: Any, want: Any, test: HiddenTest) -> str | None:
    """`difference`, and a mismatch message where comparing itself fails (a number too large for a float)."""
    try:
        return difference(got, want, test)
    except Exception as e:
        return clip(f"output cannot be compared with the solution's ({type(e).__name__}: {e})")


def forbidden_uses(stream: Stream, assignment: Assignment) -> dict[str, list[str]]:
    """{question: what its answers ran that it may not} from the uses the tests reported.

    A use counts against the question of the test it happened in when that question forbids
    it; otherwise against the questions that forbid it (an answer computing another question's
    result with the library: "(called in q1_identity)"). A removed tracer counts against its test."""
    question = {t.name: t.question for t in assignment.tests}
    found: dict[str, list[str]] = {}
    for test, name in stream.uses:
        own = question.get(test)
        if name == TAMPERED or name in assignment.forbidden.get(own, []):
            targets, label = [own], name
        else:
            targets = [q for q, names in assignment.forbidden.items() if name in names]
            label = f"{name} (called in {test})"
        for q in targets:
            if q is not None and label not in found.setdefault(q, []):
                found[q].append(label)
    return found


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
    not_carried: list[str] = field(default_factory=list)  # what of the notebook did not reach the tests

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
                              memory_peak_mb=child.memory_peak_mb, not_carried=child.stream.not_carried)
    flagged = {} if child.status == "invalid" else forbidden_uses(child.stream, assignment)
    for q, labels in flagged.items():
        result.flags += [f"{q}: {label[:200]}" for label in labels[:10]]
    for test in assignment.tests:
        record = child.probes.get(test.name)
        problem = record_problem(record)
        if child.status == "invalid":
            problem = "not graded: something other than the grader wrote into its results channel (see the reason)"
        elif problem is None:
            problem = compare(record.outputs, reference[test.name], test)
        if test.question in flagged and child.status != "invalid":
            problem = clip(f"not graded: the answers call {', '.join(flagged[test.question])}, which this "
                           f"question may not use (the assignment forbids "
                           f"{', '.join(assignment.forbidden.get(test.question, []))})")
        if problem and child.status not in ("ok", "invalid") and record is None:
            problem = f"not run: {child.status} ({child.reason})"
        ok = problem is None
        result.tests.append(TestResult(test.name, test.question, test.points if ok else 0.0,
                                       test.points, ok, problem or ""))
    return result
