"""The grader's parts on hostile input, without running a sandbox (fast).

Each defence of the trusted parent is tried with its attack: records and notebooks with
huge numbers or malformed fields, odd file names and links in the submissions folder,
formula cells, planted output links, forged records, delegated answers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_explorer.errors import GradingError
from resnet_explorer.grading import cgroups, checks, integrity
from resnet_explorer.grading.assignment import HiddenTest, load_assignment
from resnet_explorer.grading.grade import grade_one
from resnet_explorer.grading.isolation import bwrap_argv, python_paths
from resnet_explorer.grading.judge import judge
from resnet_explorer.grading.notebook import parse_notebook
from resnet_explorer.grading.report import csv_safe, format_table, write_report
from resnet_explorer.grading.sandbox import ChildResult, Limits, _status, parse_records
from resnet_explorer.grading.submissions import scan, shown
from resnet_explorer import model as ref

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
SOLUTION = INSTRUCTOR / "resnet_basics.ipynb"


# -- records from the child -------------------------------------------------------------------
def test_records_with_huge_numbers_or_garbage_are_skipped_not_raised():
    sys.set_int_max_str_digits(0)
    try:
        huge = json.dumps({"probe": "q4_plain_conv", "outputs": {"macs": 10**5000}})
    finally:
        sys.set_int_max_str_digits(4300)
    raw = b"\n".join([b"not json", b"[1, 2]", b'{"event": 5}', huge.encode(), b"\xff\xfe",
                      b'{"probe": "q1_identity", "outputs": {"out": 1}}',
                      b'{"probe": "q1_identity", "outputs": {"out": 2}}',  # only the first counts
                      b"[" * 100_000, b'{"event": "done"}'])
    probes, cell_errors, events = parse_records(raw)
    assert probes["q1_identity"]["outputs"] == {"out": 1}
    assert repr(probes["q4_plain_conv"]["outputs"]["macs"]) == "<a number of 5001 digits>"
    assert events == ["probe", "probe", "probe", "done"] and cell_errors == []


def _tests(*names: str) -> list[dict]:
    return [{"name": n, "seed": 1, "question": n[:2]} for n in names]


def test_a_forged_done_is_not_ok():
    limits = Limits()
    probes = {"q1_identity": {}}
    # the submission wrote "done" and exited 0 before the probes ran
    assert _status(0, True, ["start", "done"], {}, _tests("q1_identity"), limits, False, False, 0, 1.0, "")[0] \
        == "exited-early"
    # a forged "done" in the middle, then the real end: ok
    assert _status(0, True, ["start", "done", "probe", "done"], probes, _tests("q1_identity"), limits,
                   False, False, 0, 1.0, "")[0] == "ok"
    # "done" but killed: not ok
    assert _status(137, True, ["start", "probe", "done"], probes, _tests("q1_identity"), limits,
                   False, False, 0, 1.0, "")[0] == "crashed"
    assert _status(137, True, ["start"], {}, _tests("q1_identity"), limits, False, False, 1, 1.0, "") == \
        ("memory-limit", "killed by the memory limit (6144 MB for all its processes together)")
    assert _status(-signal.SIGXCPU, False, ["start"], {}, _tests("q1_identity"), limits, False, False, 0, 1.0,
                   "")[0] == "cpu-limit"


# -- judging -----------------------------------------------------------------------------------
def _assignment(tmp_path: Path, forbidden: dict | None = None):
    a = load_assignment(INSTRUCTOR)
    a.tests = [HiddenTest("q4_plain_conv", "q4", 1), HiddenTest("q7_experiment", "q7", 2),
               HiddenTest("q1_identity", "q1", 1)]
    a.forbidden = forbidden if forbidden is not None else {"q1": ["resnet_explorer.model.ShortcutA"]}
    return a


def test_judging_huge_or_malformed_outputs_fails_only_that_test(tmp_path):
    a = _assignment(tmp_path)
    out = np.ones((2, 2))
    reference = {"q4_plain_conv": {"macs": 100}, "q7_experiment": {"results": {"cifar-plain8": 0.5}},
                 "q1_identity": {"out": out}}
    probes = parse_records(b"\n".join([
        json.dumps({"probe": "q4_plain_conv", "outputs": {"macs": int("9" * 500)}}).encode(),
        json.dumps({"probe": "q7_experiment", "outputs": {"results": {"cifar-plain8": 10**399}}}).encode(),
        json.dumps({"probe": "q1_identity", "uses": [],
                    "outputs": {"out": {"__array__": "<f8", "shape": [10**18, 10**18], "data": ""}}}).encode(),
    ]))[0]
    r = judge(a, ChildResult("ok", probes), reference, "x.ipynb", [])
    msgs = {t.name: t.message for t in r.tests}
    assert r.points == 0
    assert msgs["q4_plain_conv"] == "malformed output (a number of 500 digits)"
    assert msgs["q7_experiment"].startswith("output cannot be compared with the solution's (OverflowError")
    assert msgs["q1_identity"].startswith("malformed output (")


def test_forbidden_calls_and_missing_call_reports_score_nothing(tmp_path):
    a = _assignment(tmp_path)
    reference = {"q4_plain_conv": {"macs": 1}, "q7_experiment": {"x": 1}, "q1_identity": {"out": 1}}
    good = {"q4_plain_conv": {"outputs": {"macs": 1}}, "q7_experiment": {"outputs": {"x": 1}}}
    r = judge(a, ChildResult("ok", {**good, "q1_identity": {"outputs": {"out": 1}, "uses": []}}), reference, "a", [])
    assert r.points == 4 and r.flags == []
    r = judge(a, ChildResult("ok", {**good, "q1_identity": {"outputs": {"out": 1},
                                                             "uses": ["resnet_explorer.model.ShortcutA"]}}),
              reference, "a", [])
    assert r.points == 3 and r.flags == ["q1: resnet_explorer.model.ShortcutA"]
    assert "calls resnet_explorer.model.ShortcutA" in r.tests[2].message
    r = judge(a, ChildResult("ok", {**good, "q1_identity": {"outputs": {"out": 1}}}), reference, "a", [])  # forged
    assert r.points == 3 and "does not say which code it ran" in r.tests[2].message


def test_the_grader_failing_on_one_submission_is_that_rows_error(monkeypatch):
    import resnet_explorer.grading.grade as g

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(g, "run_notebook", boom)
    a = load_assignment(INSTRUCTOR)
    from resnet_explorer.grading.submissions import Entry
    r = grade_one(Entry("x.ipynb", data=SOLUTION.read_bytes()), a, [], {}, Limits(), None)
    assert r.status == "error" and r.points == 0 and "RuntimeError: disk full" in r.reason


# -- notebooks ---------------------------------------------------------------------------------
def _solution() -> dict:
    return json.loads(SOLUTION.read_text())


@pytest.mark.parametrize("edit,reason", [
    (lambda nb: nb["cells"][2].__setitem__("source", [1]), "cells[2].source: [1] is not valid"),
    (lambda nb: nb["cells"][2].__setitem__("metadata", "x"), "cells[2].metadata: 'x' is not of type 'object'"),
    (lambda nb: nb["cells"][2].__setitem__("metadata", {"tags": 5}), "cells[2].metadata.tags: 5 is not of type"),
    (lambda nb: nb.__setitem__("nbformat", 3), "nbformat 3: only nbformat 4 notebooks are graded"),
    (lambda nb: nb["metadata"].__setitem__("x", [[[[[]]]]]), None),  # valid: extra metadata is allowed
])
def test_malformed_notebook_fields_are_invalid_with_the_schema_reason(edit, reason):
    nb = _solution()
    edit(nb)
    data = json.dumps(nb).encode()
    if reason is None:
        assert parse_notebook(data, "s.ipynb")["cells"]
        return
    with pytest.raises(GradingError, match="s.ipynb") as e:
        parse_notebook(data, "s.ipynb")
    assert reason in str(e.value)


def test_a_huge_number_or_deep_nesting_in_a_notebook_is_invalid():
    data = SOLUTION.read_bytes().replace(b'"nbformat_minor": 5', b'"nbformat_minor": ' + b"7" * 5000)
    with pytest.raises(GradingError, match="it holds a number of 5000 digits"):
        parse_notebook(data, "n.ipynb")
    with pytest.raises(GradingError, match="not JSON"):
        parse_notebook(b"[" * 200_000, "n.ipynb")


# -- the submissions folder --------------------------------------------------------------------
def test_every_entry_gets_a_row_and_no_link_is_followed(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "good.ipynb").write_bytes(SOLUTION.read_bytes())
    (subs / "UPPER.IPYNB").write_bytes(b"{}")
    (subs / "dir.ipynb").mkdir()
    (subs / "link.ipynb").symlink_to(SOLUTION)
    (subs / "zero.ipynb").symlink_to("/dev/zero")
    os.mkfifo(subs / "fifo.ipynb")
    os.link(subs / "good.ipynb", subs / "hard.ipynb")
    (subs / "notes.txt").write_text("hi")
    os.symlink("x", os.path.join(os.fsencode(subs), b"bob\xff.ipynb"))
    (subs / "=cmd|' -C calc'!A0.ipynb").write_bytes(b"{}")
    (subs / "evil\n  solution.ipynb  ok  27.ipynb").write_bytes(b"{}")
    own = tmp_path / "solution.ipynb"
    own.write_bytes(SOLUTION.read_bytes())
    os.link(own, subs / "stolen.ipynb")
    by = {e.shown: e for e in scan(subs, own)}
    assert len(by) == 12
    assert by["good.ipynb"].data == SOLUTION.read_bytes() and by["hard.ipynb"].data  # a hard link among students
    assert by["UPPER.IPYNB"].data == b"{}"
    assert by["dir.ipynb"].skipped == "not graded: a folder: not followed; copy the notebook itself into the folder"
    assert by["link.ipynb"].data is None and by["link.ipynb"].skipped.startswith("not graded: a symbolic link to /")
    assert by["zero.ipynb"].skipped.startswith("not graded: a symbolic link to /dev/zero")
    assert by["fifo.ipynb"].skipped.startswith("not graded: a FIFO")
    assert by["notes.txt"].skipped == "not graded: not a notebook (.ipynb)"
    assert by["bob\\xff.ipynb"].data is None
    assert by["evil\\n  solution.ipynb  ok  27.ipynb"].data == b"{}"
    assert by["stolen.ipynb"].skipped == "not graded: this file is the solution notebook itself (a hard link)"


def test_names_are_shown_escaped():
    assert shown("a\nb\tc\x1b[2J\u202e.ipynb") == "a\\nb\\tc\\x1b[2J\\u202e.ipynb"
    assert shown(os.fsdecode(b"bob\xff.ipynb")) == "bob\\xff.ipynb"
    assert shown("back\\slash é.ipynb") == "back\\\\slash é.ipynb"


# -- the score table ---------------------------------------------------------------------------
def _report(names: list[str]) -> dict:
    row = lambda n: {"submission": n, "status": "invalid", "reason": f"{n} is not a notebook\nfake row",
                     "points": 0, "max_points": 27, "percent": 0.0, "questions": {"q1": 0},
                     "failed": ["q1_identity"], "written_answered": 0, "written_total": 1, "flags": []}
    return {"assignment": "a", "max_points": 27, "questions": ["q1"], "isolation": "x",
            "submissions": [row(n) for n in names]}


def test_csv_cells_are_formula_safe_and_the_table_has_one_line_per_row(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+1", "-1", "@SUM(A1)", shown(os.fsdecode(b"b\xff\nx"))]
    csv_path, json_path = write_report(_report(names), tmp_path / "out.csv")
    rows = list(csv.reader(csv_path.open(newline="")))
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-1", "'@SUM(A1)", "b\\xff\\nx"]
    assert all(not c.startswith(("=", "+", "-", "@")) for r in rows[1:] for c in r)
    assert csv_safe(" =x") == " =x" and csv_safe("\t=x") == "'\t=x"
    assert len(format_table(_report(names + ["a\nb"])).splitlines()) == 1 + 6


def test_output_links_planted_in_a_shared_folder_are_replaced_not_followed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = ("scores.csv", "scores.json", "scores.csv.tmp", "scores.json.tmp", ".scores.csv.tmp")
    for name in planted:
        (shared / name).symlink_to(victim)
    csv_path, json_path = write_report(_report(["a.ipynb"]), shared / "scores.csv")
    assert victim.read_text() == "precious\n"
    for p in (csv_path, json_path):
        assert p.is_file() and not p.is_symlink()
    assert json.loads(json_path.read_text())["submissions"][0]["submission"] == "a.ipynb"
    assert sorted(p.name for p in shared.iterdir()) == sorted(planted)  # no temporary file left behind


# -- integrity: the library's answers ----------------------------------------------------------
def test_delegating_to_the_library_is_seen_however_it_is_reached():
    q1 = integrity.resolve(checks.FORBIDDEN["q1"])
    x = torch.zeros(1, 4, 4, 4)

    class Sub(ref.ShortcutA):
        pass

    class Wrap(torch.nn.Module):
        def __init__(self, a, b, s):
            super().__init__()
            self.inner = ref.ShortcutA(a, b, s)

        def forward(self, x):
            return self.inner(x)

    for cls in (ref.ShortcutA, Sub, Wrap):
        assert integrity.uses(q1, lambda: cls(4, 8, 2)(x))[1] == ["resnet_explorer.model.ShortcutA"]
    q5 = integrity.resolve(checks.FORBIDDEN["q5"])
    from resnet_explorer import count, get_spec
    assert integrity.uses(q5, lambda: count(get_spec("cifar-resnet20")).macs)[1] == ["resnet_explorer.count"]

    def flops():
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as c:
            torch.nn.Conv2d(3, 3, 3)(torch.zeros(1, 3, 8, 8))
        return c.get_total_flops()
    assert integrity.uses(q5, flops)[1] == ["torch.utils.flop_counter"]
    # the library's own use of a reference is not the answer's: build() counts its spec
    assert integrity.uses(q5, lambda: ref.build("cifar-resnet20"))[1] == []
    q6 = integrity.resolve(checks.FORBIDDEN["q6"])
    from resnet_explorer.analysis import layer_responses, response_std
    m = ref.build("cifar-resnet8", width=4).eval()
    assert integrity.uses(q6, lambda: layer_responses(m, torch.zeros(1, 3, 32, 32)))[1] == \
        ["resnet_explorer.analysis.layer_responses"]
    assert integrity.uses(q6, lambda: response_std(torch.ones(2, 3, 4, 4)))[1] == []  # allowed: imported in the notebook


def test_removing_the_call_tracer_is_reported():
    q1 = integrity.resolve(checks.FORBIDDEN["q1"])
    assert integrity.uses(q1, lambda: sys.setprofile(None))[1] == ["(the call tracer was removed while the probe ran)"]


def test_visible_checks_refuse_the_librarys_own_answer(capsys):
    checks.check_shortcut_a(ref.ShortcutA)
    out = capsys.readouterr().out
    assert out.startswith("✗ ShortcutA(16, 16, stride=1) on a 8x8 map calls resnet_explorer.model.ShortcutA: "
                          "the assignment asks for your own code here")


def test_the_assignment_states_what_each_question_may_not_call():
    a = load_assignment(INSTRUCTOR)
    assert a.forbidden == checks.FORBIDDEN and set(a.forbidden) <= set(a.questions)
    intro = "".join(_solution()["cells"][1]["source"])
    assert "may not call `resnet_explorer.model.ShortcutA`" in intro and "torch.utils.flop_counter" in intro


def test_a_malformed_forbidden_list_is_one_line(tmp_path):
    folder = tmp_path / "hw"
    folder.mkdir()
    (folder / "hw.ipynb").write_text("{}")
    (folder / "probes.py").write_text("")
    (folder / "hidden_tests.py").write_text("from resnet_explorer.grading import HiddenTest\n"
                                            "TESTS = [HiddenTest('q1_a', 'q1', 1)]\nFORBIDDEN = {'q9': ['x']}\n")
    with pytest.raises(GradingError, match="FORBIDDEN should map questions of TESTS"):
        load_assignment(folder)


# -- the command's limits ----------------------------------------------------------------------
def _grade_args(*extra: str):
    from resnet_explorer.cli import make_parser

    return make_parser().parse_args(["grade", "subs", "--assignment", str(INSTRUCTOR), *extra])


def test_the_default_limits_leave_a_looping_function_only_its_question():
    """A function that never returns costs one cell timeout plus one test timeout per test of its
    question (`net_macs`: its visible check, then q5's three tests); with the command's defaults
    that must leave well over half the CPU budget to the other questions."""
    from resnet_explorer.cli_grading import limits_from_args

    limits = limits_from_args(_grade_args())
    assert (limits.cpu_s, limits.wall_s, limits.cell_s, limits.probe_s) == (300, 600, 60, 20)
    assert limits == Limits()  # one set of defaults: the command's are the library's
    per_question = Counter(t.question for t in load_assignment(INSTRUCTOR).tests)
    assert per_question["q5"] == 3
    worst = limits.cell_s + max(per_question.values()) * limits.probe_s
    assert worst <= limits.cpu_s / 2, (worst, per_question)
    mine = limits_from_args(_grade_args("--timeout", "100", "--cell-timeout", "30", "--test-timeout", "5"))
    assert (mine.cpu_s, mine.wall_s, mine.cell_s, mine.probe_s) == (100, 200, 30, 5)
    short = limits_from_args(_grade_args("--timeout", "60"))  # the soft limits follow a smaller budget
    assert (short.cpu_s, short.wall_s, short.cell_s, short.probe_s) == (60, 120, 12, 4)


@pytest.mark.parametrize("extra, message", [
    (("--test-timeout", "400"), "--test-timeout 400 is not below --timeout 300: one slow cell or test would use "
                                "a submission's whole CPU time; give a smaller --test-timeout or a larger --timeout"),
    (("--timeout", "50", "--cell-timeout", "60"), "--cell-timeout 60 is not below --timeout 50"),
    (("--cell-timeout", "0"), "--cell-timeout 0 is invalid: give a positive number of seconds"),
    (("--test-timeout", "-3"), "--test-timeout -3 is invalid: give a positive number of seconds"),
    (("--timeout", "inf"), "--timeout inf is invalid: give a positive number of seconds"),
    (("--timeout", "0.5"), "--timeout 0.5 is too small: the CPU limit counts whole seconds; give 1 or more"),
    (("--wall-timeout", "nan"), "--wall-timeout nan is invalid: give a positive number of seconds"),
])
def test_soft_limits_over_the_budget_are_one_line(tmp_path, capsys, extra, message):
    from resnet_explorer.cli import main

    (tmp_path / "a.ipynb").write_text("{}")
    assert main(["grade", str(tmp_path), "--assignment", str(INSTRUCTOR), "--out", str(tmp_path / "s.csv"),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resnet-explorer: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "s.csv").exists()


# -- isolation: what the sandbox sees; cgroups -------------------------------------------------
def test_the_sandbox_binds_the_package_not_the_checkout():
    bound = python_paths()
    instructor = str(INSTRUCTOR.resolve())
    assert not any(instructor == p or instructor.startswith(p + os.sep) for p in bound)
    argv = bwrap_argv("bwrap", 2**20, as_root=True)
    sources = {argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind", "--ro-bind-try")}
    assert not any(instructor.startswith(s.rstrip("/") + os.sep) for s in sources if s != "/")
    assert "--unshare-net" in argv and "--unshare-pid" in argv and "--die-with-parent" in argv
    assert "--bind" not in argv  # nothing of the machine is writable inside



@pytest.mark.slow
def test_an_interpreter_under_tmp_stays_visible_under_the_sandboxs_own_tmp(tmp_path, monkeypatch):
    """A venv under /tmp (CI checkouts, pip's test venvs): the sandbox's fresh /tmp must not hide it."""
    import shutil

    from resnet_explorer.grading import isolation

    bwrap = shutil.which("bwrap")
    assert bwrap, "the grading sandbox needs bubblewrap: bash quickstart.sh test installs it"
    assert str(tmp_path).startswith("/tmp/")
    lib = tmp_path / "venv" / "lib"
    lib.mkdir(parents=True)
    (lib / "marker.txt").write_text("seen")
    monkeypatch.setattr(isolation, "python_paths", lambda: (*python_paths(), str(lib)))
    argv = isolation.bwrap_argv(bwrap, 2**20, as_root=os.geteuid() == 0) + ["/bin/cat", str(lib / "marker.txt")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "seen"), r.stderr

MOUNTINFO_V1 = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"""
MOUNTINFO_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"


def test_cgroup_layouts_are_read_from_mountinfo():
    v2, v1 = cgroups.mounts(MOUNTINFO_V1)
    assert v2 == Path("/sys/fs/cgroup/unified") and v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert set(v1) == {"cpu", "cpuacct", "memory", "pids"}
    assert cgroups.mounts(MOUNTINFO_V2) == (Path("/sys/fs/cgroup"), {})
    own = cgroups.own_groups("4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice/x.scope\n")
    assert own == ("/user.slice/x.scope", {"memory": "/process_api/abc", "cpu": "/", "cpuacct": "/"})


def test_a_v2_group_gets_its_limits(tmp_path):
    parent = tmp_path / "cg"
    parent.mkdir()
    group = cgroups.Factory(2, {"v2": parent}).create(512 * 2**20, 64, 1.0)
    d = group.dirs["v2"]
    assert d.parent == parent and d.name.startswith(cgroups.PREFIX)
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "pids.max").read_text() == "64" and (d / "cpu.max").read_text() == "100000 100000"
    assert (d / "cpu.weight").read_text() == "100"
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    (d / "cgroup.procs").write_text("")
    assert group.cpu_seconds() == 2.5 and group.pids() == set()



def test_a_cgroup_that_cannot_be_made_is_one_line(tmp_path):
    from resnet_explorer.errors import GradingError

    parent = tmp_path / "cg"
    parent.mkdir()
    factory = cgroups.Factory(2, {"v2": parent})
    real = cgroups._write

    def refuse(path, text):
        if path.name == "pids.max":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, text)

    cgroups._write, saved = refuse, cgroups._write
    try:
        with pytest.raises(GradingError, match=r"cannot make a cgroup for a submission \(Permission denied: .*pids.max\)"
                                               r": free the cgroup controllers, or grade with --sandbox rlimits"):
            factory.create(512 * 2**20, 64, 1.0)
    finally:
        cgroups._write = saved

def test_the_speed_benchmark_builds_a_class_of_solutions_untouched_and_wrong_notebooks(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import grading_speed
    finally:
        sys.path.pop(0)
    grading_speed.build_folder(tmp_path / "subs", 7)
    names = sorted(p.name for p in (tmp_path / "subs").iterdir())
    assert [n.split("_", 1)[1] for n in names] == ["solution.ipynb", "untouched.ipynb", "wrong.ipynb"] * 2 + \
        ["solution.ipynb"]
    for p in (tmp_path / "subs").iterdir():
        parse_notebook(p.read_bytes(), p.name)
    wrong = json.loads((tmp_path / "subs" / "s02_wrong.ipynb").read_text())
    assert "F.relu(out) + self.shortcut(x)" in "".join("".join(c["source"]) for c in wrong["cells"])
