"""Grade a folder of submitted notebooks into a score table, judging in the trusted process.

An assignment folder (the instructor side, `assignment`) holds the solution notebook,
``probes.py`` and ``hidden_tests.py``. The grader picks one seed per test at grading time,
runs the solution and every submission in its own sandbox (`sandbox`), decodes their
outputs as plain data and compares them here (`judge`); `report` writes the table.
The names of the split modules stay importable from here.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import GradingError
from .assignment import Assignment, HiddenTest, load_assignment, test_seeds
from .judge import SubmissionResult, TestResult, decode, difference, judge, _outputs
from .notebook import MAX_NOTEBOOK_BYTES, PLACEHOLDER, answered, code_cells, read_notebook, written_answers
from .report import format_table, write_report
from .sandbox import Limits, isolation, run_notebook

__all__ = ["Assignment", "GradingError", "HiddenTest", "MAX_NOTEBOOK_BYTES", "PLACEHOLDER", "SubmissionResult",
           "TestResult", "answered", "code_cells", "decode", "difference", "format_table", "grade_folder",
           "judge", "load_assignment", "read_notebook", "test_seeds", "write_report", "written_answers"]


def _reference(assignment: Assignment, tests: list[dict], limits: Limits) -> dict[str, Any]:
    nb = read_notebook(assignment.solution)
    child = run_notebook(code_cells(nb), assignment.probes_source, tests, limits)
    reference, broken = {}, []
    for t in assignment.tests:
        value, problem = _outputs(child.probes.get(t.name))
        if problem:
            broken.append(f"{t.name} ({problem})")
        reference[t.name] = value
    if broken or child.status != "ok":
        detail = "; ".join(broken[:3]) or child.reason
        raise GradingError(f"the solution {assignment.solution} does not run cleanly in the sandbox: "
                           f"{child.status}: {detail}")
    return reference


def grade_folder(submissions: str | Path, assignment_dir: str | Path, limits: Limits | None = None,
                 jobs: int = 2, seed: int | None = None) -> dict[str, Any]:
    """Grade every ``*.ipynb`` of ``submissions``; returns the report (see `write_report`).

    One submission's failure (invalid notebook, crash, timeout, memory) scores it 0 where
    it failed and does not stop the others.
    """
    submissions = Path(submissions)
    if not submissions.exists():
        raise GradingError(f"submissions folder {submissions} not found")
    if not submissions.is_dir():
        raise GradingError(f"{submissions} is not a folder: give the folder of submitted .ipynb files")
    paths = sorted(p for p in submissions.iterdir() if p.suffix == ".ipynb" and p.is_file())
    if not paths:
        raise GradingError(f"no .ipynb files in {submissions}")
    assignment = load_assignment(assignment_dir)
    limits = limits or Limits()
    seed = secrets.randbits(32) if seed is None else seed
    tests = test_seeds(assignment, seed)
    reference = _reference(assignment, tests, limits)

    def one(path: Path) -> SubmissionResult:
        try:
            nb = read_notebook(path)
        except GradingError as e:
            result = SubmissionResult(path.name, "invalid", str(e))
            result.tests = [TestResult(t.name, t.question, 0.0, t.points, False, "not graded: invalid notebook")
                            for t in assignment.tests]
            return result
        child = run_notebook(code_cells(nb), assignment.probes_source, tests, limits)
        return judge(assignment, child, reference, path.name, written_answers(nb))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, paths))
    return {
        "assignment": assignment.name,
        "max_points": assignment.max_points,
        "questions": assignment.questions,
        "isolation": isolation(),
        "limits": asdict(limits),
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
        "tests": [asdict(t) for t in r.tests],
    }
