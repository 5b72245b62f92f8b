"""A submission's processes found from ``/proc`` where no cgroup holds them: by PID namespace or uid.

Used when the grader may not make cgroups: a bubblewrap sandbox has its own PID namespace
(every process of the submission is in it, whatever it does), a root grader gives each
submission its own uid. Their CPU time is summed here (live processes, plus what their
reapers hold of the dead ones), so a submission that forks spinners is charged for all of them.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Callable, Iterator

TICK = os.sysconf("SC_CLK_TCK")


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def pid_namespace(pid: int) -> str | None:
    """The PID namespace of ``pid`` (``pid:[4026532…]``), or None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2:].decode().split()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for p in _pids():
        fields = stat_fields(p)
        if fields and fields[1] == str(pid):
            found.append(p)
    return found


def _alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return bool(fields) and fields[0] != "Z"  # a zombie is dead, waiting for its parent


def in_namespace(ns: str) -> list[int]:
    """The live processes of the PID namespace ``ns``."""
    return [p for p in _pids() if pid_namespace(p) == ns and _alive(p)]


def in_session(sid: int) -> list[int]:
    """The live processes of session ``sid`` (what a plain child keeps unless it calls setsid)."""
    found = []
    for p in _pids():
        fields = stat_fields(p)
        if fields and fields[3] == str(sid) and fields[0] != "Z":
            found.append(p)
    return found


def of_uid(uid: int) -> list[int]:
    """The live processes of ``uid``."""
    found = []
    for p in _pids():
        try:
            if os.stat(f"/proc/{p}").st_uid == uid and _alive(p):
                found.append(p)
        except OSError:
            pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids`` and of the dead children they reaped."""
    ticks = 0
    for p in pids:
        fields = stat_fields(p)
        if fields:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / TICK


def kill_all(members: Callable[[], list[int]], wait_s: float = 10.0) -> bool:
    """SIGKILL ``members()`` until it is empty; True when nothing is left."""
    deadline = time.monotonic() + wait_s
    while True:
        pids = members()
        if not pids:
            return True
        if time.monotonic() > deadline:
            return False
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)
