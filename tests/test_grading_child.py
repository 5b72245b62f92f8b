"""The sandboxed side of grading, tried without a sandbox (fast): each defence with its attack.

The cells run in one process and send their definitions on as data (`carry`); the tests run in
processes forked from a clean one (`tests_run`); none of them may trace another (`confine`).
Here each piece runs in forks of the test process, as the grading child runs it.
"""

from __future__ import annotations

import ctypes
import json
import marshal
import os
import time
from pathlib import Path

import pytest
import torch

import resnet_explorer
from resnet_explorer.grading import checks, confine, integrity
from resnet_explorer.grading.carry import NotCarried, export
from resnet_explorer.grading.carry_load import CarryError, load
from resnet_explorer.grading.child import cells_event, cells_phase, definitions
from resnet_explorer.grading.notebook import code_cells
from resnet_explorer.grading.probing import seeded
from resnet_explorer.grading.records import MAX_NAME, read_stream
from resnet_explorer.grading.tests_run import run_test

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "assignments" / "instructor" / "resnet_basics" / "resnet_basics.ipynb"
UNION = sorted({n for names in checks.FORBIDDEN.values() for n in names})
LIB = str(Path(resnet_explorer.__file__).parent)


@pytest.fixture(scope="module")
def forbidden():
    return integrity.resolve(UNION)


def _cells(*extra: str) -> list[str]:
    cells = [c for c in code_cells(json.loads(SOLUTION.read_text())) if "DEPTHS" not in c and "checks.check" not in c]
    return cells + list(extra)


def _run_cells(cells: list[str], cell_s: float = 20.0) -> tuple[dict, list[dict], dict | None, list[str]]:
    frame, ended = cells_phase({"cells": cells, "limits": {"cell_s": cell_s}}, close=[])
    ns, missing = definitions(frame)
    return ns, frame[1] if frame else [], ended, missing


# -- the cells' process and what it carries ------------------------------------------------------
def test_the_definitions_travel_as_data_and_behave_the_same():
    ns, errors, ended, missing = _run_cells(_cells("import functools\n@torch.no_grad()\ndef twice(x): return 2 * x\n"
                                                   "@functools.lru_cache(4)\ndef inc(n): return n + 1\n"
                                                   "SCALE = torch.tensor([1.5])\ngen = (i for i in range(3))\n"
                                                   "import numpy as np\nroot = np.sqrt\n__private = 3\n"))
    assert errors == [] and ended is None and missing == ["gen (a generator)"]
    here: dict = {"__name__": "__main__"}
    for src in _cells():
        exec(src, here)
    x = seeded(1, 2, 16, 8, 8)
    assert torch.equal(ns["ShortcutA"](16, 32, 2)(x), here["ShortcutA"](16, 32, 2)(x))
    mine, theirs = ns["BasicBlock"](16, 32, 2).eval(), here["BasicBlock"](16, 32, 2).eval()
    mine.load_state_dict(theirs.state_dict())
    assert torch.equal(mine(x), theirs(x))
    conv = torch.nn.Conv2d(3, 64, 7, 2, 3)
    assert ns["conv_macs"](conv, (224, 224)) == here["conv_macs"](conv, (224, 224)) == 118_013_952
    assert ns["twice"](torch.ones(1)).item() == 2 and ns["inc"](1) == 2 and ns["SCALE"].item() == 1.5
    assert ns["root"](4.0) == 2.0 and ns["__private"] == 3
    with pytest.raises(Exception, match="gen \\(a generator\\) could not be carried"):
        ns["gen"]()


def test_a_cell_fails_alone_whatever_it_raises_or_however_long_it_runs():
    ns, errors, ended, _ = _run_cells([
        "class Boom(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise Boom()",
        "x = 1",
        "while True:\n    pass",  # CPU past the cell's limit
        "import time\ntime.sleep(30)",  # waiting past it
        "def f():\n    return x + 1",
    ], cell_s=1.0)
    assert ended is None and ns["f"]() == 2
    assert errors == [{"cell": 1, "error": "Boom: (its message cannot be shown)"},
                      {"cell": 3, "error": "SoftTimeout: ran past its time limit (1 s of CPU time)"},
                      {"cell": 4, "error": "SoftTimeout: waited past its time limit (1 s without running)"}]


def test_a_cell_that_ends_its_process_keeps_what_was_defined_before():
    ns, errors, ended, _ = _run_cells(["def f():\n    return 1", "import os\nos._exit(0)", "def g():\n    return 2"])
    assert ended == {"after": 1, "code": 0} and ns["f"]() == 1 and "g" not in ns


def _payload(tmp_path: Path) -> str:
    return f"open({str(tmp_path / 'ran')!r}, 'w').write('x')"


def test_loading_hostile_definitions_runs_none_of_their_code(tmp_path):
    side = _payload(tmp_path)
    ns: dict = {"__name__": "__main__"}
    exec(f"class Base:\n    def __init_subclass__(cls, **kw):\n        {side}\n"
         f"class Meta(type):\n    def __new__(m, *a):\n        {side}\n        return super().__new__(m, *a)\n"
         "class Sub(Base):\n    pass\n", ns)
    exec("class WithMeta(metaclass=Meta):\n    pass\n", ns)
    (tmp_path / "ran").unlink()
    loaded, missing = load(export(ns))
    assert not (tmp_path / "ran").exists()
    assert isinstance(loaded["Sub"], NotCarried) and isinstance(loaded["WithMeta"], NotCarried)
    assert sorted(m.split(" ")[0] for m in missing) == ["Sub", "WithMeta"]
    with pytest.raises(CarryError):
        load(b"\x00garbage")
    # a crafted export: a reference to the harness's own module, nesting past the limits
    deep: tuple = ("=", 1)
    for _ in range(500):
        deep = ("L", (deep,))
    loaded, missing = load(marshal.dumps((1, (), (("h", ("R", "__main__", "main")), ("d", deep), ("m", ("M", "__main__"))))))
    assert isinstance(loaded["h"], NotCarried) and isinstance(loaded["m"], NotCarried)
    d, depth = loaded["d"], 0
    while isinstance(d, list):
        d, depth = d[0], depth + 1
    assert isinstance(d, NotCarried) and depth <= 61  # cut where the nesting limit is


# -- one test in its own process ----------------------------------------------------------------
PROBES = """
from resnet_explorer.grading.probing import get, seeded

def q1_identity(ns, seed):
    return {"out": get(ns, "ShortcutA")(16, 16, 1)(seeded(seed, 2, 16, 8, 8))}

def q4_plain_conv(ns, seed):
    import torch
    return {"macs": int(get(ns, "conv_macs")(torch.nn.Conv2d(16, 32, 3, 1, 1), (10, 10)))}
"""


def _test(name: str, cells: list[str], forbidden, limit_s: float = 20.0):
    ns, _, _, _ = _run_cells(cells)
    probes: dict = {"__name__": "probes"}
    exec(compile(PROBES, "<probes>", "exec"), probes)
    return run_test(probes[name], ns, 7, forbidden, set(UNION), limit_s, close=[])


HOSTILE_INT = "class Huge:\n    def __int__(self):\n        return 10 ** 5000\ndef conv_macs(conv, size):\n    return Huge()"
HOSTILE_STR = ("class Boom(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
               "def conv_macs(conv, size):\n    raise Boom()")


@pytest.mark.parametrize("cell,outputs,error", [
    (HOSTILE_INT, {"macs": {"__bigint__": 5001}}, None),
    (HOSTILE_STR, None, "Boom: (its message cannot be shown)"),
    ("def conv_macs(conv, size):\n    import os\n    os._exit(3)", None,
     "the test's process exited (code 3) without a result"),
    ("def conv_macs(conv, size):\n    while True:\n        pass", None,
     "SoftTimeout: ran past its time limit (1 s of CPU time)"),
    ("def conv_macs(conv, size):\n    import time\n    time.sleep(60)", None,
     "SoftTimeout: waited past its time limit (1 s without running)"),
    ("def conv_macs(conv, size):\n    import os\n    for fd in range(3, 1024):\n        try:\n"
     "            os.write(fd, b'{\"event\": \"done\"}\\n')\n        except OSError:\n            pass\n    return 1",
     None, "the test's process wrote something that is not a result (a line with the keys ['event'])"),
])
def test_a_hostile_answer_fails_its_test_only(forbidden, cell, outputs, error):
    got = _test("q4_plain_conv", _cells(cell), forbidden, limit_s=1.0)
    assert (got.outputs, got.error, got.uses) == (outputs, error, [])


DELEGATE = "import resnet_explorer.model as M\ndef ShortcutA(a, b, s):\n    return M.ShortcutA(a, b, s)\n"


def test_patching_the_tracer_does_not_hide_a_use(forbidden):
    """The answer patches the tracer's report (and its class) before calling the library's own answer."""
    patch = ("import resnet_explorer.grading.integrity as I\n"
             "I.Watch.report = lambda self: []\nI.Watch.intact = lambda self: True\n"
             "import resnet_explorer.model as M\n"
             "class ShortcutA(M.ShortcutA):\n    def __init__(self, *a):\n"
             "        I.Watch.report = lambda self: []\n        super().__init__(*a)\n")
    got = _test("q1_identity", _cells(patch), forbidden)
    assert got.error is None and got.uses == ["resnet_explorer.model.ShortcutA"]


def test_code_compiled_under_a_library_file_name_is_the_answers(forbidden):
    """A wrapper compiled as if it were a file of the package is not the library calling its own code."""
    for name in ("_helpers.py", "model.py", "grading/../model.py"):
        wrapper = f"exec(compile({DELEGATE!r}, {LIB + '/' + name!r}, 'exec'))"
        got = _test("q1_identity", _cells(wrapper), forbidden)
        assert got.uses == ["resnet_explorer.model.ShortcutA"], name


def test_a_slow_honest_answer_is_not_flagged(forbidden):
    """Past its time limit under the tracer, an honest answer fails on time, never as tampering."""
    slow = "def _tiny(i):\n    return i\ndef conv_macs(conv, size):\n    while True:\n        _tiny(1)\n"
    for _ in range(3):
        got = _test("q4_plain_conv", _cells(slow), forbidden, limit_s=1.0)
        assert (got.error, got.uses) == ("SoftTimeout: ran past its time limit (1 s of CPU time)", [])


# -- processes of a submission cannot trace each other ---------------------------------------------
def test_no_process_of_a_submission_can_trace_another():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            why = confine.forbid_tracing()
            libc = ctypes.CDLL(None, use_errno=True)
            attach = libc.ptrace(ctypes.c_long(16), ctypes.c_long(os.getppid()), None, None)  # PTRACE_ATTACH
            errno_attach = ctypes.get_errno()
            traceme = libc.ptrace(ctypes.c_long(0), ctypes.c_long(0), None, None)
            os.write(w, json.dumps([why, attach, errno_attach, traceme, time.time() > 0]).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    why, attach, errno_attach, traceme, alive = json.loads(os.read(r, 1000))
    assert (why, attach, errno_attach, traceme, alive) == ("", -1, 1, -1, True)  # EPERM


def test_junk_written_into_the_definitions_pipe_costs_nothing_else():
    """A cell writes forged records and a forged end into every descriptor (the pipe of its definitions
    among them); the frames after it are still read, and a later os._exit still shows where it ended."""
    junk = ("import os\nfor fd in range(3, 1024):\n    try:\n"
            "        os.write(fd, b'{\"event\": \"done\"}\\n\\x00resnet-explorer definitions\\x00' + b'\\xff' * 8)\n"
            "    except OSError:\n        pass")
    ns, errors, ended, _ = _run_cells(["def f():\n    return 1", junk, "def g():\n    return 2"])
    assert ended is None and errors == [] and ns["f"]() == 1 and ns["g"]() == 2
    ns, errors, ended, _ = _run_cells(["def f():\n    return 1", junk, "import os\nos._exit(0)", "def g():\n    return 2"])
    assert ended == {"after": 2, "code": 0} and ns["f"]() == 1 and "g" not in ns


def test_a_cell_cannot_write_into_what_the_grading_process_holds():
    """A cell writes into every descriptor; a pipe the grading process holds open (its channel to the
    parent, a log) receives nothing: the fork kept only its own channel and stderr."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        junk = ("import os\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, b'forged')\n"
                "    except OSError:\n        pass")
        ns, errors, ended, _ = _run_cells(["def f():\n    return 1", junk])
        assert ended is None and errors == [] and ns["f"]() == 1
        with pytest.raises(BlockingIOError):
            os.read(r, 100)
    finally:
        os.close(r)
        os.close(w)


def test_the_cells_report_stays_within_what_the_reader_takes():
    """A name of 5,000 characters that cannot be carried, errors in every cell, an early end."""
    cells = [f"{'x' * 5000} = (i for i in range(3))"] + ["raise ValueError('e' * 10000)"] * 3 + ["import os\nos._exit(9)"]
    frame, ended = cells_phase({"cells": cells, "limits": {"cell_s": 20.0}}, close=[])
    ns, missing = definitions(frame)
    lines = [{"event": "start", "uid": 1}, cells_event(frame, ended, missing), {"event": "done"}]
    s = read_stream(b"".join(json.dumps(x).encode() + b"\n" for x in lines), [], len(cells))
    assert s.violation == "" and s.ended == {"after": 4, "code": 9} and len(s.cell_errors) == 3
    assert s.not_carried[0].startswith("xxx") and len(s.not_carried[0]) == MAX_NAME
