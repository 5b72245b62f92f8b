"""Run one untrusted notebook in its own process, with limits, and read back its data.

The child (`resnet_explorer.grading.child`) gets, on stdin, the notebook's code cells, the
probe source and the probes' seeds; it never sees the hidden tests, the solution or the
expected values, and it reports only data. Isolation, when the grader runs as root:

- its own uid (it starts as root, imports torch and the interpreter's modules, sets its
  limits, then drops to a random uid above 200000, so no file on the machine belongs to it and no other
  child shares it): it cannot write the hidden tests, the grader's code, the score table or
  another child's directory, nor signal or ptrace the grader or another child; it reads
  only what is world-readable (keep the instructor folder ``chmod go-rwx``);
- its own session and process group, a working directory of its own (``HOME``, ``TMPDIR``);
- limits (``resource``): CPU seconds, address space (``RLIMIT_AS``: a CUDA build of torch
  maps ~3.3 GB of virtual memory at import, so the limit counts that too), file size,
  processes; a soft per-cell and per-probe time limit (``SIGALRM``); and a wall-clock limit
  enforced by the parent, which then kills the process group *and every process of the
  child's uid* (so a daemonised grandchild does not survive).

Not root (a laptop): the same limits, but the child runs as the grader's user and could
write files that user can write; `isolation()` says so and the score table records it.
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

MAX_RESULT_BYTES = 64 * 2**20
MAX_LOG_BYTES = 20_000


@dataclass
class Limits:
    """Per-submission limits. ``memory_mb`` is address space (see the module doc)."""

    wall_s: float = 300.0
    cpu_s: int = 300
    memory_mb: int = 6144
    cell_s: float = 120.0
    probe_s: float = 60.0
    file_mb: int = 256
    nproc: int = 256

    def for_child(self) -> dict[str, Any]:
        return {"cpu_s": int(self.cpu_s), "memory_bytes": self.memory_mb * 2**20,
                "file_bytes": self.file_mb * 2**20, "nproc": self.nproc,
                "cell_s": self.cell_s, "probe_s": self.probe_s}


@dataclass
class ChildResult:
    """What came back from one child: its records, how it ended, the tail of its output."""

    status: str  # ok | timeout | cpu-limit | crashed | exited-early
    probes: dict[str, dict] = field(default_factory=dict)  # name -> {"outputs": …} or {"error": …}
    cell_errors: list[dict] = field(default_factory=list)
    reason: str = ""
    log_tail: str = ""
    seconds: float = 0.0


def isolation() -> str:
    """How children are isolated on this machine, in one line."""
    if os.geteuid() == 0:
        return "own uid per submission (root grader), rlimits, own session and directory"
    return ("same user as the grader (not root): rlimits, own session and directory, but the "
            "submission can write files this user can write")


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` (kill(-1) as that uid), leftovers of a child included."""
    subprocess.run(["kill", "-9", "--", "-1"], user=uid, group=uid, extra_groups=[],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _read_capped(path: Path, limit: int, from_end: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path``: its first ones, or (``from_end``) its last ones."""
    with open(path, "rb") as f:
        if from_end:
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
        return f.read(limit)


def _parse_records(raw: bytes) -> tuple[dict[str, dict], list[dict], set[str]]:
    probes: dict[str, dict] = {}
    cell_errors: list[dict] = []
    events: set[str] = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("event"), str):
            events.add(rec["event"])
            if rec["event"] == "cells" and isinstance(rec.get("errors"), list):
                cell_errors = [e for e in rec["errors"] if isinstance(e, dict)]
        elif isinstance(rec.get("probe"), str) and rec["probe"] not in probes:
            probes[rec["probe"]] = rec  # the first record of a probe counts
    return probes, cell_errors, events


def run_notebook(cells: list[str], probes_source: str, tests: list[dict], limits: Limits,
                 workroot: Path | None = None) -> ChildResult:
    """Run ``cells`` then the probes ``tests`` ([{"name", "seed"}]) in a sandboxed child."""
    root = Path(tempfile.mkdtemp(prefix="grade-", dir=workroot))
    os.chmod(root, 0o711)
    private = root / "parent"  # the child's output files: opened here, written by the child through its fds
    private.mkdir(mode=0o700)
    work = root / "work"
    work.mkdir(mode=0o700)
    as_root = os.geteuid() == 0
    uid = 200_000 + secrets.randbelow(1_000_000_000) if as_root else None
    if uid is not None:
        os.chown(work, uid, uid)
    job = json.dumps({"cells": cells, "probes": probes_source, "tests": tests,
                      "limits": limits.for_child(), "uid": uid, "workdir": str(work)})
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "TMPDIR": str(work),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    with open(private / "result", "wb") as res, open(private / "log", "wb") as log, \
            open(private / "job", "w+") as job_file:
        job_file.write(job)
        job_file.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "resnet_explorer.grading.child"], stdin=job_file,
            stdout=res, stderr=log, cwd=work, env=env, start_new_session=True, close_fds=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if uid is not None:
            _kill_uid(uid)
        proc.wait()
    seconds = time.monotonic() - start
    raw = _read_capped(private / "result", MAX_RESULT_BYTES)
    log_bytes = _read_capped(private / "log", 4 * 2**20, from_end=True)  # the tail is what tells
    shutil.rmtree(root, ignore_errors=True)
    probes, cell_errors, events = _parse_records(raw)
    tail = log_bytes.decode("utf-8", "replace")[-MAX_LOG_BYTES:]
    rc = proc.returncode
    if timed_out:
        status, reason = "timeout", f"killed after {limits.wall_s:g} s of wall time"
    elif "done" in events:
        status, reason = "ok", ""
    elif rc in (-signal.SIGXCPU, -signal.SIGKILL) and "start" in events:
        status, reason = "cpu-limit", f"killed by the CPU-time limit ({limits.cpu_s} s) or the system (signal {-rc})"
    elif rc is not None and rc < 0:
        status, reason = "crashed", f"killed by signal {signal.Signals(-rc).name}"
    else:
        status, reason = "exited-early", f"the process exited (code {rc}) before finishing"
        if "MemoryError" in tail or "out of memory" in tail:
            reason += "; it ran out of memory"
    return ChildResult(status, probes, cell_errors, reason, tail, seconds)
