"""What the processes of one submission may not do to each other: trace, read another's memory, outlive a phase.

The grading child keeps what the submission must not reach (the tests' seeds and source, the
result channel) in a process that never runs submitted code; the cells and each test run in
processes forked from it. Set up in the child while it is still trusted, inherited by all:

- `forbid_tracing`: a seccomp filter that refuses ``ptrace``, ``process_vm_readv``/``writev`` and
  ``pidfd_getfd`` (and any syscall of another ABI, such as i386's on x86-64, through which those
  could be reached), so no process of the submission can stop, read or steer another one, nor
  bubblewrap's init;
- `not_dumpable`: ``/proc/<pid>/mem``, ``/fd`` and ``/environ`` of the child are closed to
  processes of the same uid;
- `kill_others`: after the cells and after each test, every other process the child may signal
  (in its PID namespace, or of its own uid), so nothing started there lives on into the next.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct

PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | 1
LD_ABS, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
X32_BIT = 0x40000000
# audit architecture, and its numbers of ptrace, process_vm_readv, process_vm_writev, pidfd_getfd
ARCHES = {"x86_64": (0xC000003E, (101, 310, 311, 438)), "aarch64": (0xC00000B7, (117, 270, 271, 438))}


def deny_filter(arch: int, denied: tuple[int, ...], x32: bool) -> bytes:
    """A classic-BPF seccomp program: ``denied`` syscalls and other ABIs get EPERM, the rest runs."""
    prog = [(LD_ABS, 0, 0, 4),  # seccomp_data.arch
            (JEQ, 1, 0, arch),
            (RET, 0, 0, RET_EPERM),
            (LD_ABS, 0, 0, 0)]  # seccomp_data.nr
    if x32:
        prog += [(JGE, 0, 1, X32_BIT), (RET, 0, 0, RET_EPERM)]
    for nr in denied:
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, RET_EPERM)]
    prog.append((RET, 0, 0, RET_ALLOW))
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl(*args: int | ctypes.c_void_p) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(*[a if isinstance(a, ctypes.c_void_p) else ctypes.c_ulong(a) for a in args]) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def forbid_tracing() -> str:
    """Install the filter in this process (and so in all it starts); '' when done, else why not."""
    machine = platform.machine()
    if machine not in ARCHES:
        return f"no seccomp filter for {machine}: processes of a submission may trace each other"
    arch, denied = ARCHES[machine]
    code = deny_filter(arch, denied, x32=machine == "x86_64")
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _Program(len(code) // 8, ctypes.addressof(buf))
    try:
        _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_void_p(ctypes.addressof(prog)), 0, 0)
    except (OSError, AttributeError) as e:
        return f"no seccomp filter ({e}): processes of a submission may trace each other"
    return ""


def not_dumpable() -> None:
    """Close this process's ``/proc`` entries (memory, descriptors) to processes of the same uid."""
    try:
        _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_others() -> None:
    """SIGKILL every process this one may signal, itself and init excepted (``kill(-1)``). Only where that
    set is the submission's own: a PID namespace, or an own uid."""
    try:
        os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
