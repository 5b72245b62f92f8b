"""The sandboxed side of grading: a clean process that never runs submitted code, and the processes it forks.

Started by `sandbox.run_notebook` as ``python -I -m resnet_explorer.grading.child`` (in a
bubblewrap sandbox where there is one). It reads the first part of its job on stdin (the code
cells, the forbidden library names, the limits), imports torch and resolves the forbidden code
while still trusted, sets its limits, drops to its own uid (a root grader), closes its memory
and forbids tracing to the submission's processes (`confine`), and then:

1. forks the cells' process (`cells`): it runs the notebook and sends its definitions back as
   data; it never holds the tests' source, their seeds or the result channel;
2. builds the definitions without running them (`carry_load`), kills what the cells left
   running, and reports the cells' errors;
3. only now reads the second part of its job (the probes' source, then one test's seed at a
   time, from a descriptor the cells' process never had), and forks one process per test
   (`tests_run`), writing each test's forbidden uses and result on the channel itself.

It only *reports data* (JSON lines, read by `records`); the trusted parent compares them with
the solution's.
"""

from __future__ import annotations

import gc
import json
import marshal
import os
import resource
import signal
import sys
from typing import Any, Callable

from . import confine
from .carry import MAX_BYTES
from .carry_load import CarryError, load
from .cells import FRAME_HEADER, FRAME_MARK, run_cells
from .records import MAX_NAME, MAX_TEXT
from .tests_run import collect, fork_reporting, run_test

MAX_CHANNEL_OUTPUTS = 48 * 2**20  # all tests' outputs together (the parent reads 64 MB)


def set_limits(limits: dict[str, int]) -> None:
    """CPU seconds, address space, file size, processes, no core dumps."""
    cpu = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing


# Imported while still trusted (and, for a root grader, still root): the interpreter may live
# where the submission's uid cannot read (e.g. /root/.pyenv), so a later first import would fail.
PRELOAD = (
    "abc argparse base64 bisect collections collections.abc contextlib copy csv dataclasses "
    "datetime decimal enum fractions functools glob hashlib heapq inspect io itertools json "
    "math numbers operator os pathlib pprint queue random re shutil statistics string struct "
    "tempfile textwrap time traceback types typing warnings weakref zlib "
    "numpy torch torch.nn torch.nn.functional torch.optim torch.utils.data "
    "resnet_explorer resnet_explorer.model resnet_explorer.count resnet_explorer.analysis "
    "resnet_explorer.train resnet_explorer.recipes resnet_explorer.data resnet_explorer.zoo "
    "resnet_explorer.experiments resnet_explorer.grading.checks resnet_explorer.grading.probing"
).split()


def _setup(job: dict) -> Any:
    """Everything done while trusted: imports, the forbidden code, limits, uid, confinement."""
    import importlib

    import torch

    from .integrity import resolve

    torch.set_num_threads(1)
    for name in PRELOAD:
        importlib.import_module(name)
    forbidden = resolve(sorted(set(job["forbidden"])))
    set_limits(job["limits"])
    os.chdir(job["workdir"])
    if job.get("uid") is not None:  # started as root: become the submission's own uid for good
        os.chown(job["workdir"], job["uid"], job["uid"])
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])
    confine.not_dumpable()
    why = confine.forbid_tracing()
    if why:
        print(f"grading child: {why}", file=sys.stderr)
    return forbidden


def _emitter(fd: int) -> Callable[[dict], None]:
    def emit(record: dict) -> None:
        view = memoryview((json.dumps(record, allow_nan=False) + "\n").encode())
        while view:
            view = view[os.write(fd, view):]
    return emit


class FrameReader:
    """The cells' process's frames (`cells.frame`), read as hostile data: what is not a frame is skipped,
    the last whole frame is kept."""

    def __init__(self, n_cells: int):
        self.n_cells, self.buf = n_cells, bytearray()
        self.last: tuple[int, list[dict], bytes] | None = None

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        self._scan(final=False)

    def finish(self) -> None:
        self._scan(final=True)

    def _scan(self, final: bool) -> None:
        mark = len(FRAME_MARK)
        while True:
            start = self.buf.find(FRAME_MARK)
            if start < 0:
                del self.buf[: max(0, len(self.buf) - mark)]
                return
            del self.buf[:start]
            n = int.from_bytes(self.buf[mark:FRAME_HEADER], "little") if len(self.buf) >= FRAME_HEADER else -1
            plausible = 0 <= n <= MAX_BYTES + 2**20
            whole = plausible and len(self.buf) >= FRAME_HEADER + n
            if (n < 0 or (plausible and not whole)) and not final:
                return  # the rest is still to come
            if whole and self._take(bytes(self.buf[FRAME_HEADER:FRAME_HEADER + n])):
                del self.buf[:FRAME_HEADER + n]
            else:
                del self.buf[:1]  # a false start: look for the next mark

    def _take(self, body: bytes) -> bool:
        try:
            done, errors, blob = marshal.loads(body)
            if type(done) is not int or type(blob) is not bytes or type(errors) is not tuple:
                return False
        except Exception:
            return False
        kept = [{"cell": e[0], "error": e[1][:MAX_TEXT]} for e in errors[: self.n_cells]
                if type(e) is tuple and len(e) == 2 and type(e[0]) is int and 1 <= e[0] <= self.n_cells
                and type(e[1]) is str]
        self.last = (max(0, min(done, self.n_cells)), kept, blob)
        return True


def cells_phase(job: dict, close: list[int]) -> tuple[tuple | None, dict | None]:
    """Fork the cells' process and read its frames: (the last whole frame, how it ended when it did not finish)."""
    def work(w: int) -> None:
        os.open("/dev/null", os.O_RDONLY)  # descriptor 0 (closed): nothing to read
        run_cells(job["cells"], job["limits"]["cell_s"], w)

    n = len(job["cells"])
    pid, r = fork_reporting(work, close)
    frames = FrameReader(n)
    try:
        status, _, _ = collect(pid, r, frames.feed)
    finally:
        os.close(r)
    frames.finish()
    done = frames.last[0] if frames.last else 0
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and done == n:
        return frames.last, None
    end = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"code": os.WEXITSTATUS(status)}
    return frames.last, {"after": done, **end}


def definitions(frame: tuple | None) -> tuple[dict, list[str]]:
    """The carried namespace, and what could not be carried."""
    empty = {"__name__": "__main__"}
    if frame is None or not frame[2]:
        return empty, ["(nothing: the cells' process sent no definitions)"]
    try:
        return load(frame[2])
    except CarryError as e:
        return empty, [f"(nothing: {e})"]
    except Exception as e:  # the clean process stays up whatever the export holds
        return empty, [f"(nothing: the definitions could not be built: {type(e).__name__})"]


def cells_event(frame: tuple | None, ended: dict | None, missing: list[str]) -> dict:
    """The cells' report on the result channel, within what `records` reads."""
    return {"event": "cells", "errors": frame[1] if frame else [], "ended": ended,
            "not_carried": [m[:MAX_NAME] for m in missing[:1000]]}


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError("the job ended early")
        data += chunk
    return data


def read_item(fd: int) -> Any:
    """One length-prefixed JSON item of the job's second part, read exactly (nothing of the next one)."""
    n = int.from_bytes(_read_exact(fd, 8), "little")
    return json.loads(_read_exact(fd, n))


def _tests_phase(job: dict, ns: dict, forbidden: Any, emit: Callable[[dict], None], close: list[int]) -> None:
    fd = job["probes_fd"]
    probes: dict[str, Any] = {"__name__": "probes"}
    exec(compile(read_item(fd)["source"], "<probes>", "exec"), probes)
    budget = MAX_CHANNEL_OUTPUTS
    for _ in range(job["n_tests"]):
        test = read_item(fd)  # this test's seed only: the next ones are not in memory yet
        name, fn = test["name"], probes.get(test["name"])
        if not callable(fn):
            emit({"probe": name, "error": f"the assignment's probes.py defines no {name}"})
            continue
        gc.freeze()  # the clean process's objects stay out of the test's collections: its pages stay shared
        got = run_test(fn, ns, test["seed"], forbidden, set(test["watch"]), job["limits"]["probe_s"], close)
        if job["may_kill"]:
            confine.kill_others()
        for use in got.uses:
            emit({"use": use, "probe": name})
        size = len(json.dumps(got.outputs)) if got.error is None else 0
        if size > budget:
            got.error = "the outputs of the tests together are too large"
        budget -= size
        emit({"probe": name, "outputs": got.outputs} if got.error is None else {"probe": name, "error": got.error[:MAX_TEXT]})


def main() -> None:
    job = json.loads(sys.stdin.buffer.read())
    out = os.dup(1)  # the result channel; anything printed goes to stderr
    os.dup2(2, 1)
    emit = _emitter(out)
    forbidden = _setup(job)
    emit({"event": "start", "uid": os.getuid()})
    close = [0, out, job["probes_fd"]]
    gc.freeze()
    frame, ended = cells_phase(job, close)
    if job["may_kill"]:
        confine.kill_others()
    ns, missing = definitions(frame)
    emit(cells_event(frame, ended, missing))
    _tests_phase(job, ns, forbidden, emit, close)
    emit({"event": "done"})
    os._exit(0)


if __name__ == "__main__":
    main()
