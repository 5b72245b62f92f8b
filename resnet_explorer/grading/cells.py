"""The notebook's cells, run in a process of their own; after each, its definitions are sent on as data.

Forked by `child` from the clean process before any submitted code runs, this process gets
the cells and nothing else of the job: not the tests' source or seeds (they are read by the
clean process only after this one has ended), not the result channel. After every cell it
writes one frame to its pipe: the cells run so far, their errors, and the namespace as
`carry.export` makes it. Code of the notebook can write into that pipe too; the reader skips
what is not a frame, so that costs at most the definitions of the cell that did it. If the process dies in a cell (``os._exit``, a signal, a hard limit),
the tests still get the definitions made before that cell.

Soft limit of a cell (`cell_clock`): its CPU time (all threads of this process), or the time it
spends neither running nor waiting for a CPU (sleeping, blocked): a neighbour's load does
not count. Past it the cell raises `SoftTimeout` and fails alone.
"""

from __future__ import annotations

import marshal
import os
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

from .carry import export

MAX_MESSAGE = 600
FRAME_MARK = b"\x00resnet-explorer definitions\x00"  # where a frame starts: the reader finds it again after junk
FRAME_HEADER = len(FRAME_MARK) + 8


class SoftTimeout(Exception):
    """A cell ran (or waited) past its soft time limit."""


def busy_seconds(stat: str = "/proc/thread-self/schedstat") -> float | None:
    """Seconds this thread spent running or waiting for a CPU (``schedstat``), or None where it is not kept."""
    try:
        with open(stat, "rb") as f:
            run, wait = f.read().split()[:2]
        return (int(run) + int(wait)) / 1e9
    except (OSError, ValueError):
        return None


@contextmanager
def cell_clock(seconds: float) -> Iterator[None]:
    """Raise `SoftTimeout` in the code under it once it has used ``seconds`` of CPU, or idled for as long."""
    wall0, cpu0, busy0 = time.monotonic(), time.process_time(), busy_seconds()

    def check(signum: int, frame: Any) -> None:
        wall, cpu, busy = time.monotonic() - wall0, time.process_time() - cpu0, busy_seconds()
        idle = wall - (busy - busy0 if busy is not None and busy0 is not None else cpu)
        if cpu >= seconds:
            raise SoftTimeout(f"ran past its time limit ({seconds:g} s of CPU time)")
        if idle >= seconds:
            raise SoftTimeout(f"waited past its time limit ({seconds:g} s without running)")
        signal.setitimer(signal.ITIMER_REAL, max(0.05, seconds - max(cpu, idle)))

    previous = signal.signal(signal.SIGALRM, check)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else str.__getitem__(text, slice(0, MAX_MESSAGE - 1)) + "…"


def describe(e: BaseException) -> str:
    """``Name: message`` of an exception, whatever it does: a message that raises or is not a string,
    a class whose name lies, are shown as such instead of raising here."""
    try:
        name = type.__dict__["__name__"].__get__(type(e), type)
    except BaseException:
        name = "an exception"
    try:
        text = str(e)
        text = str.__getitem__(text, slice(0, MAX_MESSAGE)) if isinstance(text, str) else "(its message is not text)"
    except BaseException:
        text = "(its message cannot be shown)"
    return _clip(f"{name}: {text}".strip())


def strip_magics(source: str) -> str:
    """IPython magics and shell escapes are not Python: they are skipped, not run."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def frame(done: int, errors: list[tuple[int, str]], ns: dict) -> bytes:
    """One message to the clean process: cells run, their errors, the namespace (an export that fails is sent empty)."""
    try:
        blob = export(ns)
    except BaseException as e:
        errors = errors + [(done, f"the definitions could not be carried to the tests: {describe(e)}")]
        blob = b""
    body = marshal.dumps((done, tuple(errors), blob))
    return FRAME_MARK + len(body).to_bytes(8, "little") + body


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_cells(cells: list[str], cell_s: float, fd: int) -> None:
    """Run the cells in a fresh namespace, a soft limit each; a frame to ``fd`` after each one."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    errors: list[tuple[int, str]] = []
    _send(fd, frame(0, errors, ns))
    for i, source in enumerate(cells):
        try:
            with cell_clock(cell_s):
                exec(compile(strip_magics(source), f"<cell {i + 1}>", "exec"), ns)
        except BaseException as e:  # SystemExit, KeyboardInterrupt and timeouts included
            try:
                with cell_clock(min(cell_s, 10.0)):
                    errors.append((i + 1, describe(e)))
            except BaseException:
                errors.append((i + 1, "an exception whose message took too long to show"))
        try:
            with cell_clock(cell_s):
                data = frame(i + 1, errors, ns)
        except BaseException as e:
            data = frame(i + 1, errors + [(i + 1, f"the definitions could not be carried: {type(e).__name__}")], {})
        _send(fd, data)
