"""Course assignments: student versions, visible checks, and the sandboxed grader.

One grading run (module fixture) grades, side by side: the solution, the untouched student
notebook, four planted wrong implementations, four planted malicious submissions and a
file that is not a notebook. Every score and failed test is asserted on it. It runs the
fallback isolation (rlimits and an own uid, no bubblewrap, no cgroup: ``sandbox="rlimits"``),
so the fallback grades the same; tests/test_grading_attacks.py runs the full sandbox.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from resnet_explorer.cli import main
from resnet_explorer.grading import checks
from resnet_explorer.grading.grade import code_cells, grade_folder, load_assignment, write_report
from resnet_explorer.grading.sandbox import Limits, read_capped

pytestmark = pytest.mark.slow  # the sandboxed grading runs; the fast part: pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
STUDENT = ROOT / "assignments" / "student" / "resnet_basics" / "resnet_basics.ipynb"
MAX = 27

# planted bugs: (cell prefix, (old line, new line(s)), ...)
WRONG = {
    "wrong_relu_before_add": ("class BasicBlock", ("        return F.relu(out + self.shortcut(x))",
                                                   "        return F.relu(out) + self.shortcut(x)")),
    "wrong_shortcut_stride": ("class ShortcutA", ("        x = x[:, :, :: self.stride, :: self.stride]", "")),
    "wrong_flops_bias": ("def conv_macs", (
        "    return kh * kw * (conv.in_channels // conv.groups) * conv.out_channels * out_h * out_w",
        "    bias = conv.out_channels * out_h * out_w if conv.bias is not None else 0\n"
        "    return kh * kw * (conv.in_channels // conv.groups) * conv.out_channels * out_h * out_w + bias")),
    "wrong_hook_after_relu": ("def layer_responses",
                              ("                found[name] = response_std(output)",
                               "                found[name] = output  # kept, measured after the forward pass"),
                              ("    return found\n", "    return {k: response_std(v) for k, v in found.items()}\n")),
}
WRONG_FAILS = {
    "wrong_relu_before_add": {"q2_identity_block", "q2_downsample_block"},
    "wrong_shortcut_stride": {"q1_downsample", "q1_odd_size", "q2_downsample_block"},
    "wrong_flops_bias": {"q4_conv_with_bias", "q5_biased_net"},
    "wrong_hook_after_relu": {"q6_plain_net", "q6_residual_net"},
}


# q1's shortcut, slow only in the hidden tests: many small calls, each traced, past the test's limit
SLOW_IN_TESTS = """
import sys as _sys
_forward = ShortcutA.forward
def _tiny(i):
    return i
def _slow_forward(self, x):
    frame = _sys._getframe()
    while frame is not None and not frame.f_code.co_name.startswith("q1_"):
        frame = frame.f_back
    while frame is not None:
        _tiny(1)
    return _forward(self, x)
ShortcutA.forward = _slow_forward
"""


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _patch(nb: dict, prefix: str, *edits: tuple[str, str]) -> dict:
    """A copy of ``nb`` with each (old, new) replacement made in the code cell starting with ``prefix``."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(prefix))
    src = "".join(cell["source"])
    for old, new in edits:
        assert old in src, f"{old!r} not in the {prefix} cell"
        src = src.replace(old, new)
    cell["source"] = src
    return nb


def _insert(nb: dict, source: str, after: str = "import torch") -> dict:
    nb = copy.deepcopy(nb)
    i = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "".join(c["source"]).startswith(after))
    nb["cells"].insert(i + 1, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source})
    return nb


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grading")
    instructor = tmp / "instructor" / "resnet_basics"  # as a teacher keeps it: chmod 700
    shutil.copytree(INSTRUCTOR, instructor)
    os.chmod(tmp / "instructor", 0o700)
    subs = tmp / "submissions"
    subs.mkdir(mode=0o700)
    solution = _nb(instructor / "resnet_basics.ipynb")
    student = _nb(STUDENT)
    nbs = {"solution": solution, "student": student}
    for name, planted in WRONG.items():
        nbs[name] = _patch(solution, *planted)
    nbs["malicious_loop"] = _insert(solution, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass")
    nbs["malicious_loop_in_function"] = _patch(solution, "def net_macs", ("    total = 0\n", "    total = 0\n    while True:\n        pass\n"))
    nbs["malicious_memory"] = _insert(
        _patch(solution, "def layer_responses", ("    found = {}\n",
               "    found = {}\n    hog = []\n    while True:\n        hog.append(bytearray(256 * 2**20))\n")),
        "huge = torch.empty(2**40)  # 4 TB at once")
    grade_py = ROOT / "resnet_explorer" / "grading" / "grade.py"
    scores = tmp / "scores.csv"
    scores.write_text("untouched\n")
    watched = [instructor / "hidden_tests.py", instructor / "probes.py", instructor / "resnet_basics.ipynb", grade_py, scores]
    tamper = f'''
import os, signal, json, numpy, torch
stolen = None
for path in {[str(p) for p in watched]!r}:
    try:
        with open(path, "w") as f:
            f.write("TESTS = []  # all pass\\n")
    except OSError:
        pass
try:  # steal the solution: exec its cells here
    for cell in json.load(open({str(instructor / "resnet_basics.ipynb")!r}))["cells"]:
        if cell["cell_type"] == "code" and "DEPTHS" not in "".join(cell["source"]):
            exec("".join(cell["source"]))
    stolen = True
except OSError:
    pass
numpy.allclose = lambda *a, **k: True  # patch the checkers
torch.allclose = lambda *a, **k: True
import resnet_explorer.grading.checks as c, resnet_explorer.grading.grade as g
g.difference = lambda *a, **k: None
for fd in range(1, 12):  # forge results on every descriptor
    for t in ("q1_identity", "q1_downsample", "q4_plain_conv", "q5_resnet18"):
        try:
            os.write(fd, (json.dumps({{"probe": t, "outputs": {{"out": 0, "macs": 0}}}}) + "\\n").encode())
            os.write(fd, b'{{"event": "done"}}\\n')
        except OSError:
            pass
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
'''
    nbs["malicious_tamper"] = _insert(student, tamper)
    nbs["slow_honest_shortcut"] = _insert(solution, SLOW_IN_TESTS, after="class ShortcutA")
    before = {p: _hash(p) for p in watched}
    for name, nb in nbs.items():
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    (subs / "notes.ipynb").write_text("this is not a notebook")
    # malicious_loop_in_function costs cell_s (its visible check) + 3 x probe_s (q5's tests) of
    # CPU in loops; the rest of the notebook ~8 s (2-core CPU): 15 + 15 + 8 leaves it ~22 s of cpu_s
    # (the limits count CPU time, so load does not eat that margin). malicious_loop spins to cpu_s:
    # every second of it is the suite's, so cpu_s is no larger than that margin needs.
    limits = Limits(wall_s=300, cpu_s=60, memory_mb=5000, cell_s=15, probe_s=5)
    report = grade_folder(subs, instructor, limits, jobs=2, seed=1234, sandbox="rlimits")
    after = {p: _hash(p) for p in watched}
    csv_path, json_path = write_report(report, tmp / "out" / "scores.csv")
    return {"report": report, "by": {s["submission"].removesuffix(".ipynb"): s for s in report["submissions"]},
            "before": before, "after": after, "csv": csv_path, "json": json_path}


def test_solution_scores_100_and_student_scores_0(graded):
    by = graded["by"]
    assert graded["report"]["isolation_level"] == ("own uid+rlimits" if os.geteuid() == 0 else "rlimits")
    assert graded["report"]["max_points"] == MAX
    assert (by["solution"]["status"], by["solution"]["points"], by["solution"]["percent"]) == ("ok", MAX, 100.0)
    assert by["solution"]["cell_errors"] == []
    assert (by["student"]["status"], by["student"]["points"]) == ("ok", 0)
    assert by["student"]["cell_errors"] == []  # the untouched notebook runs without error
    assert by["student"]["written_answered"] == 0 and by["student"]["written_total"] == 1


@pytest.mark.parametrize("name", sorted(WRONG_FAILS))
def test_planted_bug_fails_exactly_its_tests(graded, name):
    s = graded["by"][name]
    assert s["status"] == "ok"
    assert set(s["failed"]) == WRONG_FAILS[name]
    lost = sum(t["max_points"] for t in s["tests"] if t["name"] in WRONG_FAILS[name])
    assert s["points"] == MAX - lost


def test_endless_loop_is_killed_and_scores_0(graded):
    """A cell that ignores its soft limit uses the submission's whole CPU time: it is killed, and scores 0."""
    s = graded["by"]["malicious_loop"]
    assert s["status"] in ("timeout", "cpu-limit") and s["points"] == 0
    assert not any(t["passed"] for t in s["tests"])


def test_loop_in_one_function_loses_only_that_question(graded):
    s = graded["by"]["malicious_loop_in_function"]
    assert s["status"] == "ok"
    assert set(s["failed"]) == {"q5_cifar_resnet20", "q5_resnet18", "q5_biased_net"}
    assert s["points"] == MAX - 3 and s["questions"]["q5"] == 0
    assert "SoftTimeout" in s["tests"][[t["name"] for t in s["tests"]].index("q5_resnet18")]["message"]


def test_a_slow_honest_answer_fails_on_time_and_is_never_flagged(graded):
    """Past its test limit under the call tracer, an honest answer once showed as removing the tracer."""
    s = graded["by"]["slow_honest_shortcut"]
    assert s["status"] == "ok" and s["flags"] == [], s["flags"]
    assert set(s["failed"]) == {"q1_identity", "q1_downsample", "q1_odd_size"} and s["points"] == MAX - 4
    assert all(t["message"].startswith("raised SoftTimeout") for t in s["tests"] if not t["passed"]), s["tests"]


def test_huge_allocations_fail_only_where_they_happen(graded):
    s = graded["by"]["malicious_memory"]
    assert s["status"] == "ok"
    assert len(s["cell_errors"]) == 1 and "DefaultCPUAllocator" in s["cell_errors"][0]["error"]  # the 4 TB cell
    assert set(s["failed"]) == {"q6_plain_net", "q6_residual_net"}
    assert all("MemoryError" in t["message"] for t in s["tests"] if not t["passed"]), s["tests"]
    assert s["points"] == MAX - 4


def test_tampering_gets_no_points_and_changes_nothing(graded):
    s = graded["by"]["malicious_tamper"]
    assert s["points"] == 0
    assert graded["before"] == graded["after"]  # hidden tests, probes, solution, grader, score file


def test_invalid_notebook_is_recorded_and_does_not_stop_others(graded):
    s = graded["by"]["notes"]
    assert s["status"] == "invalid" and s["points"] == 0 and "not a notebook" in s["reason"]
    assert len(graded["report"]["submissions"]) == 12


def test_score_table_files(graded):
    rows = graded["csv"].read_text().splitlines()
    assert rows[0].split(",")[:5] == ["submission", "status", "points", "max_points", "percent"]
    line = next(r for r in rows if r.startswith("solution.ipynb"))
    assert line.startswith(f"solution.ipynb,ok,{MAX},{MAX},100.0,4,5,5,4,3,4,2,")
    data = json.loads(graded["json"].read_text())
    assert {s["submission"] for s in data["submissions"]} == {f"{k}.ipynb" for k in graded["by"]}


def _solution_namespace(nb: dict, replace: tuple | None = None) -> dict:
    if replace:
        nb = _patch(nb, *replace)
    ns: dict = {"__name__": "__main__"}
    for src in code_cells(nb):
        if "DEPTHS" not in src:
            exec(src, ns)
    return ns


@pytest.mark.parametrize("name,check,hint", [
    ("wrong_relu_before_add", "check_basic_block", "the ReLU applied before the addition"),
    ("wrong_shortcut_stride", "check_shortcut_a", "did you subsample by the stride"),
    ("wrong_flops_bias", "check_conv_macs", "You counted the bias"),
    ("wrong_hook_after_relu", "check_layer_responses", "expected"),
])
def test_visible_checks_say_what_is_wrong(capsys, name, check, hint):
    solution = _nb(INSTRUCTOR / "resnet_basics.ipynb")
    ns = _solution_namespace(solution)
    fn = {"check_basic_block": "BasicBlock", "check_shortcut_a": "ShortcutA", "check_conv_macs": "conv_macs",
          "check_layer_responses": "layer_responses"}[check]
    getattr(checks, check)(ns[fn])
    assert capsys.readouterr().out == ""  # the solution passes silently
    wrong = _solution_namespace(solution, WRONG[name])
    getattr(checks, check)(wrong[fn])
    out = capsys.readouterr().out
    assert out.startswith("✗ ") and hint in out


def test_visible_checks_on_the_untouched_student_notebook(capsys):
    ns = _solution_namespace(_nb(STUDENT))
    checks.check_shortcut_a(ns["ShortcutA"])
    checks.check_net_macs(ns["net_macs"])
    checks.check_degradation(None, (8,))
    out = capsys.readouterr().out.splitlines()
    assert out == ["✗ ShortcutA(16, 16, stride=1) on a 8x8 map returned NoneType, not a tensor",
                   "✗ net_macs(build('cifar-resnet20'), 32) returned None, expected 40,551,040 "
                   "(count(get_spec('cifar-resnet20')).macs).",
                   "✗ results should be a dict {'cifar-plain8': error, …}, got NoneType"]


def test_assign_regenerates_the_committed_student_notebook(tmp_path):
    assert main(["assign", str(INSTRUCTOR), "--out", str(tmp_path)]) == 0
    made, committed = _nb(tmp_path / "resnet_basics.ipynb"), _nb(STUDENT)
    strip = lambda nb: [(c["cell_type"], "".join(c["source"]), c.get("metadata")) for c in nb["cells"]]
    assert strip(made) == strip(committed)
    assert made["metadata"]["otter"] == committed["metadata"]["otter"]
    text = STUDENT.read_text()
    assert "x[:, :, :: self.stride" not in text and "in_features * module.out_features" not in text
    assert sum("grader.check(" in "".join(c["source"]) for c in committed["cells"] if c["cell_type"] == "code") == 7
    assert all(not c.get("outputs") for c in committed["cells"] if c["cell_type"] == "code")
    hidden = {t.name for t in load_assignment(INSTRUCTOR).tests}
    assert not any(h in text for h in hidden)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nope"), "--assignment", str(INSTRUCTOR)]) == 2
    assert capsys.readouterr().err.strip() == f"resnet-explorer: error: submissions folder {tmp_path / 'nope'} not found"
    (tmp_path / "a.txt").write_text("x")
    assert main(["grade", str(tmp_path), "--assignment", str(INSTRUCTOR)]) == 2
    assert capsys.readouterr().err.strip() == f"resnet-explorer: error: no .ipynb files in {tmp_path}"
    assert main(["grade", str(tmp_path / "a.txt"), "--assignment", str(INSTRUCTOR)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "x.ipynb").write_text("{}")
    assert main(["grade", str(tmp_path), "--assignment", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path} is not an assignment folder: {tmp_path.name}.ipynb is missing" in err
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json")
    assert main(["assign", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / f"{tmp_path.name}.ipynb").write_text("not json")
    assert main(["assign", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"resnet-explorer: error: {tmp_path.name}.ipynb is not a notebook (not JSON)"
    assert not (tmp_path / "o").exists()


def test_a_long_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"x" * 5000 + b"MemoryError: out of memory\n")
    with open(log, "rb") as f:
        assert read_capped(f, 100) == b"x" * 100
        tail = read_capped(f, 100, from_end=True)
        assert len(tail) == 100 and tail.endswith(b"MemoryError: out of memory\n")
        assert read_capped(f, 10**6, from_end=True) == log.read_bytes()
