"""The grader's parts on hostile input, without running a sandbox (fast).

Each defence of the trusted parent is tried with its attack: records and notebooks with
huge numbers or malformed fields, odd file names and links in the submissions folder,
formula cells, planted output links, forged records, delegated answers. The defences of the
sandboxed side that can be tried without a sandbox are in tests/test_grading_child.py.
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
from resnet_explorer.grading.records import Violation, parse_line, read_stream
from resnet_explorer.grading.report import csv_safe, format_table, write_report
from resnet_explorer.grading.sandbox import ChildResult, Ending, Limits, child_status
from resnet_explorer.grading.submissions import scan, shown
from resnet_explorer import model as ref

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
SOLUTION = INSTRUCTOR / "resnet_basics.ipynb"


# -- records from the child: one strict reader --------------------------------------------------
TESTS3 = ["q4_plain_conv", "q7_experiment", "q1_identity"]


def _lines(*objs) -> bytes:
    return b"".join((o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n" for o in objs)


START, DONE = {"event": "start", "uid": 5}, {"event": "done"}
CELLS = {"event": "cells", "errors": [], "ended": None, "not_carried": []}


def _stream(*middle, cells=CELLS, end=(DONE,)) -> bytes:
    return _lines(START, cells, *middle, *end)


def _good_records():
    return [{"probe": "q4_plain_conv", "outputs": {"macs": 100}},
            {"use": "resnet_explorer.count", "probe": "q7_experiment"},
            {"probe": "q7_experiment", "error": "RuntimeError: no"},
            {"probe": "q1_identity", "outputs": {"out": {"__array__": "<f8", "shape": [2], "data": "AAAAAAAA8D8AAAAAAAAAQA=="},
                                                 "n": {"__float__": "nan"}, "big": {"__bigint__": 5001}}}]


def test_a_well_formed_report_is_read_and_a_cut_last_line_ignored():
    s = read_stream(_stream(*_good_records()) + b'{"event": "do', TESTS3, 3)
    assert s.violation == "" and s.done and s.uses == [("q7_experiment", "resnet_explorer.count")]
    assert s.records["q4_plain_conv"].outputs == {"macs": 100} and s.records["q7_experiment"].error == "RuntimeError: no"
    out = s.records["q1_identity"].outputs
    assert out["out"].tolist() == [1.0, 2.0] and np.isnan(out["n"]) and repr(out["big"]) == "<a number of 5001 digits>"


BIG = "9" * 500
FORGED = [  # (line, what the reason says): each is the whole row's violation
    (b'{"event": "cells", "errors": [{"cell": ' + BIG.encode() + b', "error": "x"}], "ended": null, "not_carried": []}',
     "a number of 500 digits"),  # the cells event forged with a 500-digit cell number
    (b'{"event": "cells", "errors": [{"cell": NaN, "error": "x"}], "ended": null, "not_carried": []}', "NaN"),
    (b'{"probe": "q4_plain_conv", "outputs": {"macs": Infinity}}', "Infinity"),
    (b'{"probe": "q4_plain_conv", "outputs": {"macs": 1e999}}', "not finite"),
    (b'{"probe": "q4_plain_conv", "probe": "q1_identity", "outputs": 1}', "a key twice"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"probe": "q1_identity", "outputs": 1}', "out of order"),  # a later test's record first
    (b'{"probe": "q4_plain_conv", "outputs": {"__array__": "<f8", "shape": [1000000000000], "data": ""}}', "array"),
    (b'{"probe": "q4_plain_conv", "outputs": {"__pickle__": "x"}}', "unknown tag"),
    (b'{"probe": "q4_plain_conv", "outputs": 1, "uses": []}', "keys"),
    (b'{"event": "done"}', "the end after 0 of 3 tests"),
]


@pytest.mark.parametrize("line,why", FORGED)
def test_a_line_the_child_does_not_write_makes_the_row_invalid(line, why):
    s = read_stream(_stream(line, *_good_records()), TESTS3, 3)
    assert s.violation.startswith("line 3 of its results: ") and why in s.violation, s.violation
    status, reason = child_status(s, Ending(0), Limits())
    r = judge(_assignment(None), ChildResult(status, s, reason),
              {"q4_plain_conv": {"macs": 100}, "q7_experiment": {"x": 1}, "q1_identity": {"out": 1}}, "x", [])
    assert r.status == "invalid" and r.points == 0 and "did not write" in r.reason


def test_a_forged_cells_event_after_the_real_one_is_caught():
    """The attack of a probe wrapper writing a cells event with a 500-digit cell after the real event."""
    forged = {"event": "cells", "errors": [{"cell": 1, "error": "x"}], "ended": None, "not_carried": []}
    s = read_stream(_stream(forged, *_good_records()), TESTS3, 3)
    assert s.violation == "line 3 of its results: a cells event out of order ('q4_plain_conv' was due)"
    assert parse_line(json.dumps({"a": [1.5, -2, "x", None, True]}).encode()) == {"a": [1.5, -2, "x", None, True]}
    with pytest.raises(Violation, match="a number of 401 digits"):
        parse_line(b'{"a": ' + b"1" * 401 + b"}")


def _tests(*names: str) -> list[dict]:
    return [{"name": n, "seed": 1, "question": n[:2]} for n in names]


def test_the_status_says_how_the_child_ended():
    limits = Limits()
    whole = read_stream(_stream(*_good_records()), TESTS3, 3)
    assert child_status(whole, Ending(0), limits) == ("ok", "")
    assert child_status(whole, Ending(137, via_bwrap=True), limits)[0] == "crashed"  # done, but killed
    cut = read_stream(_stream(*_good_records()[:2], end=()), TESTS3, 3)
    assert child_status(cut, Ending(0), limits) == ("exited-early", "the process exited (code 0) without reporting every test")
    assert child_status(cut, Ending(137, via_bwrap=True, ooms=1), limits) == \
        ("memory-limit", "killed by the memory limit (6144 MB for all its processes together)")
    assert child_status(cut, Ending(-signal.SIGXCPU), limits)[0] == "cpu-limit"
    ended = dict(CELLS, ended={"after": 2, "code": 0})  # a cell called os._exit(0): the later cells did not run
    s = read_stream(_stream(*_good_records(), cells=ended), TESTS3, 3)
    assert child_status(s, Ending(0), limits) == ("exited-early", "the cells' process exited (code 0) in cell 3 "
                                                  "(the later cells did not run; the tests ran on what the cells before it defined)")
    killed = dict(CELLS, ended={"after": 0, "signal": 11})
    s = read_stream(_stream(*_good_records(), cells=killed), TESTS3, 3)
    assert child_status(s, Ending(0), limits)[0] == "crashed" and "SIGSEGV in cell 1" in child_status(s, Ending(0), limits)[1]


# -- judging -----------------------------------------------------------------------------------
def _assignment(tmp_path: Path, forbidden: dict | None = None):
    a = load_assignment(INSTRUCTOR)
    a.tests = [HiddenTest("q4_plain_conv", "q4", 1), HiddenTest("q7_experiment", "q7", 2),
               HiddenTest("q1_identity", "q1", 1)]
    a.forbidden = forbidden if forbidden is not None else {"q1": ["resnet_explorer.model.ShortcutA"]}
    return a


def _child(*records, status="ok") -> ChildResult:
    return ChildResult(status, read_stream(_stream(*records), TESTS3, 3))


def test_judging_huge_or_malformed_outputs_fails_only_that_test(tmp_path):
    a = _assignment(tmp_path)
    out = np.ones((2, 2))
    reference = {"q4_plain_conv": {"macs": 100}, "q7_experiment": {"results": {"cifar-plain8": 0.5}},
                 "q1_identity": {"out": out}}
    r = judge(a, _child({"probe": "q4_plain_conv", "outputs": {"macs": {"__bigint__": 500}}},
                        {"probe": "q7_experiment", "outputs": {"results": {"cifar-plain8": int("9" * 399)}}},
                        {"probe": "q1_identity", "outputs": {"out": {"__float__": "nan"}}}), reference, "x.ipynb", [])
    msgs = {t.name: t.message for t in r.tests}
    assert r.points == 0 and r.status == "ok"
    assert msgs["q4_plain_conv"] == "malformed output (a number of 500 digits)"
    assert msgs["q7_experiment"].startswith("output cannot be compared with the solution's (OverflowError")
    assert msgs["q1_identity"] == "output['out'] should be a tensor, got float"


def test_forbidden_calls_score_nothing_and_count_against_the_question_that_forbids_them(tmp_path):
    a = _assignment(tmp_path, {"q1": ["resnet_explorer.model.ShortcutA"], "q4": ["resnet_explorer.count"]})
    reference = {"q4_plain_conv": {"macs": 1}, "q7_experiment": {"x": 1}, "q1_identity": {"out": 1}}
    good = [{"probe": "q4_plain_conv", "outputs": {"macs": 1}}, {"probe": "q7_experiment", "outputs": {"x": 1}}]
    r = judge(a, _child(*good, {"probe": "q1_identity", "outputs": {"out": 1}}), reference, "a", [])
    assert r.points == 4 and r.flags == []
    r = judge(a, _child(*good, {"use": "resnet_explorer.model.ShortcutA", "probe": "q1_identity"},
                        {"probe": "q1_identity", "outputs": {"out": 1}}), reference, "a", [])
    assert r.points == 3 and r.flags == ["q1: resnet_explorer.model.ShortcutA"]
    assert "call resnet_explorer.model.ShortcutA" in r.tests[2].message
    # the library's count called while q7's test ran: computing q4's answer elsewhere is q4's flag
    r = judge(a, _child(good[0], {"use": "resnet_explorer.count", "probe": "q7_experiment"}, good[1],
                        {"probe": "q1_identity", "outputs": {"out": 1}}), reference, "a", [])
    assert r.points == 3 and r.flags == ["q4: resnet_explorer.count (called in q7_experiment)"]
    r = judge(a, _child(*good, {"use": "(the call tracer was removed while the probe ran)", "probe": "q1_identity"},
                        {"probe": "q1_identity", "outputs": {"out": 1}}), reference, "a", [])
    assert r.points == 3 and r.flags == ["q1: (the call tracer was removed while the probe ran)"]


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


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_the_report_is_strict_json_and_written_whatever_a_row_holds(tmp_path, capsys):
    class TooLong:  # what a forged cells event once left in a row
        pass

    report = _report(["a.ipynb", "b.ipynb", "c.ipynb", "d.ipynb"])
    rows = report["submissions"]
    rows[0]["cell_errors"] = [{"cell": TooLong(), "error": float("nan")}]
    rows[1]["points"], rows[1]["seconds"] = float("nan"), float("inf")
    rows[2]["reason"], rows[2]["tests"] = "bob\udcff", [{"n": 10**5000, "m": -float("inf")}]
    rows[3]["questions"] = {}  # cannot be written as a CSV row at all
    csv_path, json_path = write_report(report, tmp_path / "s.csv")
    data = _strict(json_path.read_text())
    by = {s["submission"]: s for s in data["submissions"]}
    assert list(by) == ["a.ipynb", "b.ipynb", "c.ipynb", "d.ipynb"]
    assert by["a.ipynb"]["status"] == "invalid" and by["a.ipynb"]["cell_errors"][0]["error"] is None
    assert "TooLong" in by["a.ipynb"]["cell_errors"][0]["cell"]
    assert by["b.ipynb"]["status"] == by["d.ipynb"]["status"] == "error"
    assert "could not write this row" in by["b.ipynb"]["reason"]
    assert by["c.ipynb"]["reason"].endswith("\\udcff") and by["c.ipynb"]["tests"][0]["m"] is None
    assert by["c.ipynb"]["tests"][0]["n"].startswith("a number of about 5000 digits")
    assert [r[0] for r in csv.reader(csv_path.open(newline=""))] == ["submission", *by]
    print(format_table(report))
    assert len(capsys.readouterr().out.splitlines()) == 5


def test_names_that_read_alike_get_rows_that_do_not(tmp_path):
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café.ipynb"), unicodedata.normalize("NFD", "café.ipynb")
    for name in (nfc, nfd, unicodedata.normalize("NFD", "thé.ipynb")):
        (tmp_path / name).write_bytes(SOLUTION.read_bytes())
    shown_names = [e.shown for e in scan(tmp_path)]
    read = [unicodedata.normalize("NFC", n) for n in shown_names]
    assert len(set(read)) == 3, shown_names  # as a person reads them: three rows, three names
    assert sorted(read)[:2] == sorted(f"{nfc} [{__import__('hashlib').sha256(n.encode()).hexdigest()[:10]}]"
                                      for n in (nfc, nfd))
    assert "thé.ipynb" in read and all(n == unicodedata.normalize("NFC", n) for n in shown_names)


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
