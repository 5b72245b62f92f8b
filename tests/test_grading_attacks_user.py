"""The attack folder of tests/test_grading_attacks.py graded by an ordinary user (slow, sandboxed).

Without root there is no cgroup and no own uid per submission: bubblewrap's namespaces and
rlimits hold each one (a root test drops privileges to a fresh uid first). The same folder
must grade the same: `grade` exits 0, strict JSON, a row per entry, the solutions at 27 (the
slow honest one beside 50 spinners included: its soft limits count its own CPU time, and the
spinners die with the cells that started them), nothing traced, nothing left behind; and the
grader's own files, which its uid could write, stay as they were.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from test_grading_attacks import (STUDENT, build_folder, check_forgeries, check_hostile_values, check_library_answers,
                                  check_odd_entries, check_solutions, check_twin_names, file_hashes, grade_command,
                                  insert_cell, marked_files, marked_processes, notebook, strict_json)

pytestmark = pytest.mark.slow


def _as_user(uid: int, argv: list[str]) -> list[str]:
    """``argv`` run as ``uid`` where this interpreter (often under root's 0700 home) stays reachable."""
    base = os.path.realpath(sys.base_prefix)
    binds = ["--dev-bind", "/", "/"]
    if base.startswith("/root/"):
        binds += ["--tmpfs", "/root"]
        parts = Path(base).parts
        for i in range(2, len(parts)):
            binds += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        binds += ["--ro-bind", base, base]
    return ["bwrap", *binds, "--", "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", *argv]


@pytest.fixture(scope="module")
def as_user():
    tmp = Path(tempfile.mkdtemp(prefix="grading-user-"))  # not under pytest's 0700 base: the user must reach it
    try:
        yield _grade_as_user(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _grade_as_user(tmp: Path) -> dict:
    uid = 60_000 + secrets.randbelow(1000) if os.geteuid() == 0 else os.getuid()
    out = tmp / "out"
    out.mkdir()
    victim = tmp / "victim.txt"
    victim.write_text("precious\n")
    subs, instructor, _ = build_folder(tmp, out, victim)
    grader_file = tmp / "grader_owned.txt"  # the grader's own file: writable by the grader's uid
    grader_file.write_text("mine\n")
    writes = insert_cell(notebook(STUDENT), f"open({str(grader_file)!r}, 'w').write('owned')")
    (subs / "writes_grader_files.ipynb").write_text(json.dumps(writes))
    for p in [tmp, *tmp.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)
    os.chmod(tmp / "instructor", 0o700)
    watched = [instructor, subs, grader_file, victim]
    before = file_hashes(*watched)
    wrap = (lambda argv: _as_user(uid, argv)) if os.geteuid() == 0 else (lambda argv: argv)
    r = grade_command(subs, instructor, out / "scores.csv", wrap, HOME=str(tmp))
    report = strict_json(out / "scores.json") if r.returncode == 0 else {"submissions": []}
    return {"r": r, "uid": uid, "out": out, "before": before, "after": file_hashes(*watched), "entries": len(os.listdir(subs)),
            "by": {s["submission"]: s for s in report["submissions"]}, "report": report,
            "processes": marked_processes(), "files": marked_files()}


def test_an_ordinary_user_grades_with_namespaces_and_a_strict_report(as_user):
    r = as_user["r"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("isolation: bubblewrap+rlimits: private mount/PID/IPC/network namespaces")
    assert len(as_user["by"]) == as_user["entries"] == 37
    assert (as_user["out"] / "scores.csv").stat().st_uid == as_user["uid"]


def test_as_a_user_the_solutions_keep_full_marks(as_user):
    """The slow honest neighbour of 50 spinners, and the notebooks that trace bubblewrap or write their job."""
    check_solutions(as_user["by"])


def test_as_a_user_every_attack_gets_what_it_deserves(as_user):
    by = as_user["by"]
    check_hostile_values(by)
    check_forgeries(by)
    check_library_answers(by)
    check_twin_names(by)
    check_odd_entries(by)
    assert by["a1_cpu_spinners.ipynb"]["status"] == "cpu-limit"
    assert all(by[n]["status"] == "ok" and by[n]["points"] == 0
               for n in ("escapes.ipynb", "leftovers.ipynb", "writes_grader_files.ipynb", "reads_instructor.ipynb"))


def test_as_a_user_nothing_survives_and_the_graders_files_stay(as_user):
    assert as_user["before"] == as_user["after"]  # the grader's own files, though its uid could write them
    assert as_user["processes"] == [] and as_user["files"] == []
