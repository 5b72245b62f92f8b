"""Run several jobs at once, one OS process each, on the same device (``experiment --jobs N``).

A small net at the paper's batch leaves a GPU mostly idle (its step is launch-bound), so an
experiment's speed comes from training its nets side by side. Each job is a fresh Python
process (``python -m resnet_explorer.jobs JOBFILE``) that calls one library function, so a run
trained here goes through exactly the code of a run trained alone, and writes its own run
directory. The parent:

- starts up to ``n`` jobs at a time, each with ``cores // n`` CPU threads (``torch`` and
  OpenMP; at least one), so that on a CPU the jobs split the cores instead of fighting over
  them; a run trained alone with the same number of threads gives the same numbers bit for bit;
- sends each job's output to its own log file, and reports a job that fails (its one-line
  reason) without stopping the others;
- forwards SIGINT / SIGTERM (Ctrl-C) to every running job, so each checkpoints where it is
  (the engine's own signal handling), starts no more, and waits for them; a second Ctrl-C is
  forwarded again (the jobs then stop at once).

The jobs run in their own session (a terminal's Ctrl-C reaches them only through the parent,
once) and ask the kernel for SIGTERM when the parent dies (Linux), so none trains on orphaned.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .data.cpus import available_cpus
from .errors import UsageError, UserError
from .safeio import NOFOLLOW
from .stopsignals import on_stop_signals


@dataclass
class Job:
    """One process's work: ``target`` ("module:function") called with ``kwargs`` (JSON)."""

    name: str
    target: str
    kwargs: dict[str, Any]
    log: Path  # the job's stdout and stderr are appended here


@dataclass
class Outcome:
    """How a job ended: ``done``, ``failed`` (``error`` says why, in one line) or
    ``interrupted`` (stopped by a forwarded signal; its run checkpointed)."""

    name: str
    status: str
    error: str | None = None
    value: Any = None
    returncode: int = 0
    seconds: float = 0.0


def threads_per_job(n: int) -> int:
    """The CPU threads each of ``n`` simultaneous jobs gets: this machine's cores split evenly."""
    return max(1, available_cpus() // max(1, n))


def check_jobs(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"--jobs {n!r} is invalid: use the number of runs to train at once (1 or more)")
    return n


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen
    result: Path
    started: float
    signalled: bool = False
    log_fd: int = field(default=-1)


GRACE = 30.0  # seconds a job has to checkpoint and exit after a forwarded signal, before SIGKILL


def run_jobs(jobs: Sequence[Job], n: int, log: Callable[[str], None] = print,
             on_done: Callable[[Outcome], None] | None = None, poll: float = 0.05,
             watch: Path | None = None) -> tuple[list[Outcome], str | None]:
    """Run ``jobs``, at most ``n`` at a time; ``on_done`` hears each as it ends. Returns the
    outcomes (in ``jobs``' order; a job never started because of a signal is left out) and the
    name of the signal that stopped the pool (None when it ran to the end). The pool never
    outlives its jobs by more than `GRACE` seconds after a signal: a job that has not exited
    by then is killed. When ``watch`` (the folder the jobs write into) is removed, the running
    jobs are stopped and the pool ends with a one-line `UsageError`."""
    n = check_jobs(n)
    for job in jobs:  # before any starts: a log that cannot be written stops nothing half-way
        _check_log(job.log)
    threads = threads_per_job(min(n, len(jobs)))
    pending, running, outcomes = list(jobs), [], {}
    stop: list[str] = []
    deadline: list[float] = []
    folder = _identity(watch)

    def forward(signum: int, frame: Any) -> None:
        stop.append(signal.Signals(signum).name)
        deadline[:] = [time.monotonic() + GRACE]
        _signal_all(running, signal.SIGINT)

    with tempfile.TemporaryDirectory(prefix="resnet-explorer-jobs-") as tmp, on_stop_signals(forward):
        try:
            while running or (pending and not stop):  # after a signal, nothing new starts
                while pending and len(running) < n and not stop:
                    job = pending.pop(0)
                    running.append(_start(job, Path(tmp), threads))
                    log(f"{job.name}: started (pid {running[-1].proc.pid}, {threads} CPU thread"
                        f"{'s' if threads > 1 else ''}; log {job.log})")
                time.sleep(poll)
                for r in [r for r in running if r.proc.poll() is not None]:
                    running.remove(r)
                    os.close(r.log_fd)
                    outcome = _outcome(r)
                    outcomes[r.job.name] = outcome
                    if on_done is not None:
                        on_done(outcome)
                if deadline and time.monotonic() > deadline[0]:
                    _signal_all(running, signal.SIGKILL)  # it had its chance to checkpoint
                if folder is not None and running and _identity(watch) != folder:
                    raise UsageError(f"{watch} was removed while its runs trained: they are stopped; "
                                     "run the experiment again into a folder that stays")
        except BaseException:  # the parent itself failed: let every running job checkpoint first
            _signal_all(running, signal.SIGINT)
            _reap(running, GRACE)
            raise
    return [outcomes[j.name] for j in jobs if j.name in outcomes], (stop[0] if stop else None)


def _identity(folder: Path | None) -> tuple[int, int] | None:
    """A folder's (device, inode), or None when it is not there (or not asked)."""
    if folder is None:
        return None
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _signal_all(running: list[_Running], sig: int) -> None:
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            r.proc.send_signal(sig)
            r.signalled = True


def _reap(running: list[_Running], grace: float) -> None:
    """Wait for every running job, killing those still alive after ``grace`` seconds."""
    end = time.monotonic() + grace
    for r in running:
        try:
            r.proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        os.close(r.log_fd)


def _check_log(path: Path) -> None:
    """A job's log is written in a folder that may be shared: never through a planted link."""
    for p in (path.parent, path):
        if p.is_symlink():
            raise UsageError(f"{p} is a link: remove it (a job's log is written there, never through a link)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {path.parent} for the jobs' logs ({e.strerror}): "
                         "choose another --out") from None


def _start(job: Job, tmp: Path, threads: int) -> _Running:
    spec = tmp / f"{len(list(tmp.iterdir()))}-job.json"
    result = spec.with_name(spec.name.replace("-job", "-result"))
    spec.write_text(json.dumps({"target": job.target, "kwargs": job.kwargs, "threads": threads,
                                "result": str(result), "parent": os.getpid()}))
    try:  # never through a planted link
        fd = os.open(job.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, 0o644)
    except OSError as e:
        raise UsageError(f"cannot write the job log {job.log} ({e.strerror}): remove what is there, "
                         "or choose another --out") from None
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_explorer.jobs", str(spec)], stdin=subprocess.DEVNULL,
                            stdout=fd, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return _Running(job, proc, result, time.perf_counter(), log_fd=fd)


def _outcome(r: _Running) -> Outcome:
    seconds = time.perf_counter() - r.started
    try:
        result = json.loads(r.result.read_text())
    except (OSError, ValueError):
        result = {}
    code = r.proc.returncode
    if code == 0 and result.get("ok"):
        return Outcome(r.job.name, "done", value=result.get("value"), seconds=seconds)
    if code < 0:
        error = f"killed by {signal.Signals(-code).name}" + ("" if r.signalled else " (out of memory?)")
    else:
        error = result.get("error") or _last_line(r.job.log) or f"exit status {code}"
    status = "interrupted" if r.signalled else "failed"
    return Outcome(r.job.name, status, error=error, returncode=code, seconds=seconds)


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""
    return ""


# -- the job process ------------------------------------------------------------------------------
def _die_with_parent(parent: int) -> None:
    """SIGTERM (so the run checkpoints) when the parent dies; Linux only, else nothing."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """One job: ``python -m resnet_explorer.jobs JOBFILE`` (written by `run_jobs`)."""
    path = (argv if argv is not None else sys.argv[1:])[0]
    job = json.loads(Path(path).read_text())
    result = Path(job["result"])
    _die_with_parent(job["parent"])
    import torch

    torch.set_num_threads(job["threads"])
    module, func = job["target"].split(":")
    try:
        value = getattr(importlib.import_module(module), func)(**job["kwargs"])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        result.write_text(json.dumps({"ok": False, "error": str(e).splitlines()[0]}))
        return 2
    except Exception as e:  # a bug or an unexpected failure: the traceback goes to the job's log
        traceback.print_exc()
        words = str(e).splitlines()[0] if str(e) else ""
        result.write_text(json.dumps({"ok": False, "error": f"{type(e).__name__}: {words}"}))
        return 1
    result.write_text(json.dumps({"ok": True, "value": value}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
