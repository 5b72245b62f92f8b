"""A hostile class: one grading run with many attacks beside correct solutions (slow, sandboxed).

Each attack of issue 16 (and a variant or two) is one notebook, or one odd entry, of a
single submissions folder graded with ``--jobs 2``; the assertions check that the solutions
keep 27/27, that each attack gets its row, that the run finishes, that no file outside the
output folder changes, that no process of a submission outlives the run and that nothing
is left in /tmp, /var/tmp or /dev/shm. The instructor folder is left world-readable, as in
an editable checkout: the sandbox must hide it anyway. A second, smaller run grades as an
ordinary user (a root test drops privileges).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from resnet_explorer.grading import cgroups
from resnet_explorer.grading.grade import grade_folder, write_report
from resnet_explorer.grading.isolation import level
from resnet_explorer.grading.sandbox import Limits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
STUDENT = ROOT / "assignments" / "student" / "resnet_basics" / "resnet_basics.ipynb"
MAX = 27
MARK = f"attack{secrets.token_hex(4)}"
SHARED = ("/tmp", "/var/tmp", "/dev/shm")
LIMITS = dict(wall_s=240, cpu_s=40, memory_mb=1500, address_space_mb=5000, cell_s=60, probe_s=20, file_mb=128)


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _cell(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}


def _insert(nb: dict, source: str) -> dict:
    """``nb`` with a code cell after its imports (it runs before the answers)."""
    nb = copy.deepcopy(nb)
    i = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "import torch" in "".join(c["source"]))
    nb["cells"].insert(i + 1, _cell(source))
    return nb


def _append(nb: dict, source: str) -> dict:
    """``nb`` with a code cell at the end (it overrides the answers)."""
    nb = copy.deepcopy(nb)
    nb["cells"].append(_cell(source))
    return nb


def _patch(nb: dict, prefix: str, old: str, new: str) -> dict:
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(prefix))
    src = "".join(cell["source"])
    assert old in src
    cell["source"] = src.replace(old, new)
    return nb


def _hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _marked_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARK in cmd or "sleep 7777" in cmd or "sleep 7778" in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _marked_files() -> list[str]:
    return [os.path.join(d, n) for d in SHARED if os.path.isdir(d) for n in os.listdir(d) if MARK in n]


def _leftover_groups() -> list[str]:
    f = cgroups.factory()
    if f is None:
        return []
    return [str(p / n) for p in f.parents.values() for n in os.listdir(p)
            if n.startswith(cgroups.PREFIX) and n != f"{cgroups.PREFIX}grader"]


def _grade_dirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("resnet-grade-")}


SPINNERS = """
import os
for i in range(64):
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
while True:
    pass
"""

RECORDS = """
import os, json, sys
sys.set_int_max_str_digits(0)
lines = [json.dumps({"probe": "q1_identity", "uses": [], "outputs": {"out": 10 ** 5000}}),
         json.dumps({"probe": "q1_downsample", "uses": [], "outputs": {"out": 10 ** 400}}),
         json.dumps({"probe": "q7_experiment", "outputs": {"results": {"cifar-plain8": 10 ** 350,
                                                                       "cifar-resnet8": 0.5}}}),
         json.dumps({"probe": "q4_plain_conv", "uses": [], "outputs": {"macs": float("nan")}}),
         "[" * 100000, "\\udcff not json", json.dumps({"event": "done"})]
for fd in range(1, 30):
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode("utf-8", "surrogateescape"))
    except OSError:
        pass
"""

FORGED_DONE = """
import os
for fd in range(1, 30):
    try:
        os.write(fd, b'{"event": "done"}\\n')
    except OSError:
        pass
os._exit(0)
"""

MEMORY = """
import os, time
def hold():
    block = b"x" * (600 * 2**20)  # written, so resident
    time.sleep(15)
    return len(block)
kids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        hold()
        os._exit(0)
    kids.append(pid)
hold()
for pid in kids:
    os.waitpid(pid, 0)
"""

LEFTOVERS = f"""
import os
for d in ("/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")):
    try:
        with open(f"{{d}}/{MARK}-file", "wb") as f:
            f.write(b"x" * 20 * 2**20)
    except OSError as e:
        print(d, e)
try:
    with open("/var/tmp/{MARK}-big", "wb") as f:
        for _ in range(600):
            f.write(b"x" * 2**20)
except OSError as e:
    print("full:", e)
"""

ESCAPES = f"""
import os, subprocess, sys
subprocess.Popen(["sleep", "7777"], start_new_session=True)
subprocess.Popen(["nohup", "sleep", "7778"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(7779)  # {MARK}"])
    os._exit(0)
"""

DELEGATES = """
import torch
import resnet_explorer.model as M
import resnet_explorer.analysis as A
from torch.utils.flop_counter import FlopCounterMode

ShortcutA = M.ShortcutA

class BasicBlock(M.BasicBlock):
    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__(in_channels, out_channels, stride, True, "A")

class Bottleneck(M.Bottleneck):
    def __init__(self, in_channels, width, stride=1):
        super().__init__(in_channels, width, stride, True, "B", "1x1")

def conv_macs(conv, in_size):
    with FlopCounterMode(display=False) as c:
        conv(torch.zeros(1, conv.in_channels, *in_size))
    return c.get_total_flops() // 2

def net_macs(model, input_size):
    with FlopCounterMode(display=False) as c, torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    return c.get_total_flops() // 2

def layer_responses(model, images):
    return {r.name: r.std for r in A.layer_responses(model, images)}
"""


def _steal(paths: list[str]) -> str:
    return f"""
import json, glob, os
stolen = []
for path in {paths!r} + glob.glob({paths[-1]!r} + "/*"):
    try:
        for cell in json.load(open(path))["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and "DEPTHS" not in src and "{MARK}" not in src:
                exec(src)
        stolen.append(path)
    except Exception:
        pass
print("stolen:", stolen)
"""


def _plant_links(out_dir: Path, victim: Path) -> str:
    return f"""
import os
for name in ("scores.csv", "scores.json", "scores.csv.tmp", ".scores.csv.tmp"):
    try:
        os.symlink({str(victim)!r}, os.path.join({str(out_dir)!r}, name))
    except OSError as e:
        print(e)
try:
    open({str(victim)!r}, "w").write("owned")
except OSError as e:
    print(e)
"""


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    os.chmod(tmp, 0o755)
    instructor = tmp / "instructor" / "resnet_basics"  # world-readable, as in a checkout
    shutil.copytree(INSTRUCTOR, instructor)
    subs = tmp / "submissions"
    subs.mkdir()
    out_dir = tmp / "shared"  # a shared output folder (sticky, world-writable)
    out_dir.mkdir()
    os.chmod(out_dir, 0o1777)
    victim = tmp / "victim.txt"
    victim.write_text("precious\n")
    for name in ("scores.csv.tmp", "scores.csv"):  # planted by another user before grading
        (out_dir / name).symlink_to(victim)
    solution, student = _nb(instructor / "resnet_basics.ipynb"), _nb(STUDENT)
    nbs = {
        "a0_solution_beside_spinners": solution,
        "a1_cpu_spinners": _insert(student, SPINNERS),
        "solution": solution,
        "huge_int_return": _patch(_insert(solution, "import sys\nsys.set_int_max_str_digits(0)"), "def conv_macs",
                                  "    return kh * kw", "    return 10 ** 5000 + 0 * kh * kw"),
        "forged_records": _insert(student, RECORDS),
        "forged_done_exit": _insert(student, FORGED_DONE),
        "memory_forks": _insert(student, MEMORY),
        "leftovers": _insert(student, LEFTOVERS),
        "escapes": _insert(student, ESCAPES),
        "delegates": _append(solution, DELEGATES),
        "reads_instructor": _append(student, _steal([str(instructor / "resnet_basics.ipynb"),
                                                      str(INSTRUCTOR / "resnet_basics.ipynb"), str(subs)])),
        "plants_out_links": _insert(student, _plant_links(out_dir, victim)),
    }
    for name, nb in nbs.items():
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    bad = copy.deepcopy(student)
    (subs / "bad_source.ipynb").write_text(json.dumps({**bad, "cells": [{**bad["cells"][0], "source": [1]}]}))
    (subs / "bad_metadata.ipynb").write_text(json.dumps({**bad, "cells": [{**bad["cells"][0], "metadata": "x"}]}))
    md = next(c for c in bad["cells"] if c["cell_type"] == "markdown")
    (subs / "bad_tags.ipynb").write_text(json.dumps({**bad, "cells": [{**md, "metadata": {"tags": 5}}]}))
    (subs / "bad_number.ipynb").write_text(json.dumps(bad).replace('"nbformat": 4', '"nbformat": 4, "n": ' + "9" * 5000))
    (subs.joinpath(os.fsdecode(b"bob\xff.ipynb"))).write_text(json.dumps(student))
    (subs / "evil\n  solution.ipynb  ok  27.ipynb").write_text("{}")
    (subs / "=HYPERLINK(1).ipynb").write_text("{}")
    (subs / "UPPER.IPYNB").write_text("{}")
    (subs / "folder.ipynb").mkdir()
    (subs / "zero.ipynb").symlink_to("/dev/zero")
    (subs / "linked_solution.ipynb").symlink_to(instructor / "resnet_basics.ipynb")
    (subs / "notes.txt").write_text("not a notebook")
    watched = [instructor, subs, ROOT / "resnet_explorer" / "grading", victim]
    before = _hashes(*watched)
    dirs_before = _grade_dirs()
    report = grade_folder(subs, instructor, Limits(**LIMITS), jobs=2, seed=99)
    csv_path, json_path = write_report(report, out_dir / "scores.csv")
    return {"report": report, "by": {s["submission"]: s for s in report["submissions"]}, "before": before,
            "after": _hashes(*watched), "csv": csv_path, "json": json_path, "out_dir": out_dir, "victim": victim,
            "processes": _marked_processes(), "files": _marked_files(), "groups": _leftover_groups(),
            "new_dirs": _grade_dirs() - dirs_before, "entries": len(os.listdir(subs))}


def test_the_run_uses_the_full_sandbox_here(attacked):
    lvl = attacked["report"]["isolation_level"]
    assert lvl.startswith("bubblewrap"), attacked["report"]["isolation"]  # quickstart.sh installs bubblewrap
    if os.geteuid() == 0:
        assert lvl == "bubblewrap+cgroup+own uid+rlimits"


def test_solutions_keep_full_marks_and_every_entry_has_a_row(attacked):
    by = attacked["by"]
    assert len(by) == attacked["entries"] == 24
    for name in ("solution.ipynb", "a0_solution_beside_spinners.ipynb"):
        assert (by[name]["status"], by[name]["points"]) == ("ok", MAX), by[name]


def test_cpu_spinners_are_charged_for_all_their_processes(attacked):
    s = attacked["by"]["a1_cpu_spinners.ipynb"]
    assert s["status"] == "cpu-limit" and s["points"] == 0
    assert s["cpu_seconds"] >= LIMITS["cpu_s"] and "all its processes" in s["reason"]
    # the victim beside it kept its share: it was not slowed to a timeout
    assert attacked["by"]["a0_solution_beside_spinners.ipynb"]["seconds"] < LIMITS["wall_s"] / 2


def test_huge_numbers_fail_only_their_tests(attacked):
    s = attacked["by"]["huge_int_return.ipynb"]
    assert s["status"] == "ok" and set(s["failed"]) == {t for t in (
        "q4_plain_conv", "q4_strided_conv", "q4_conv_with_bias", "q4_grouped_conv",
        "q5_cifar_resnet20", "q5_resnet18", "q5_biased_net")}
    assert s["points"] == MAX - 7
    msgs = {t["name"]: t["message"] for t in s["tests"]}
    assert msgs["q4_plain_conv"] == "malformed output (a number of 5001 digits)"


def test_forged_records_are_judged_as_data(attacked):
    s = attacked["by"]["forged_records.ipynb"]
    msgs = {t["name"]: t["message"] for t in s["tests"]}
    assert s["status"] == "ok" and s["points"] == 0
    assert msgs["q1_identity"] == "malformed output (a number of 5001 digits)"
    assert msgs["q1_downsample"] == "malformed output (a number of 401 digits)"
    assert msgs["q7_experiment"].startswith("output cannot be compared with the solution's (OverflowError")
    assert msgs["q4_plain_conv"].startswith("output['macs'] is nan, expected")


def test_a_forged_done_does_not_make_it_ok(attacked):
    s = attacked["by"]["forged_done_exit.ipynb"]
    assert s["status"] == "exited-early" and s["points"] == 0


def test_memory_is_limited_for_all_processes_together(attacked):
    s = attacked["by"]["memory_forks.ipynb"]
    assert s["status"] in ("ok", "memory-limit")
    assert s["memory_peak_mb"] is not None and 1000 < s["memory_peak_mb"] <= LIMITS["memory_mb"]


def test_files_outside_the_output_folder_are_untouched(attacked):
    assert attacked["before"] == attacked["after"]
    assert attacked["victim"].read_text() == "precious\n"
    for p in (attacked["csv"], attacked["json"]):
        assert p.is_file() and not p.is_symlink()
    assert sorted(p.name for p in attacked["out_dir"].iterdir()) == ["scores.csv", "scores.csv.tmp", "scores.json"]


def test_nothing_of_a_submission_survives_the_run(attacked):
    assert attacked["processes"] == []
    assert attacked["files"] == []
    assert attacked["groups"] == [] and attacked["new_dirs"] == set()
    assert attacked["by"]["escapes.ipynb"]["status"] == "ok"
    assert attacked["by"]["leftovers.ipynb"]["status"] == "ok"


def test_the_librarys_own_answers_score_nothing_and_are_flagged(attacked):
    s = attacked["by"]["delegates.ipynb"]
    assert s["status"] == "ok" and s["points"] == 2 and s["questions"]["q7"] == 2  # q7 may use train()
    assert s["flags"] == ["q1: resnet_explorer.model.ShortcutA", "q2: resnet_explorer.model.BasicBlock",
                          "q3: resnet_explorer.model.Bottleneck", "q4: torch.utils.flop_counter",
                          "q5: torch.utils.flop_counter", "q6: resnet_explorer.analysis.layer_responses"]
    row = next(r for r in csv.DictReader(attacked["csv"].open(newline="")) if r["submission"] == "delegates.ipynb")
    assert "q1: resnet_explorer.model.ShortcutA" in row["flags"]


def test_the_instructor_folder_and_other_submissions_are_out_of_reach(attacked):
    s = attacked["by"]["reads_instructor.ipynb"]
    assert s["points"] == 0 and s["status"] == "ok"


def test_malformed_notebooks_and_odd_entries_get_their_rows(attacked):
    by = attacked["by"]
    assert "cells[0].source: [1] is not valid" in by["bad_source.ipynb"]["reason"]
    assert "cells[0].metadata: 'x' is not of type 'object'" in by["bad_metadata.ipynb"]["reason"]
    assert "metadata.tags: 5 is not of type 'array'" in by["bad_tags.ipynb"]["reason"]
    assert "a number of 5000 digits" in by["bad_number.ipynb"]["reason"]
    assert all(by[n]["status"] == "invalid" for n in ("bad_source.ipynb", "bad_metadata.ipynb", "bad_tags.ipynb",
                                                      "bad_number.ipynb", "UPPER.IPYNB", "=HYPERLINK(1).ipynb"))
    assert (by["bob\\xff.ipynb"]["status"], by["bob\\xff.ipynb"]["points"]) == ("ok", 0)
    assert by["evil\\n  solution.ipynb  ok  27.ipynb"]["status"] == "invalid"
    for name, why in (("folder.ipynb", "a folder"), ("zero.ipynb", "a symbolic link to /dev/zero"),
                      ("linked_solution.ipynb", "a symbolic link"), ("notes.txt", "not a notebook")):
        assert by[name]["status"] == "skipped" and why in by[name]["reason"] and by[name]["points"] == 0
    rows = list(csv.reader(attacked["csv"].open(newline="")))
    assert len(rows) == 1 + attacked["entries"]
    assert ["'=HYPERLINK(1).ipynb", "invalid"] in [r[:2] for r in rows]


# -- as an ordinary user ------------------------------------------------------------------------
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
    subs, out = tmp / "submissions", tmp / "out"
    instructor = tmp / "instructor" / "resnet_basics"
    shutil.copytree(INSTRUCTOR, instructor)
    subs.mkdir()
    out.mkdir()
    student = _nb(STUDENT)
    grader_file = tmp / "grader_owned.txt"  # the grader's own file: writable by the grader's uid
    grader_file.write_text("mine\n")
    for name, nb in {"solution": _nb(instructor / "resnet_basics.ipynb"), "escapes": _insert(student, ESCAPES),
                     "leftovers": _insert(student, LEFTOVERS),
                     "writes_grader_files": _insert(student, f"open({str(grader_file)!r}, 'w').write('owned')")}.items():
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    for p in [tmp, *tmp.rglob("*")]:
        os.chown(p, uid, uid, follow_symlinks=False)
    os.chmod(tmp / "instructor", 0o700)
    before = _hashes(instructor, subs, grader_file)
    argv = [sys.executable, "-m", "resnet_explorer.cli", "grade", str(subs), "--assignment", str(instructor),
            "--out", str(out / "scores.csv"), "--jobs", "2", "--timeout", "60", "--memory-mb", "5000",
            "--seed", "7"]
    if os.geteuid() == 0:
        argv = _as_user(uid, argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp)}
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    return {"r": r, "uid": uid, "out": out, "before": before, "after": _hashes(instructor, subs, grader_file),
            "processes": _marked_processes(), "files": _marked_files()}


def test_an_ordinary_user_grades_with_namespaces_and_nothing_survives(as_user):
    r = as_user["r"]
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("isolation: bubblewrap+rlimits: private mount/PID/IPC/network namespaces")
    data = json.loads((as_user["out"] / "scores.json").read_text())
    by = {s["submission"]: s for s in data["submissions"]}
    assert (by["solution.ipynb"]["status"], by["solution.ipynb"]["points"]) == ("ok", MAX)
    assert all(by[n]["status"] == "ok" and by[n]["points"] == 0
               for n in ("escapes.ipynb", "leftovers.ipynb", "writes_grader_files.ipynb"))
    assert as_user["before"] == as_user["after"]  # the grader's own files, though its uid could write them
    assert as_user["processes"] == [] and as_user["files"] == []
    assert (as_user["out"] / "scores.csv").stat().st_uid == as_user["uid"]
