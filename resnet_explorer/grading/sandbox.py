"""Run one untrusted notebook in its own sandbox, with limits, and read back its data.

The child (`resnet_explorer.grading.child`) gets, on stdin, the notebook's code cells, the
probe source, the probes' seeds and the library functions it may not call; it never sees
the hidden tests, the solution or the expected values, and it reports only data. What
holds it (`isolation.level`, measured once):

- bubblewrap namespaces where bwrap works: it sees only the interpreter, its packages and
  the package directory, its own tmpfs ``HOME``, ``/tmp``, ``/var/tmp``, ``/dev/shm``; no
  network; its PID namespace dies with it, so nothing it started survives;
- a cgroup per submission where the grader may make one: total memory, processes, CPU
  share and quota; its CPU time (all its processes) is what ``cpu_s`` limits;
- its own uid when the grader is root (it imports torch as root, sets its limits, then
  drops to a random uid above 200000: it cannot write the grader's files, nor signal or
  ptrace the grader or another child);
- rlimits on every process (CPU seconds, address space, file size, processes, no core
  files) and a soft per-cell and per-probe time limit (``SIGALRM``).

The parent measures the submission's CPU time (cgroup, or the processes of its PID
namespace or uid), kills it at ``cpu_s`` of CPU or ``wall_s`` of wall time, then kills
whatever is left of it and removes its files.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .isolation import SANDBOX_HOME, Level, bwrap_argv, level as isolation_level

MAX_RESULT_BYTES = 64 * 2**20
MAX_LOG_BYTES = 20_000
MAX_INT_DIGITS = 400  # a longer number in a record is malformed (Python's own limit is 4300)
POLL_S = 0.25
# joins the cgroups given as arguments (count, then the cgroup.procs files), then runs the rest
_JOIN = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; n=$((n - 1)); done; exec "$@"'


@dataclass
class Limits:
    """Per-submission limits.

    ``cpu_s``: CPU seconds of all the submission's processes together (and per process);
    ``wall_s``: wall-clock seconds, a backstop for a submission that sleeps;
    ``memory_mb``: all its processes' memory together where a cgroup holds them, and the
    address space of each process (``address_space_mb``, when given, sets that apart: a CUDA
    build of torch maps ~3.3 GB at import); ``cpus``: its CPU quota where a cgroup holds it;
    ``file_mb``: the largest file, and the size of each of its tmpfs (HOME, /tmp, …);
    ``nproc``: processes (per cgroup, or per uid); ``cell_s``, ``probe_s``: the soft limits of
    one cell and one hidden test, small beside ``cpu_s`` so that a function that never returns
    (one cell plus each test that calls it) leaves the other questions their time.
    """

    wall_s: float = 600.0
    cpu_s: int = 300
    memory_mb: int = 6144
    cell_s: float = 60.0
    probe_s: float = 20.0
    file_mb: int = 256
    nproc: int = 256
    cpus: float = 1.0
    address_space_mb: int | None = None

    def for_child(self) -> dict[str, Any]:
        return {"cpu_s": int(self.cpu_s), "memory_bytes": (self.address_space_mb or self.memory_mb) * 2**20,
                "file_bytes": self.file_mb * 2**20, "nproc": self.nproc,
                "cell_s": self.cell_s, "probe_s": self.probe_s}


@dataclass
class ChildResult:
    """What came back from one child: its records, how it ended, the tail of its output."""

    status: str  # ok | timeout | cpu-limit | memory-limit | crashed | exited-early
    probes: dict[str, dict] = field(default_factory=dict)  # name -> {"outputs": …} or {"error": …}
    cell_errors: list[dict] = field(default_factory=list)
    reason: str = ""
    log_tail: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_peak_mb: float | None = None


def isolation(mode: str = "auto") -> str:
    """How children are isolated on this machine, in one line."""
    return isolation_level(mode).describe()


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (kill(-1) as that uid), leftovers of a child included."""
    subprocess.run(["kill", "-9", "--", "-1"], user=uid, group=uid, extra_groups=[],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _remove_owned(uid: int, roots: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")) -> None:
    """Remove what ``uid`` left in the shared temporary folders (the fallback without a private tmpfs)."""
    for root in roots:
        try:
            entries = list(os.scandir(root))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def _read_capped(path: Path, limit: int, from_end: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path``: its first ones, or (``from_end``) its last ones."""
    with open(path, "rb") as f:
        if from_end:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
        return f.read(limit)


class TooLong:
    """A number of more than `MAX_INT_DIGITS` digits in a record (decoding it fails: malformed)."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<a number of {self.digits} digits>"


def _bounded_int(text: str) -> int | TooLong:
    return TooLong(len(text)) if len(text.lstrip("-")) > MAX_INT_DIGITS else int(text)


def parse_records(raw: bytes) -> tuple[dict[str, dict], list[dict], list[str]]:
    """(probe records by name, the cell errors, the events in order) from the child's result lines.

    A line that is not a JSON object (or holds a number too long to read) is skipped."""
    probes: dict[str, dict] = {}
    cell_errors: list[dict] = []
    events: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line, parse_int=_bounded_int)
        except (ValueError, RecursionError):
            continue
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("event"), str):
            events.append(rec["event"])
            if rec["event"] == "cells" and isinstance(rec.get("errors"), list):
                cell_errors = [e for e in rec["errors"] if isinstance(e, dict)]
        elif isinstance(rec.get("probe"), str):
            events.append("probe")
            probes.setdefault(rec["probe"], rec)  # the first record of a probe counts
    return probes, cell_errors, events


_parse_records = parse_records


class _Members:
    """The submission's live processes, found the best way this level allows."""

    def __init__(self, proc: subprocess.Popen, lvl: Level, group: Any, uid: int | None):
        self.proc, self.lvl, self.group, self.uid = proc, lvl, group, uid
        self.ns: str | None = None

    def find_namespace(self) -> None:
        if self.lvl.bwrap and self.ns is None:
            for kid in procs.children(self.proc.pid):  # bwrap's init, pid 1 of the sandbox
                self.ns = procs.pid_namespace(kid)

    def pids(self) -> list[int]:
        if self.group is not None:
            return sorted(self.group.pids())
        if self.ns is not None:
            return procs.in_namespace(self.ns)
        if self.uid is not None:
            return procs.of_uid(self.uid)
        return procs.in_session(self.proc.pid)

    def cpu_seconds(self) -> float:
        if self.group is not None:
            return self.group.cpu_seconds() - self.group.cpu_start
        return procs.cpu_seconds(self.pids())

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # bwrap itself: its sandbox's init dies with it
        except (ProcessLookupError, PermissionError):
            pass
        if self.group is not None:
            self.group.kill()
        if self.uid is not None:
            _kill_uid(self.uid)
        procs.kill_all(self.pids)


def run_notebook(cells: list[str], probes_source: str, tests: list[dict], limits: Limits,
                 workroot: Path | None = None, forbidden: dict[str, list[str]] | None = None,
                 sandbox: Level | None = None) -> ChildResult:
    """Run ``cells`` then the probes ``tests`` ([{"name", "seed", "question"}]) in a sandboxed child."""
    lvl = sandbox or isolation_level()
    root = Path(tempfile.mkdtemp(prefix="resnet-grade-", dir=workroot))
    os.chmod(root, 0o711)
    private = root / "parent"  # the child's output files: opened here, written by the child through its fds
    private.mkdir(mode=0o700)
    as_root = os.geteuid() == 0
    uid = 200_000 + secrets.randbelow(1_000_000_000) if as_root else None
    if lvl.bwrap:
        workdir = SANDBOX_HOME  # a tmpfs inside the sandbox
    else:
        work = root / "work"
        work.mkdir(mode=0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        workdir = str(work)
    job = json.dumps({"cells": cells, "probes": probes_source, "tests": tests, "forbidden": forbidden or {},
                      "limits": limits.for_child(), "uid": uid, "workdir": workdir})
    env = {"PATH": "/usr/bin:/bin" if lvl.bwrap else os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": workdir, "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-I", "-m", "resnet_explorer.grading.child"]
    if lvl.bwrap:
        cmd = bwrap_argv(lvl.bwrap, limits.file_mb * 2**20, as_root) + cmd
    group = None
    if lvl.cgroup is not None:
        group = lvl.cgroup.create(limits.memory_mb * 2**20, limits.nproc, limits.cpus)
        files = [str(f) for f in group.procs_files]
        cmd = ["/bin/sh", "-c", _JOIN, "sh", str(len(files)), *files, *cmd]
    start = time.monotonic()
    timed_out = over_cpu = False
    cpu = 0.0
    try:
        with open(private / "result", "wb") as res, open(private / "log", "wb") as log, \
                open(private / "job", "w+") as job_file:
            job_file.write(job)
            job_file.seek(0)
            proc = subprocess.Popen(cmd, stdin=job_file, stdout=res, stderr=log, cwd=root, env=env,
                                    start_new_session=True, close_fds=True)
            members = _Members(proc, lvl, group, uid)
            try:
                while True:
                    try:
                        proc.wait(timeout=POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    members.find_namespace()
                    cpu = max(cpu, members.cpu_seconds())
                    if cpu > limits.cpu_s:
                        over_cpu = True
                        break
                    if time.monotonic() - start > limits.wall_s:
                        timed_out = True
                        break
                cpu = max(cpu, members.cpu_seconds())
            finally:
                members.kill()
                proc.wait()
        seconds = time.monotonic() - start
        peak = group.memory_peak() if group is not None else None
        ooms = group.oom_kills() if group is not None else 0
        raw = _read_capped(private / "result", MAX_RESULT_BYTES)
        log_bytes = _read_capped(private / "log", 4 * 2**20, from_end=True)  # the tail is what tells
    finally:
        if group is not None:
            group.remove()
        if uid is not None and not lvl.bwrap:
            _remove_owned(uid)
        shutil.rmtree(root, ignore_errors=True)
    probes, cell_errors, events = parse_records(raw)
    tail = log_bytes.decode("utf-8", "replace")[-MAX_LOG_BYTES:]
    status, reason = _status(proc.returncode, bool(lvl.bwrap), events, probes, tests, limits,
                             timed_out, over_cpu, ooms, cpu, tail)
    return ChildResult(status, probes, cell_errors, reason, tail, seconds, round(cpu, 2),
                       None if peak is None else round(peak / 2**20, 1))


def _status(rc: int | None, via_bwrap: bool, events: list[str], probes: dict, tests: list[dict], limits: Limits,
            timed_out: bool, over_cpu: bool, ooms: int, cpu: float, tail: str) -> tuple[str, str]:
    """How the child ended: ``ok`` only when it exited 0 right after its last record, ``done``,
    with every probe reported (a forged ``done`` from the submission does not make it ok)."""
    if timed_out:
        return "timeout", f"killed after {limits.wall_s:g} s of wall time"
    if over_cpu:
        return "cpu-limit", f"killed after {cpu:.0f} s of CPU time (limit {limits.cpu_s} s, all its processes)"
    sig = -rc if rc is not None and rc < 0 else (rc - 128 if via_bwrap and rc is not None and 128 < rc < 160 else None)
    complete = bool(events) and events[-1] == "done" and all(t["name"] in probes for t in tests)
    if rc == 0 and complete:
        return "ok", ""
    if sig == signal.SIGKILL and ooms:
        return "memory-limit", (f"killed by the memory limit ({limits.memory_mb} MB for all its processes "
                                "together)")
    if sig in (signal.SIGXCPU, signal.SIGKILL) and "start" in events and \
            (sig == signal.SIGXCPU or cpu >= 0.9 * limits.cpu_s):
        return "cpu-limit", f"killed by the CPU-time limit ({limits.cpu_s} s) (signal {sig})"
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "crashed", f"killed by signal {name}"
    reason = f"the process exited (code {rc}) before finishing"
    if rc == 0:
        reason = "the process exited (code 0) without reporting every test"
    if "MemoryError" in tail or "out of memory" in tail:
        reason += "; it ran out of memory"
    return "exited-early", reason
