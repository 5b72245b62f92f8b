"""Student versions from solution notebooks, with otter-grader's ``otter assign``.

The solution notebook (instructor side) is in otter's assign format: raw cells
``# BEGIN QUESTION`` / ``# BEGIN SOLUTION`` / ``# BEGIN TESTS`` …, solution lines between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` comments. ``otter assign`` replaces those with
``...``, adds ``grader = otter.Notebook(...)`` and a ``grader.check("qN")`` cell after each
question, and embeds the visible tests in the notebook's metadata. We keep only the student
notebook: hidden tests live in the instructor folder (``probes.py`` + ``hidden_tests.py``)
and are run by our sandboxed grader, not by otter.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

from ..errors import GradingError
from .notebook import read_notebook


def default_student_dir(instructor_dir: Path) -> Path:
    """``…/instructor/NAME`` → ``…/student/NAME``."""
    if instructor_dir.parent.name != "instructor":
        raise GradingError(f"{instructor_dir} is not under an 'instructor' folder: give --out STUDENT_DIR")
    return instructor_dir.parent.parent / "student" / instructor_dir.name


def make_student_version(instructor_dir: str | Path, out: str | Path | None = None) -> Path:
    """Run ``otter assign`` on ``<instructor_dir>/<name>.ipynb``; write ``<out>/<name>.ipynb``."""
    instructor_dir = Path(instructor_dir)
    solution = instructor_dir / f"{instructor_dir.name}.ipynb"
    if not solution.is_file():
        raise GradingError(f"solution notebook {solution} not found")
    read_notebook(solution)  # a clear error before otter's own
    out = Path(out) if out else default_student_dir(instructor_dir)
    from otter.assign import main as otter_assign

    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                otter_assign(str(solution), str(dist), no_run_tests=True)
        except Exception as e:
            raise GradingError(f"otter assign failed on {solution}: {type(e).__name__}: {e}") from None
        produced = dist / "student" / solution.name
        if not produced.is_file():
            raise GradingError(f"otter assign made no student notebook from {solution}")
        out.mkdir(parents=True, exist_ok=True)
        target = out / solution.name
        shutil.copyfile(produced, target)
    return target
