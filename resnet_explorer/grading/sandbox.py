"""Run one untrusted notebook in its own sandbox, with limits, and read back its data.

The child (`resnet_explorer.grading.child`) gets, on stdin, the notebook's code cells and the
library functions it may not call, and on a second descriptor the probe source and the
probes' seeds, which it reads only after the cells have run in a process of their own; it
never sees the hidden tests, the solution or the expected values, and it reports only data,
read here by `records.read_stream`. Both job files are opened read-only for it and, like its
output files, have no name left on disk while it runs. What holds it (`isolation.level`, measured once):

- bubblewrap namespaces where bwrap works: it sees only the interpreter, its packages and
  the package directory, its own tmpfs ``HOME``, ``/tmp``, ``/var/tmp``, ``/dev/shm``; no
  network; its PID namespace dies with it, so nothing it started survives;
- a cgroup per submission where the grader may make one: total memory, processes, CPU
  share and quota; its CPU time (all its processes) is what ``cpu_s`` limits;
- its own uid when the grader is root (it imports torch as root, sets its limits, then
  drops to a random uid above 200000: it cannot write the grader's files, nor signal or
  ptrace the grader or another child);
- rlimits on every process (CPU seconds, address space, file size, processes, no core
  files) and a soft per-cell and per-test time limit (CPU time, or time spent not running).

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
from typing import Any, BinaryIO

from . import procs
from .isolation import SANDBOX_HOME, Level, bwrap_argv, level as isolation_level
from .records import Record, Stream, read_stream

MAX_RESULT_BYTES = 64 * 2**20
MAX_LOG_BYTES = 20_000
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
    one cell and one hidden test (its own CPU time, or time spent waiting without running: a
    neighbour's load counts for neither), small beside ``cpu_s`` so that a function that never
    returns (one cell plus each test that calls it) leaves the other questions their time.
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
    """What came back from one child: its checked report (`records.Stream`), how it ended, the tail of its output."""

    status: str  # ok | timeout | cpu-limit | memory-limit | crashed | exited-early | invalid
    stream: Stream = field(default_factory=Stream)
    reason: str = ""
    log_tail: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_peak_mb: float | None = None

    @property
    def probes(self) -> dict[str, Record]:
        return self.stream.records

    @property
    def cell_errors(self) -> list[dict]:
        return self.stream.cell_errors


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


def read_capped(f: BinaryIO, limit: int, from_end: bool = False) -> bytes:
    """At most ``limit`` bytes of the open file ``f``: its first ones, or (``from_end``) its last ones."""
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - limit) if from_end else 0)
    return f.read(limit)


def _private_file(folder: Path, name: str, content: bytes | None = None) -> BinaryIO:
    """A file with no name left on disk: read-only with ``content`` (a job), else empty and writable."""
    path = folder / name
    with open(path, "xb") as f:
        f.write(content or b"")
    handle = open(path, "rb" if content is not None else "r+b")
    path.unlink()
    return handle


def _job_items(probes_source: str, tests: list[dict], forbidden: dict[str, list[str]]) -> bytes:
    """The job's second part: length-prefixed JSON items, read one at a time by the child. Each test
    watches the code its own question and every later test's question may not run (a use that could
    only help a test already reported is not watched)."""
    items: list[dict] = [{"source": probes_source}]
    for i, t in enumerate(tests):
        watch = sorted({n for later in tests[i:] for n in forbidden.get(later.get("question"), [])}
                       | set(forbidden.get(t.get("question"), [])))
        items.append({"name": t["name"], "seed": t["seed"], "watch": watch})
    out = b""
    for item in items:
        data = json.dumps(item).encode()
        out += len(data).to_bytes(8, "little") + data
    return out


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


def _command(lvl: Level, limits: Limits, as_root: bool, group: Any) -> list[str]:
    cmd = [sys.executable, "-I", "-m", "resnet_explorer.grading.child"]
    if lvl.bwrap:
        cmd = bwrap_argv(lvl.bwrap, limits.file_mb * 2**20, as_root) + cmd
    if group is not None:
        files = [str(f) for f in group.procs_files]
        cmd = ["/bin/sh", "-c", _JOIN, "sh", str(len(files)), *files, *cmd]
    return cmd


def _watch(proc: subprocess.Popen, members: _Members, limits: Limits, start: float) -> tuple[float, bool, bool]:
    """Wait for the child, measuring its CPU time: (CPU seconds, over the CPU limit, over the wall limit)."""
    cpu = 0.0
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
                return cpu, True, False
            if time.monotonic() - start > limits.wall_s:
                return cpu, False, True
        return max(cpu, members.cpu_seconds()), False, False
    finally:
        members.kill()
        proc.wait()


def run_notebook(cells: list[str], probes_source: str, tests: list[dict], limits: Limits,
                 workroot: Path | None = None, forbidden: dict[str, list[str]] | None = None,
                 sandbox: Level | None = None) -> ChildResult:
    """Run ``cells`` then the probes ``tests`` ([{"name", "seed", "question"}]) in a sandboxed child."""
    lvl = sandbox or isolation_level()
    root = Path(tempfile.mkdtemp(prefix="resnet-grade-", dir=workroot))
    os.chmod(root, 0o711)
    private = root / "parent"  # the child's files, opened here, unlinked before it starts
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
    names = sorted({n for names in (forbidden or {}).values() for n in names})
    env = {"PATH": "/usr/bin:/bin" if lvl.bwrap else os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": workdir, "TMPDIR": workdir, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    group = None
    start = time.monotonic()
    try:
        with _private_file(private, "result") as res, _private_file(private, "log") as log, \
                _private_file(private, "probes", _job_items(probes_source, tests, forbidden or {})) as second:
            job = json.dumps({"cells": cells, "forbidden": names, "limits": limits.for_child(), "uid": uid,
                              "workdir": workdir, "probes_fd": second.fileno(), "n_tests": len(tests),
                              "may_kill": bool(lvl.bwrap) or uid is not None}).encode()
            with _private_file(private, "job", job) as first:
                if lvl.cgroup is not None:
                    group = lvl.cgroup.create(limits.memory_mb * 2**20, limits.nproc, limits.cpus)
                proc = subprocess.Popen(_command(lvl, limits, as_root, group), stdin=first, stdout=res, stderr=log,
                                        cwd=root, env=env, start_new_session=True, close_fds=True,
                                        pass_fds=(second.fileno(),))
            cpu, over_cpu, timed_out = _watch(proc, _Members(proc, lvl, group, uid), limits, start)
            seconds = time.monotonic() - start
            peak = group.memory_peak() if group is not None else None
            ooms = group.oom_kills() if group is not None else 0
            raw = read_capped(res, MAX_RESULT_BYTES)
            tail = read_capped(log, 4 * 2**20, from_end=True).decode("utf-8", "replace")[-MAX_LOG_BYTES:]
    finally:
        if group is not None:
            group.remove()
        if uid is not None and not lvl.bwrap:
            _remove_owned(uid)
        shutil.rmtree(root, ignore_errors=True)
    stream = read_stream(raw, [t["name"] for t in tests], len(cells))
    ending = Ending(proc.returncode, bool(lvl.bwrap), timed_out, over_cpu, ooms, cpu, tail)
    status, reason = child_status(stream, ending, limits)
    return ChildResult(status, stream, reason, tail, seconds, round(cpu, 2),
                       None if peak is None else round(peak / 2**20, 1))


@dataclass
class Ending:
    """How a child's process ended, as the parent saw it."""

    rc: int | None
    via_bwrap: bool = False
    timed_out: bool = False
    over_cpu: bool = False
    ooms: int = 0
    cpu: float = 0.0
    tail: str = ""

    @property
    def signal(self) -> int | None:
        rc = self.rc
        if rc is not None and rc < 0:
            return -rc
        return rc - 128 if self.via_bwrap and rc is not None and 128 < rc < 160 else None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _killed(sig: int | None, e: Ending, limits: Limits, started: bool) -> tuple[str, str] | None:
    if sig == signal.SIGKILL and e.ooms:
        return "memory-limit", f"killed by the memory limit ({limits.memory_mb} MB for all its processes together)"
    if sig in (signal.SIGXCPU, signal.SIGKILL) and started and (sig == signal.SIGXCPU or e.cpu >= 0.9 * limits.cpu_s):
        return "cpu-limit", f"killed by the CPU-time limit ({limits.cpu_s} s) (signal {sig})"
    if sig is not None:
        return "crashed", f"killed by signal {_signal_name(sig)}"
    return None


def _cells_ended(ended: dict, e: Ending, limits: Limits) -> tuple[str, str]:
    where = (f"in cell {ended['after'] + 1} (the later cells did not run; the tests ran on what the cells "
             "before it defined)")
    if "signal" in ended:
        status, reason = _killed(ended["signal"], e, limits, True) or ("crashed", "killed")
        return status, f"the cells' process was {reason} {where}"
    return "exited-early", f"the cells' process exited (code {ended['code']}) {where}"


def child_status(stream: Stream, e: Ending, limits: Limits) -> tuple[str, str]:
    """How the child ended: ``ok`` only when it exited 0 right after its report's end, every test reported
    and its cells all ran; ``invalid`` when its channel holds what the child does not write."""
    if stream.violation:
        return "invalid", f"its results channel holds something the grader did not write: {stream.violation}"
    if e.timed_out:
        return "timeout", f"killed after {limits.wall_s:g} s of wall time"
    if e.over_cpu:
        return "cpu-limit", f"killed after {e.cpu:.0f} s of CPU time (limit {limits.cpu_s} s, all its processes)"
    if e.rc == 0 and stream.done:
        return _cells_ended(stream.ended, e, limits) if stream.ended else ("ok", "")
    killed = _killed(e.signal, e, limits, "start" in stream.events)
    if killed:
        return killed
    reason = f"the process exited (code {e.rc}) before finishing"
    if e.rc == 0:
        reason = "the process exited (code 0) without reporting every test"
    if "MemoryError" in e.tail or "out of memory" in e.tail:
        reason += "; it ran out of memory"
    return "exited-early", reason
