"""Grade a folder of submitted notebooks into a score table, judging in the trusted process.

An assignment folder (the instructor side, `assignment`) holds the solution notebook,
``probes.py`` and ``hidden_tests.py``. The grader picks one seed per test at grading time,
runs the solution and every submission in its own sandbox (`sandbox`), decodes their
outputs as plain data and compares them here (`judge`); `report` writes the table.
The names of the split modules stay importable from here.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..errors import GradingError
from .assignment import Assignment, HiddenTest, load_assignment, test_seeds
from .isolation import MODES, Level, level as isolation_level
from .judge import SubmissionResult, TestResult, difference, forbidden_uses, judge, record_problem
from .notebook import (MAX_NOTEBOOK_BYTES, PLACEHOLDER, answered, code_cells, parse_notebook, read_notebook,
                       written_answers)
from .report import format_table, write_report
from .sandbox import Limits, run_notebook
from .submissions import Entry, scan

__all__ = ["Assignment", "GradingError", "HiddenTest", "MAX_NOTEBOOK_BYTES", "PLACEHOLDER", "SubmissionResult",
           "TestResult", "answered", "code_cells", "difference", "format_table", "grade_folder",
           "judge", "load_assignment", "parse_notebook", "read_notebook", "test_seeds", "write_report", "written_answers"]


def _reference(assignment: Assignment, tests: list[dict], limits: Limits, sandbox: Level) -> dict[str, Any]:
    nb = read_notebook(assignment.solution)
    child = run_notebook(code_cells(nb), assignment.probes_source, tests, limits,
                         forbidden=assignment.forbidden, sandbox=sandbox)
    reference, broken = {}, []
    flagged = forbidden_uses(child.stream, assignment)
    for t in assignment.tests:
        record = child.probes.get(t.name)
        problem = record_problem(record)
        if t.question in flagged:
            problem = f"it calls {', '.join(flagged[t.question])}, which {t.question} may not use"
        if problem:
            broken.append(f"{t.name} ({problem})")
        reference[t.name] = None if record is None else record.outputs
    if broken or child.status != "ok":
        detail = "; ".join(broken[:3]) or child.reason
        raise GradingError(f"the solution {assignment.solution} does not run cleanly in the sandbox: "
                           f"{child.status}: {detail}")
    return reference


def _exposed(folder: Path) -> str:
    """Without a mount namespace a submission reads what others may read: say so when ``folder`` is such."""
    path = folder.resolve()
    chain = [path, *path.parents]
    if all(os.stat(p).st_mode & 0o001 for p in chain[1:]) and os.stat(path).st_mode & 0o005 == 0o005:
        return (f"{folder} is readable by other users and this run has no bubblewrap: a submission can read it "
                f"(chmod -R go-rwx {folder}, or install bubblewrap)")
    return ""


def _not_graded(assignment: Assignment, name: str, status: str, reason: str, message: str) -> SubmissionResult:
    result = SubmissionResult(name, status, reason)
    result.tests = [TestResult(t.name, t.question, 0.0, t.points, False, message) for t in assignment.tests]
    return result


def grade_one(entry: Entry, assignment: Assignment, tests: list[dict], reference: dict[str, Any],
              limits: Limits, sandbox: Level) -> SubmissionResult:
    """One folder entry's result; whatever goes wrong with it is its own row, never the run's end."""
    name = entry.shown
    if entry.data is None:
        return _not_graded(assignment, name, "skipped", entry.skipped, "not graded: skipped")
    try:
        nb = parse_notebook(entry.data, name)
    except GradingError as e:
        return _not_graded(assignment, name, "invalid", str(e), "not graded: invalid notebook")
    try:
        child = run_notebook(code_cells(nb), assignment.probes_source, tests, limits,
                             forbidden=assignment.forbidden, sandbox=sandbox)
        return judge(assignment, child, reference, name, written_answers(nb))
    except Exception as e:  # a grader bug or a machine problem shows in this row and the others go on
        return _not_graded(assignment, name, "error", f"the grader failed on this submission: "
                           f"{type(e).__name__}: {str(e)[:300]}", "not graded: grader error")


def grade_folder(submissions: str | Path, assignment_dir: str | Path, limits: Limits | None = None,
                 jobs: int = 2, seed: int | None = None, sandbox: str = "auto",
                 on_start: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Grade every entry of ``submissions`` (a row each); returns the report (see `write_report`).

    One submission's failure (invalid notebook, crash, timeout, memory, a link, an odd name)
    scores it 0 where it failed and does not stop the others. ``sandbox``: auto (the best
    isolation here), bwrap (required), rlimits (the fallback); ``on_start`` gets the
    isolation line once, before the first submission runs.
    """
    submissions = Path(submissions)
    try:
        found = submissions.exists()
    except OSError as e:
        raise GradingError(f"cannot read the submissions folder {submissions}: {e.strerror}") from None
    if not found:
        raise GradingError(f"submissions folder {submissions} not found")
    if not submissions.is_dir():
        raise GradingError(f"{submissions} is not a folder: give the folder of submitted .ipynb files")
    assignment = load_assignment(assignment_dir)
    entries = scan(submissions, assignment.solution)
    if not any(e.name.lower().endswith(".ipynb") for e in entries):
        raise GradingError(f"no .ipynb files in {submissions}")
    if sandbox not in MODES:
        raise GradingError(f"unknown sandbox {sandbox!r}: use one of {', '.join(MODES)}")
    lvl = isolation_level(sandbox)
    warnings = [] if lvl.bwrap else [w for w in (_exposed(assignment.folder), _exposed(submissions)) if w]
    if on_start:
        on_start(lvl.describe())
        for w in warnings:
            on_start(f"warning: {w}")
    limits = limits or Limits()
    seed = secrets.randbits(32) if seed is None else seed
    tests = test_seeds(assignment, seed)
    reference = _reference(assignment, tests, limits, lvl)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda e: grade_one(e, assignment, tests, reference, limits, lvl), entries))
    return {
        "assignment": assignment.name,
        "max_points": assignment.max_points,
        "questions": assignment.questions,
        "isolation": lvl.describe(),
        "isolation_level": lvl.name,
        "limits": asdict(limits),
        "forbidden": assignment.forbidden,
        "warnings": warnings,
        "written_answers": "graded by hand: the table says how many were answered; the JSON has the text",
        "submissions": [_row_details(r, assignment) for r in results],
    }


def _row_details(r: SubmissionResult, assignment: Assignment) -> dict[str, Any]:
    per_q = {q: sum(t.points for t in r.tests if t.question == q) for q in assignment.questions}
    return {
        "submission": r.submission,
        "status": r.status,
        "reason": r.reason,
        "points": r.points,
        "max_points": assignment.max_points,
        "percent": round(100 * r.points / assignment.max_points, 1),
        "questions": per_q,
        "failed": r.failed,
        "written_answered": sum(answered(a) for a in r.written),
        "written_total": len(r.written),
        "written": r.written,
        "cell_errors": r.cell_errors,
        "seconds": r.seconds,
        "cpu_seconds": r.cpu_seconds,
        "memory_peak_mb": r.memory_peak_mb,
        "flags": r.flags,
        "not_carried": r.not_carried,
        "tests": [asdict(t) for t in r.tests],
    }
