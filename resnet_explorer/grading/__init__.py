"""Course assignments graded by tests: student versions from solutions, and a sandboxed grader.

- `assign.make_student_version`: a solution notebook (otter-grader's assign format) → the
  student notebook with its visible checks (``grader.check("q1")``);
- `grade.grade_folder`: a folder of submitted notebooks → a score table (CSV and JSON),
  each submission run in its own sandboxed process (`sandbox`), the hidden tests judged in
  the trusted grader process;
- `checks`: the visible checks of the resnet_basics assignment, with messages that say
  what is wrong.
"""

from ..errors import GradingError
from .assignment import HiddenTest
from .grade import grade_folder

__all__ = ["GradingError", "HiddenTest", "grade_folder"]
