"""One hidden test of one submission, in a process of its own forked from the clean one.

The clean process (`child`) holds the carried definitions, the tests' source and the result
channel, and never runs submitted code. For each test it forks (`run_test`): the fork closes
everything it must not reach, sets its CPU limit, arms the call tracer (`integrity.Watch`),
runs the probe on the notebook's definitions and writes, on its own pipe, each forbidden use
the moment it happens and then one line with its outputs or its error (`probe_main`). The clean
process reads that pipe as hostile data (`records.test_line`), stops a test that runs past its
CPU limit or waits past it (`collect`), kills whatever the test started, and reports the
test on the result channel itself, under the test's name: what one test's code does (raise,
return a value that cannot be written, crash, exit, loop, write into its pipe) fails that test only.
"""

from __future__ import annotations

import base64
import json
import math
import os
import resource
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import procs
from .cells import busy_seconds, describe
from .integrity import TAMPERED, Forbidden, Watch
from .records import MAX_DIGITS, MAX_LINE, Violation, parse_line, test_line

MAX_TEST_OUTPUT = 16 * 2**20
POLL_S = 0.05


def _bigint(value: int) -> dict:
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else math.floor(math.log10(abs(value))) + 1
    return {"__bigint__": digits}


def encode(value: Any, depth: int = 0) -> Any:
    """Probe outputs as JSON the strict reader takes: numbers, strings, lists, dicts; tensors and arrays
    as base64; non-finite floats and integers too long to write as tagged objects."""
    import numpy as np
    import torch

    if depth > 30:
        raise ValueError("the output is nested too deeply")
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype("<f8")
        elif arr.dtype.kind in "iub":
            arr = arr.astype("<i8")
        else:
            raise TypeError(f"cannot report an array of dtype {arr.dtype}")
        return {"__array__": arr.dtype.str, "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(value, np.generic):
        value = value.item()
    if type(value) is bool or value is None:
        return value
    if isinstance(value, int):
        value = int.__index__(value)
        return value if value.bit_length() < 3 * MAX_DIGITS else _bigint(value)
    if isinstance(value, float):
        value = float.__float__(value)
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, str):
        return str.__getitem__(value, slice(None))
    if isinstance(value, dict):
        return {str(k): encode(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, depth + 1) for v in value]
    raise TypeError(f"cannot report a {type(value).__name__}")


def _line(obj: dict) -> bytes:
    return (json.dumps(obj, allow_nan=False) + "\n").encode()


def probe_main(probe: Callable, ns: dict, seed: int, forbidden: Forbidden, watched: set[str], fd: int,
               cpu_s: float) -> None:
    """In the test's process: run the probe under the tracer (for the ``watched`` names), write its uses and its
    record to ``fd``, exit. The tracer stays armed until the process ends, so code of the submission that runs
    while the record is made (a ``__del__``, a lazy tensor) is traced too. With nothing to watch (no later
    test's question forbids anything) there is no tracer."""
    limit = max(1, math.ceil(cpu_s))
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    hard = limit + 1 if hard == resource.RLIM_INFINITY else min(limit + 1, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (min(limit, hard), hard))
    write = os.write

    def on_use(name: str) -> None:
        write(fd, _line({"use": name}))

    watch = Watch(forbidden, on_use, only=watched).__enter__() if watched else None
    try:
        line = _line({"outputs": encode(probe(ns, seed))})
        if len(line) > MAX_TEST_OUTPUT:
            line = _line({"error": f"the output is too large ({len(line) / 2**20:.0f} MB)"})
    except BaseException as e:  # what the answer raised, or an output that cannot be written
        line = _line({"error": describe(e)})
    if watch is not None and not watch.intact():
        on_use(TAMPERED)
    view = memoryview(line)
    while view:
        view = view[write(fd, view):]
    os._exit(0)


@dataclass
class TestOutcome:
    """What one test reported, as the clean process passes it on."""

    uses: list[str] = field(default_factory=list)
    outputs: Any = None
    error: str | None = None


def _reap(pid: int) -> tuple[int, float] | None:
    """(wait status, CPU seconds) once ``pid`` has ended, else None."""
    done, status, usage = os.wait4(pid, os.WNOHANG)
    return (status, usage.ru_utime + usage.ru_stime) if done else None


def _busy(pid: int) -> float | None:
    """Seconds ``pid`` ran or waited for a CPU (``schedstat``; where the kernel keeps none, its CPU time alone)."""
    busy = busy_seconds(f"/proc/{pid}/schedstat")
    if busy is None:
        fields = procs.stat_fields(pid)
        busy = sum(int(x) for x in fields[11:13]) / procs.TICK if fields else None
    return busy


def _drain(fd: int, sink: Callable[[bytes], None]) -> bool:
    """Read what ``fd`` holds now into ``sink``; False at its end."""
    while True:
        try:
            chunk = os.read(fd, 2**20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        sink(chunk)


def collect(pid: int, fd: int, sink: Callable[[bytes], None], idle_s: float | None = None) -> tuple[int, float, bool]:
    """Read ``fd`` into ``sink`` until ``pid`` ends: (its wait status, its CPU seconds, whether it was stopped
    for idling: ``idle_s`` spent neither running nor waiting for a CPU; its CPU time is its own rlimit's)."""
    os.set_blocking(fd, False)
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    watched = [fd] + ([pidfd] if pidfd is not None else [])
    start, busy0, idled = time.monotonic(), None, False
    try:
        while True:
            ready, _, _ = select.select(watched, [], [], POLL_S)
            if fd in ready and not _drain(fd, sink):
                watched.remove(fd)
            ended = _reap(pid)
            if ended is not None:
                if fd in watched:
                    _drain(fd, sink)
                return ended[0], ended[1], idled
            busy = _busy(pid) if idle_s is not None else None
            busy0 = busy if busy0 is None else busy0
            if busy is not None and time.monotonic() - start - (busy - busy0) > idle_s:
                idled = True
                os.kill(pid, signal.SIGKILL)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _no_record(status: int, cpu: float, idled: bool, limit_s: float) -> str:
    if idled:
        return f"SoftTimeout: waited past its time limit ({limit_s:g} s without running)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= math.ceil(limit_s)):
            return f"SoftTimeout: ran past its time limit ({limit_s:g} s of CPU time)"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        hint = " (a hard limit: memory, most likely)" if sig == signal.SIGKILL else ""
        return f"the test's process was killed by signal {name}{hint}"
    return f"the test's process exited (code {os.WEXITSTATUS(status)}) without a result"


def outcome(data: bytes, status: int, cpu: float, idled: bool, limit_s: float, known: set[str]) -> TestOutcome:
    """The test's pipe read as hostile data: its uses (known names only), its first record."""
    out = TestOutcome()
    for raw in data.split(b"\n")[:-1]:
        try:
            kind, value = test_line(parse_line(raw))
        except Violation as v:
            if out.outputs is None and out.error is None:
                out.error = f"the test's process wrote something that is not a result ({v})"
            continue
        if kind == "use":
            if (value in known or value == TAMPERED) and value not in out.uses:
                out.uses.append(value)
        elif out.outputs is None and out.error is None:
            out.outputs, out.error = (value, None) if kind == "outputs" else (None, value)
    if out.outputs is None and out.error is None:
        out.error = _no_record(status, cpu, idled, limit_s)
    return out


def fork_reporting(work: Callable[[int], None], close: list[int]) -> tuple[int, int]:
    """Fork a process that closes ``close`` (what it must not keep) and every other descriptor but stderr,
    runs ``work`` with the writing end of a new pipe and exits: (its pid, the reading end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for fd in close:
                os.close(fd)
            # whatever else this process holds (its parent's channels, files) is not the submission's to write
            os.closerange(3, w)
            os.closerange(w + 1, os.sysconf("SC_OPEN_MAX"))
            work(w)
        except BaseException:
            code = 70
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def run_test(probe: Callable, ns: dict, seed: int, forbidden: Forbidden, watched: set[str], limit_s: float,
             close: list[int]) -> TestOutcome:
    """Fork, run ``probe`` there (`probe_main`), read what it reports; ``watched``: the forbidden names to trace;
    ``close``: the descriptors it must not keep."""
    pid, r = fork_reporting(lambda w: probe_main(probe, ns, seed, forbidden, watched, w, limit_s), close)
    data = bytearray()

    def keep(chunk: bytes) -> None:
        if len(data) <= MAX_TEST_OUTPUT + MAX_LINE:
            data.extend(chunk)

    try:
        status, cpu, idled = collect(pid, r, keep, limit_s)
    finally:
        os.close(r)
    return outcome(bytes(data), status, cpu, idled, limit_s, watched)
