"""Grade a folder of submitted notebooks into a score table, judging in the trusted process.

An assignment folder (the instructor side) holds the solution notebook ``<name>.ipynb``,
``probes.py`` (what to ask each notebook; sent into the sandbox) and ``hidden_tests.py``
(points and tolerances; never leaves this process). The grader picks one seed per test at
grading time, runs the solution and every submission in its own sandbox (`sandbox`),
decodes their outputs as plain data (JSON, arrays from base64 with a whitelisted dtype:
nothing is unpickled) and compares them here.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runs import atomic_write, write_json
from ..errors import GradingError
from .sandbox import ChildResult, Limits, isolation, run_notebook

MAX_NOTEBOOK_BYTES = 20 * 2**20
PLACEHOLDER = "_Type your answer here, replacing this text._"


@dataclass
class HiddenTest:
    """One hidden test: the probe of the same name, its question, points and tolerances."""

    name: str
    question: str
    points: float
    description: str = ""
    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass
class Assignment:
    name: str
    folder: Path
    solution: Path
    probes_source: str
    tests: list[HiddenTest]

    @property
    def questions(self) -> list[str]:
        return list(dict.fromkeys(t.question for t in self.tests))

    @property
    def max_points(self) -> float:
        return sum(t.points for t in self.tests)


def load_assignment(folder: str | Path) -> Assignment:
    """The instructor folder of one assignment: solution notebook, probes.py, hidden_tests.py."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"assignment folder {folder} not found: give the instructor folder "
                           "(e.g. assignments/instructor/resnet_basics)")
    solution = folder / f"{folder.name}.ipynb"
    for path in (solution, folder / "probes.py", folder / "hidden_tests.py"):
        if not path.is_file():
            raise GradingError(f"{folder} is not an assignment folder: {path.name} is missing")
    spec = importlib.util.spec_from_file_location(f"hidden_tests_{folder.name}", folder / "hidden_tests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = list(getattr(module, "TESTS", []))
    if not tests:
        raise GradingError(f"{folder / 'hidden_tests.py'} defines no TESTS")
    return Assignment(folder.name, folder, solution, (folder / "probes.py").read_text(), tests)


# -- notebooks ---------------------------------------------------------------------------------

_OTTER_LINE = re.compile(r"^\s*(import otter\b.*|grader\s*=\s*otter\..*|grader\.check(_all)?\(.*\).*)$")


def read_notebook(path: Path) -> dict:
    """The notebook's JSON, or `GradingError` with what is wrong with it."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise GradingError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB")
    try:
        nb = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise GradingError(f"{path.name} is not a notebook (not JSON)") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise GradingError(f"{path.name} is not a notebook (no cell list)")
    return nb


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def code_cells(nb: dict) -> list[str]:
    """The code cells, without otter's own lines (its init and ``grader.check`` calls)."""
    cells = []
    for cell in nb["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            lines = _source(cell).splitlines()
            cells.append("\n".join("" if _OTTER_LINE.match(l) else l for l in lines))
    return cells


def written_answers(nb: dict) -> list[str]:
    """The text of the written-answer cells (markdown cells tagged ``otter_answer_cell``)."""
    answers = []
    for cell in nb["cells"]:
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            tags = (cell.get("metadata") or {}).get("tags") or []
            if "otter_answer_cell" in tags:
                answers.append(_source(cell).strip())
    return answers


def answered(text: str) -> bool:
    return bool(text) and text != PLACEHOLDER and PLACEHOLDER not in text


# -- decoding and comparing --------------------------------------------------------------------

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
        return None, f"raised {record['error']}"
    try:
        return decode(record.get("outputs")), None
    except (ValueError, TypeError) as e:
        return None, f"malformed output ({e})"


# -- grading -----------------------------------------------------------------------------------

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

    @property
    def points(self) -> float:
        return sum(t.points for t in self.tests)

    @property
    def failed(self) -> list[str]:
        return [t.name for t in self.tests if not t.passed]


def test_seeds(assignment: Assignment, seed: int) -> list[dict]:
    """One seed per test, derived from the run's seed (secret until grading) and the test name."""
    def one(name: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")
    return [{"name": t.name, "seed": one(t.name)} for t in assignment.tests]


def judge(assignment: Assignment, child: ChildResult, reference: dict[str, Any], name: str,
          written: list[str]) -> SubmissionResult:
    result = SubmissionResult(name, child.status, child.reason, cell_errors=child.cell_errors,
                              written=written, seconds=round(child.seconds, 1))
    for test in assignment.tests:
        got, problem = _outputs(child.probes.get(test.name))
        if problem is None:
            problem = difference(got, reference[test.name], test)
        if problem and child.status != "ok" and test.name not in child.probes:
            problem = f"not run: {child.status} ({child.reason})"
        ok = problem is None
        result.tests.append(TestResult(test.name, test.question, test.points if ok else 0.0,
                                       test.points, ok, problem or ""))
    return result


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


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``out`` (.csv): one row per submission; beside it the same stem .json with every detail."""
    out = Path(out)
    csv_path = out if out.suffix == ".csv" else out.with_suffix(".csv")
    json_path = csv_path.with_suffix(".json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    questions = report["questions"]
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["submission", "status", "points", "max_points", "percent", *questions,
                "written_answered", "failed_tests", "reason"])
    for s in report["submissions"]:
        w.writerow([s["submission"], s["status"], f"{s['points']:g}", f"{s['max_points']:g}", s["percent"],
                    *[f"{s['questions'][q]:g}" for q in questions],
                    f"{s['written_answered']}/{s['written_total']}", " ".join(s["failed"]), s["reason"]])
    # atomically, so that an earlier score table is never left half-overwritten
    atomic_write(csv_path, rows.getvalue().encode())
    write_json(json_path, report)
    return csv_path, json_path


def format_table(report: dict[str, Any]) -> str:
    """The score table for the terminal."""
    lines = [f"{report['assignment']}: {len(report['submissions'])} submission(s), "
             f"max {report['max_points']:g} points; isolation: {report['isolation']}"]
    width = max(12, *(len(s["submission"]) for s in report["submissions"]))
    for s in report["submissions"]:
        extra = f"  {s['reason']}" if s["reason"] else ""
        lines.append(f"  {s['submission']:<{width}} {s['status']:<12} {s['points']:>5g} ({s['percent']:5.1f} %)"
                     f"  failed: {len(s['failed'])}{extra}")
    return "\n".join(lines)
