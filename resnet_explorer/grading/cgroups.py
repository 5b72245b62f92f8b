"""One cgroup per submission: its memory, processes and CPU share counted together, and killed whole.

rlimits are per process: a submission that forks gets the limits again in every child.
A cgroup holds all of a submission's processes, whatever they do (``setsid``, double fork),
so its total memory (RSS, page cache, files in its tmpfs), its number of processes and its
CPU time and share are limited and measured as one, and it is killed whole at the end.

Two layouts, found from ``/proc/self/mountinfo`` and ``/proc/self/cgroup``:

- cgroup v2 (one hierarchy; most systemd systems): a submission's group is created under
  the grader's own group when that group is delegated to it (``systemd-run --user --scope
  -p Delegate=yes resnet-explorer grade …``; the grader first moves itself into a leaf, the
  "no internal processes" rule) or, for root, at the top of the hierarchy;
- cgroup v1 (one hierarchy per controller; older and hybrid systems): one group per
  controller (memory, cpu, cpuacct, pids, freezer), under the grader's own group in each.

`factory()` probes once (creates and removes a group) and returns None where the grader
may not create groups: grading then falls back to rlimits alone (`isolation` says so).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import GradingError

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")
PREFIX = "resnet-grade-"


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def mounts(mountinfo: str) -> tuple[Path | None, dict[str, Path]]:
    """(the cgroup2 mount, {v1 controller: its mount}) from the text of /proc/self/mountinfo."""
    v2, v1 = None, {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        point, fstype, options = Path(fields[4]), rest[0], rest[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = point
        elif fstype == "cgroup":
            for c in options:
                if c in V1_CONTROLLERS:
                    v1.setdefault(c, point)
    return v2, v1


def own_groups(proc_cgroup: str) -> tuple[str | None, dict[str, str]]:
    """(the v2 path, {v1 controller: path}) of a process, from the text of /proc/<pid>/cgroup."""
    v2, v1 = None, {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c in V1_CONTROLLERS:
                v1[c] = path
    return v2, v1


@dataclass
class Cgroup:
    """One submission's group: ``dirs`` maps a controller (v1) or ``"v2"`` to its directory."""

    version: int
    dirs: dict[str, Path]
    cpu_start: float = 0.0
    _oom_start: int = field(default=0, repr=False)

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid into to join (one per hierarchy)."""
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files:
            try:
                found |= {int(p) for p in _read(f).split()}
            except (OSError, ValueError):
                pass
        return found

    def cpu_seconds(self) -> float:
        """CPU time used by all the group's processes, dead ones included."""
        try:
            if self.version == 2:
                for line in _read(self.dirs["v2"] / "cpu.stat").splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
            elif "cpuacct" in self.dirs:
                return int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            pass
        return 0.0

    def memory_peak(self) -> int | None:
        """The most memory the group held at once, in bytes (None where the kernel does not say)."""
        d, name = (self.dirs.get("v2"), "memory.peak") if self.version == 2 else \
            (self.dirs.get("memory"), "memory.max_usage_in_bytes")
        try:
            return int(_read(d / name)) if d else None
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How often the kernel killed a process of the group for going over its memory."""
        try:
            if self.version == 2:
                text = _read(self.dirs["v2"] / "memory.events")
            else:
                text = _read(self.dirs["memory"] / "memory.oom_control")
            for line in text.splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1]) - self._oom_start
        except (OSError, ValueError, KeyError):
            pass
        return 0

    def kill(self, wait_s: float = 10.0) -> bool:
        """SIGKILL every process of the group until none is left; True when it is empty."""
        v2_kill = self.dirs.get("v2", Path("/nonexistent")) / "cgroup.kill"
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + wait_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            if self.version == 2 and v2_kill.exists():
                try:
                    _write(v2_kill, "1")
                except OSError:
                    pass
            else:
                if freezer:  # frozen, a fork bomb cannot outrun the loop
                    try:
                        _write(freezer / "freezer.state", "FROZEN")
                    except OSError:
                        pass
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                if freezer:
                    try:
                        _write(freezer / "freezer.state", "THAWED")
                    except OSError:
                        pass
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left, then remove the group's directories."""
        self.kill()
        for d in dict.fromkeys(self.dirs.values()):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


@dataclass
class Factory:
    """Where submission groups are made: ``parents`` maps a controller (v1) or ``"v2"`` to a directory."""

    version: int
    parents: dict[str, Path]

    def describe(self) -> str:
        names = V2_CONTROLLERS if self.version == 2 else tuple(self.parents)
        return f"cgroup v{self.version} per submission ({', '.join(names)})"

    def create(self, memory_bytes: int, pids: int, cpus: float) -> Cgroup:
        """A new group with these limits: total memory (no swap), processes, CPU share and quota."""
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        dirs = {c: p / name for c, p in self.parents.items()}
        made: list[Path] = []
        try:
            for d in dict.fromkeys(dirs.values()):
                d.mkdir(mode=0o755)
                made.append(d)
            group = Cgroup(self.version, dirs)
            period = 100_000
            quota = max(1000, int(cpus * period))
            if self.version == 2:
                d = dirs["v2"]
                _write(d / "memory.max", str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                _write(d / "pids.max", str(pids))
                _write(d / "cpu.weight", "100")
                _write(d / "cpu.max", f"{quota} {period}")
            else:
                _write(dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
                if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                    try:
                        _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(memory_bytes))
                    except OSError:  # swap accounting off in the kernel
                        pass
                _write(dirs["pids"] / "pids.max", str(pids))
                _write(dirs["cpu"] / "cpu.shares", "1024")
                _write(dirs["cpu"] / "cpu.cfs_period_us", str(period))
                _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            group._oom_start = group.oom_kills()
            group.cpu_start = group.cpu_seconds()
            return group
        except OSError as e:
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise GradingError(f"cannot make a cgroup for a submission ({e.strerror or e}: {e.filename}): "
                               "free the cgroup controllers, or grade with --sandbox rlimits") from None


def _v2_factory(mount: Path, own: str) -> Factory | None:
    base = mount / own.lstrip("/")
    wanted = set(V2_CONTROLLERS)
    candidates = []
    if os.geteuid() == 0:
        candidates.append(mount)  # root: beside the system's own slices
    candidates.append(base)
    for parent in candidates:
        try:
            if not wanted <= set(_read(parent / "cgroup.controllers").split()):
                continue
            enabled = set(_read(parent / "cgroup.subtree_control").split())
            if not wanted <= enabled:
                if parent == base:  # a delegated group: move the grader into a leaf first
                    leaf = base / f"{PREFIX}grader"
                    leaf.mkdir(exist_ok=True)
                    _write(leaf / "cgroup.procs", str(os.getpid()))
                _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
            return Factory(2, {"v2": parent})
        except OSError:
            continue
    return None


def _v1_factory(mount_points: dict[str, Path], own: dict[str, str]) -> Factory | None:
    needed = ("memory", "cpu", "pids")
    if not all(c in mount_points and c in own for c in needed):
        return None
    parents = {c: mount_points[c] / own[c].lstrip("/") for c in V1_CONTROLLERS if c in mount_points and c in own}
    if not all(os.access(p, os.W_OK) for p in parents.values()):
        return None
    return Factory(1, parents)


@cache
def factory() -> Factory | None:
    """Where this grader can make submission groups (probed once: one group made and removed), or None."""
    try:
        v2_mount, v1_mounts = mounts(_read(Path("/proc/self/mountinfo")))
        v2_own, v1_own = own_groups(_read(Path("/proc/self/cgroup")))
    except OSError:
        return None
    found = None
    if v2_mount is not None and v2_own is not None and not v1_mounts.get("memory"):
        found = _v2_factory(v2_mount, v2_own)
    if found is None and v1_mounts:
        found = _v1_factory(v1_mounts, v1_own)
    if found is None:
        return None
    try:
        found.create(64 * 2**20, 8, 1.0).remove()
    except OSError:
        return None
    return found
