"""Course assignments graded by tests: student versions from solutions, and a sandboxed grader.

- `assign.make_student_version`: a solution notebook (otter-grader's assign format) → the
  student notebook with its visible checks (``grader.check("q1")``);
- `grade.grade_folder`: a folder of submitted notebooks → a score table (`report`: CSV and
  JSON), one row per entry of the folder (`submissions`, `notebook`), each submission run in
  its own sandbox (`sandbox`: bubblewrap namespaces and a cgroup where the machine allows,
  `isolation` says which; an own uid and rlimits otherwise), what comes back read by one
  strict reader (`records`), the hidden tests of the `assignment` judged in the trusted
  grader process (`judge`);
- in the sandbox, a clean process (`child`) that never runs submitted code: the cells run in
  a fork of it (`cells`) and send their definitions back as data (`carry`, `carry_load`),
  each test runs in a fork of its own (`tests_run`), none may trace another (`confine`);
- `integrity`: the library code a question's answer may not call, traced in the sandbox;
- `checks`: the visible checks of the resnet_basics assignment, with messages that say
  what is wrong.
"""

from ..errors import GradingError
from .assignment import HiddenTest
from .grade import grade_folder

__all__ = ["GradingError", "HiddenTest", "grade_folder"]
