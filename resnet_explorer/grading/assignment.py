"""An assignment's instructor folder: the solution notebook, the probes and the hidden tests.

``<folder>/<name>.ipynb`` is the solution, ``probes.py`` says what to ask each notebook (it
is sent into the sandbox and holds no answers) and ``hidden_tests.py`` holds the points and
tolerances (it never leaves the grader's process) and, as ``FORBIDDEN``, the library code
each question's answer may not call ({question: [dotted names]}; see `integrity`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GradingError


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
    forbidden: dict[str, list[str]] = field(default_factory=dict)

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
    forbidden = getattr(module, "FORBIDDEN", {})
    questions = {t.question for t in tests}
    if not isinstance(forbidden, dict) or not all(
            q in questions and isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)
            for q, names in forbidden.items()):
        raise GradingError(f"{folder / 'hidden_tests.py'}: FORBIDDEN should map questions of TESTS "
                           "to lists of dotted names")
    return Assignment(folder.name, folder, solution, (folder / "probes.py").read_text(), tests,
                      {q: list(n) for q, n in forbidden.items()})


def test_seeds(assignment: Assignment, seed: int) -> list[dict]:
    """One seed per test, derived from the run's seed (secret until grading) and the test name."""
    def one(name: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")
    return [{"name": t.name, "seed": one(t.name), "question": t.question} for t in assignment.tests]
