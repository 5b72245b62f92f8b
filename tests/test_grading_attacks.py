"""A hostile class: one folder with many attacks beside correct solutions, graded by `grade` (slow, sandboxed).

Each attack of the earlier rounds and of this one (forged channel events, NaN, library answers
forged or dressed as the library, tracer patches, twin names, spinners beside a slow honest
neighbour, tracing bubblewrap, writing the job, hostile values) is one notebook, or one odd
entry, of a single submissions folder graded with ``--jobs 2`` by the command. The assertions
check that `grade` exits 0, that scores.json is strict JSON with a row per entry, that the
solutions keep 27/27, that each attack gets its row and what it deserves, that no file outside
the output folder changes, that no process of a submission outlives the run and that nothing is
left in /tmp, /var/tmp or /dev/shm. The instructor folder is left world-readable, as in an
editable checkout: the sandbox must hide it anyway. tests/test_grading_attacks_user.py grades
the same folder as an ordinary user.
"""

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
import unicodedata
from pathlib import Path

import pytest

from resnet_explorer.grading import cgroups

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
STUDENT = ROOT / "assignments" / "student" / "resnet_basics" / "resnet_basics.ipynb"
MAX = 27
MARK = f"attack{secrets.token_hex(4)}"
SHARED = ("/tmp", "/var/tmp", "/dev/shm")


def notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def _cell(source: str) -> dict:
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}


def insert_cell(nb: dict, source: str) -> dict:
    """``nb`` with a code cell after its imports (it runs before the answers)."""
    nb = copy.deepcopy(nb)
    i = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and "import torch" in "".join(c["source"]))
    nb["cells"].insert(i + 1, _cell(source))
    return nb


def append_cell(nb: dict, source: str) -> dict:
    """``nb`` with a code cell at the end (it overrides the answers)."""
    nb = copy.deepcopy(nb)
    nb["cells"].append(_cell(source))
    return nb


def patch_cell(nb: dict, prefix: str, old: str, new: str) -> dict:
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(prefix))
    src = "".join(cell["source"])
    assert old in src
    cell["source"] = src.replace(old, new)
    return nb


def file_hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def marked_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARK in cmd or "sleep 7777" in cmd or "sleep 7778" in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def marked_files() -> list[str]:
    return [os.path.join(d, n) for d in SHARED if os.path.isdir(d) for n in os.listdir(d) if MARK in n]


def leftover_groups() -> list[str]:
    f = cgroups.factory()
    if f is None:
        return []
    return [str(p / n) for p in f.parents.values() for n in os.listdir(p)
            if n.startswith(cgroups.PREFIX) and n != f"{cgroups.PREFIX}grader"]


def grade_dirs() -> set[str]:
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
    block = b"x" * (1300 * 2**20)  # written, so resident: 4 of them pass the 5000 MB of the group
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

# the library's counters and layer responses under the notebook's names
COUNTERS = """
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

""" + COUNTERS


WRAPPED = """
import torch
from torch import nn
import resnet_explorer.model as M
import resnet_explorer.analysis as A
from torch.utils.flop_counter import FlopCounterMode

class ShortcutA(nn.Module):
    def __init__(self, a, b, s):
        super().__init__()
        self.inner = M.ShortcutA(a, b, s)
    def forward(self, x):
        return self.inner(x)

class BasicBlock(nn.Module):
    def __init__(self, a, b, s=1):
        super().__init__()
        self.inner = M.BasicBlock(a, b, s, True, "A")
    def forward(self, x):
        return self.inner(x)

class Bottleneck(nn.Module):
    def __init__(self, a, w, s=1):
        super().__init__()
        self.inner = M.Bottleneck(a, w, s, True, "B", "1x1")
    def forward(self, x):
        return self.inner(x)

""" + COUNTERS

# (b) the library's answers, compiled as if they were a file of the package: the tracer once took them for the library
COMPILED_AS_LIBRARY = ("import os as _os, resnet_explorer as _re\n"
                       f"exec(compile({WRAPPED!r}, _os.path.join(_os.path.dirname(_re.__file__), '_helpers.py'), 'exec'))\n")

# (c) the tracer's report patched in a cell, then the library's answers
PATCHED_REPORT = "import resnet_explorer.grading.integrity as _I\n_I.Watch.report = lambda self: []\n" + WRAPPED

# (a) the probes' seeds and source read from the caller's frames, answered with the library, the records written first
LIBRARY_RECORDS = WRAPPED + """
import json, os, sys
_LIB = {"ShortcutA": ShortcutA, "BasicBlock": BasicBlock, "Bottleneck": Bottleneck, "conv_macs": conv_macs,
        "net_macs": net_macs, "layer_responses": layer_responses}

def _write_everywhere(record):
    line = (json.dumps(record) + "\\n").encode()
    for fd in range(0, 40):
        try:
            os.write(fd, line)
        except OSError:
            pass

def _forge_from_frames():
    found, f = {}, sys._getframe(1)
    while f is not None:  # the grader's own frames: its job, its channel, its encoder, the test being run
        for key in ("job", "emit", "test", "probes"):
            found[key] = found.get(key) or f.f_locals.get(key)
        found["encode"] = found.get("encode") or f.f_globals.get("encode")
        f = f.f_back
    job, emit, encode = found["job"], found["emit"], found["encode"] or (lambda x: x)
    if isinstance(job, dict) and job.get("tests") and job.get("probes") and callable(emit):
        probes = {"__name__": "stolen"}
        exec(job["probes"], probes)
        for t in job["tests"]:  # every test's seed, answered with the library, written first
            try:
                emit({"probe": t["name"], "outputs": encode(probes[t["name"]](_LIB, t["seed"])), "uses": []})
            except Exception:
                pass
    test, probes = found["test"], found["probes"]
    if isinstance(test, dict) and isinstance(probes, dict) and test.get("name") in probes:
        try:  # this test's seed, answered with the library, written wherever it may land
            out = encode(probes[test["name"]](_LIB, test["seed"]))
            _write_everywhere({"probe": test["name"], "outputs": out, "uses": []})
            _write_everywhere({"outputs": out})
        except Exception:
            pass

_forge_from_frames()
"""
FORGE_AT_TEST_TIME = """
class ShortcutA(nn.Module):
    def __init__(self, a, b, s):
        super().__init__()
        _forge_from_frames()
"""


def forge_cells(cell: str) -> str:
    """1, 2: a wrapper that finds the result channel in its caller's frames and writes a cells event there."""
    return f"""
import json, sys
_conv_macs = conv_macs
def _forge():
    event = {{"event": "cells", "errors": [{{"cell": {cell}, "error": "forged"}}]}}
    f = sys._getframe(1)
    while f is not None:
        for name, v in list(f.f_locals.items()):
            try:
                if name == "emit" and callable(v):
                    v(event)
                elif name == "out" and hasattr(v, "write"):
                    v.write(json.dumps(event) + "\\n")
                    v.flush()
            except Exception:
                pass
        f = f.f_back
def conv_macs(conv, in_size):
    _forge()
    return _conv_macs(conv, in_size)
"""


# 6: hostile values in answers and in a cell
HOSTILE = """
class _Huge:
    def __int__(self):
        return 10 ** 5000
class _Boom(Exception):
    def __str__(self):
        raise RuntimeError("no message")
def conv_macs(conv, in_size):
    return _Huge()
def net_macs(model, input_size):
    raise _Boom()
"""

# 6: the job file written through descriptor 0 (the answers sabotage themselves where it is writable)
JOB_FD = """
import fcntl, os
def _job_writable():
    try:
        return fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
    except OSError:
        return False
_conv_macs = conv_macs
def conv_macs(conv, in_size):
    return None if _job_writable() else _conv_macs(conv, in_size)
if _job_writable():
    layer_responses = None
"""

# 5: tracing bubblewrap's init or the grading process (the answers sabotage themselves where it works)
PTRACE = """
import ctypes, os
def _traced_someone():
    libc = ctypes.CDLL(None, use_errno=True)
    found = False
    for pid in {1, os.getppid()} - {os.getpid()}:
        if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH
            os.waitpid(pid, 0x40000000)  # __WALL: its stop
            libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
            found = True
    return found
if _traced_someone():
    layer_responses = None
"""

# 5: 50 spinners started once the neighbour is past its cells, beside a slow but honest neighbour
SPINNERS_LATER = """
import os, time
time.sleep(8)
for i in range(50):
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
"""
SLOW_HONEST = """
import time as _time
_fast = layer_responses
def layer_responses(model, images):
    start = _time.process_time()
    while _time.process_time() - start < 1.5:  # honest work: 1.5 s of CPU, under the 5 s test limit
        pass
    return _fast(model, images)
"""


def steal_notebooks(paths: list[str]) -> str:
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


def plant_links(out_dir: Path, victim: Path) -> str:
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


def build_folder(tmp: Path, out_dir: Path, victim: Path) -> tuple[Path, Path, int]:
    """The attack folder beside its own instructor copy (world-readable): (submissions, instructor, entries)."""
    instructor = tmp / "instructor" / "resnet_basics"
    shutil.copytree(INSTRUCTOR, instructor)
    subs = tmp / "submissions"
    subs.mkdir()
    solution, student = notebook(instructor / "resnet_basics.ipynb"), notebook(STUDENT)
    nbs = {
        "a0_solution_beside_spinners": solution,
        "a1_cpu_spinners": insert_cell(student, SPINNERS),
        "solution": solution,
        "huge_int_return": patch_cell(insert_cell(solution, "import sys\nsys.set_int_max_str_digits(0)"), "def conv_macs",
                                  "    return kh * kw", "    return 10 ** 5000 + 0 * kh * kw"),
        "forged_records": insert_cell(student, RECORDS),
        "forged_done_exit": insert_cell(student, FORGED_DONE),
        "memory_forks": insert_cell(student, MEMORY),
        "leftovers": insert_cell(student, LEFTOVERS),
        "escapes": insert_cell(student, ESCAPES),
        "delegates": append_cell(solution, DELEGATES),
        "reads_instructor": append_cell(student, steal_notebooks([str(instructor / "resnet_basics.ipynb"),
                                                      str(INSTRUCTOR / "resnet_basics.ipynb"), str(subs)])),
        "plants_out_links": insert_cell(student, plant_links(out_dir, victim)),
        "c1_forged_cells_event_big_number": append_cell(solution, forge_cells('int("9" * 500)')),
        "c2_forged_cells_event_nan": append_cell(solution, forge_cells('float("nan")')),
        "c3_library_records_from_frames": append_cell(insert_cell(student, LIBRARY_RECORDS), FORGE_AT_TEST_TIME),
        "c4_library_compiled_as_package_file": append_cell(solution, COMPILED_AS_LIBRARY),
        "c5_tracer_report_patched": append_cell(solution, PATCHED_REPORT),
        "c6_hostile_values": append_cell(append_cell(solution, HOSTILE), "raise _Boom()"),
        "c7_writes_its_job": append_cell(solution, JOB_FD),
        "c8_traces_bubblewrap": append_cell(solution, PTRACE),
        "f0_spinners_later": insert_cell(student, SPINNERS_LATER),
        "f1_slow_honest": append_cell(solution, SLOW_HONEST),
    }
    for name, nb in nbs.items():
        (subs / f"{name}.ipynb").write_text(json.dumps(nb))
    for form, nb in (("NFC", solution), ("NFD", student)):  # 4: the same name twice, as two filesystems write it
        (subs / unicodedata.normalize(form, "café.ipynb")).write_text(json.dumps(nb))
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
    return subs, instructor, len(os.listdir(subs))


OPTIONS = ["--jobs", "2", "--timeout", "40", "--wall-timeout", "240", "--memory-mb", "5000", "--cell-timeout", "20",
           "--test-timeout", "5", "--seed", "99"]


def grade_command(subs: Path, instructor: Path, out: Path, argv_wrap=lambda argv: argv, **env) -> subprocess.CompletedProcess:
    """`resnet-explorer grade` on the folder, as a command (its exit code and output are what is checked)."""
    argv = argv_wrap([sys.executable, "-m", "resnet_explorer.cli", "grade", str(subs), "--assignment", str(instructor),
                      "--out", str(out), *OPTIONS])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **env}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=out.parent, timeout=3000)


def strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    os.chmod(tmp, 0o755)
    out_dir = tmp / "shared"  # a shared output folder (sticky, world-writable)
    out_dir.mkdir()
    os.chmod(out_dir, 0o1777)
    victim = tmp / "victim.txt"
    victim.write_text("precious\n")
    for name in ("scores.csv.tmp", "scores.csv"):  # planted by another user before grading
        (out_dir / name).symlink_to(victim)
    subs, instructor, entries = build_folder(tmp, out_dir, victim)
    watched = [instructor, subs, ROOT / "resnet_explorer" / "grading", victim]
    before = file_hashes(*watched)
    dirs_before = grade_dirs()
    r = grade_command(subs, instructor, out_dir / "scores.csv")
    csv_path, json_path = out_dir / "scores.csv", out_dir / "scores.json"
    report = strict_json(json_path) if r.returncode == 0 else {"submissions": []}
    return {"r": r, "report": report, "by": {s["submission"]: s for s in report["submissions"]}, "before": before,
            "after": file_hashes(*watched), "csv": csv_path, "json": json_path, "out_dir": out_dir, "victim": victim,
            "processes": marked_processes(), "files": marked_files(), "groups": leftover_groups(),
            "new_dirs": grade_dirs() - dirs_before, "entries": entries}


def test_grade_exits_0_with_a_strict_report_and_a_row_per_entry(attacked):
    r = attacked["r"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(attacked["by"]) == attacked["entries"] == 36
    rows = list(csv.reader(attacked["csv"].open(newline="")))
    assert len(rows) == 1 + attacked["entries"]
    assert all(s["percent"] == s["percent"] and abs(s["percent"]) < 1e9 for s in attacked["by"].values())


def test_the_run_uses_the_full_sandbox_here(attacked):
    lvl = attacked["report"]["isolation_level"]
    assert lvl.startswith("bubblewrap"), attacked["report"]["isolation"]  # quickstart.sh installs bubblewrap
    if os.geteuid() == 0:
        assert lvl == "bubblewrap+cgroup+own uid+rlimits"
SOLUTIONS = ("solution.ipynb", "a0_solution_beside_spinners.ipynb", "c1_forged_cells_event_big_number.ipynb",
             "c2_forged_cells_event_nan.ipynb", "c7_writes_its_job.ipynb", "c8_traces_bubblewrap.ipynb",
             "f1_slow_honest.ipynb")


def check_solutions(by: dict) -> None:
    """The solution keeps 27/27 beside every attack, and so do the attacks that only hurt others."""
    for name in SOLUTIONS:
        assert (by[name]["status"], by[name]["points"], by[name]["flags"]) == ("ok", MAX, []), by[name]


def test_solutions_keep_full_marks(attacked):
    check_solutions(attacked["by"])


def test_cpu_spinners_are_charged_for_all_their_processes(attacked):
    s = attacked["by"]["a1_cpu_spinners.ipynb"]
    assert s["status"] == "cpu-limit" and s["points"] == 0
    assert s["cpu_seconds"] >= 40 and "all its processes" in s["reason"]
    # the victim beside it kept its share: it was not slowed to a timeout
    assert attacked["by"]["a0_solution_beside_spinners.ipynb"]["seconds"] < 120


def check_hostile_values(by: dict) -> None:
    """A value the child cannot write, or an exception whose message raises, fails its test or cell only."""
    s = by["huge_int_return.ipynb"]
    q45 = {f"q4_{t}" for t in ("plain_conv", "strided_conv", "conv_with_bias", "grouped_conv")} | \
          {f"q5_{t}" for t in ("cifar_resnet20", "resnet18", "biased_net")}
    assert s["status"] == "ok" and set(s["failed"]) == q45 and s["points"] == MAX - 7
    msgs = {t["name"]: t["message"] for t in s["tests"]}
    assert msgs["q4_plain_conv"] == "malformed output (a number of 5001 digits)"
    s = by["c6_hostile_values.ipynb"]
    msgs = {t["name"]: t["message"] for t in s["tests"]}
    assert s["status"] == "ok" and set(s["failed"]) == q45 and s["points"] == MAX - 7, s
    assert msgs["q4_plain_conv"] == "malformed output (a number of 5001 digits)"
    assert msgs["q5_resnet18"] == "raised _Boom: (its message cannot be shown)"
    assert s["cell_errors"][-1]["error"] == "_Boom: (its message cannot be shown)"


def test_hostile_values_fail_only_their_tests_and_cells(attacked):
    check_hostile_values(attacked["by"])


def check_forgeries(by: dict) -> None:
    """Records forged from the cells never reach the results; one forged from a test fails that test."""
    s = by["forged_records.ipynb"]
    assert (s["status"], s["points"]) == ("ok", 0)
    assert by["forged_done_exit.ipynb"]["status"] == "exited-early" and by["forged_done_exit.ipynb"]["points"] == 0
    assert "exited (code 0) in cell" in by["forged_done_exit.ipynb"]["reason"]
    s = by["c3_library_records_from_frames.ipynb"]  # (a): seeds read from the frames, the library's answers
    assert s["points"] == 0, s
    assert "q1: resnet_explorer.model.ShortcutA" in s["flags"]


def test_forged_records_and_events_never_score(attacked):
    check_forgeries(attacked["by"])


def test_memory_is_limited_for_all_processes_together(attacked):
    s = attacked["by"]["memory_forks.ipynb"]
    assert s["status"] in ("ok", "memory-limit")
    assert s["memory_peak_mb"] is not None and 1000 < s["memory_peak_mb"] <= 5000


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


LIBRARY_FLAGS = ["q1: resnet_explorer.model.ShortcutA", "q2: resnet_explorer.model.BasicBlock",
                 "q3: resnet_explorer.model.Bottleneck", "q4: torch.utils.flop_counter",
                 "q5: torch.utils.flop_counter", "q6: resnet_explorer.analysis.layer_responses"]


def check_library_answers(by: dict) -> None:
    """The library's own answers score nothing, flagged, however they are reached or dressed up."""
    for name in ("delegates.ipynb", "c4_library_compiled_as_package_file.ipynb", "c5_tracer_report_patched.ipynb"):
        s = by[name]
        assert s["status"] == "ok" and s["points"] == 2 and s["questions"]["q7"] == 2, (name, s)  # q7 may use train()
        assert s["flags"] == LIBRARY_FLAGS, (name, s["flags"])


def test_the_librarys_own_answers_score_nothing_and_are_flagged(attacked):
    check_library_answers(attacked["by"])
    row = next(r for r in csv.DictReader(attacked["csv"].open(newline="")) if r["submission"] == "delegates.ipynb")
    assert "q1: resnet_explorer.model.ShortcutA" in row["flags"]


def check_twin_names(by: dict) -> None:
    """4: café.ipynb in NFC and in NFD: two rows a person tells apart, each with its own score."""
    twins = {n: s for n, s in by.items() if unicodedata.normalize("NFC", n).startswith("café.ipynb")}
    assert len({unicodedata.normalize("NFC", n) for n in twins}) == 2 and all(" [" in n for n in twins)
    assert sorted(s["points"] for s in twins.values()) == [0, MAX]


def test_twin_names_get_rows_that_read_apart(attacked):
    check_twin_names(attacked["by"])


def test_the_instructor_folder_and_other_submissions_are_out_of_reach(attacked):
    s = attacked["by"]["reads_instructor.ipynb"]
    assert s["points"] == 0 and s["status"] == "ok"


def check_odd_entries(by: dict) -> None:
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


def test_malformed_notebooks_and_odd_entries_get_their_rows(attacked):
    check_odd_entries(attacked["by"])
    rows = list(csv.reader(attacked["csv"].open(newline="")))
    assert ["'=HYPERLINK(1).ipynb", "invalid"] in [r[:2] for r in rows]
