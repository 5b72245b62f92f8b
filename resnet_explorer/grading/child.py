"""The sandboxed side of grading: run one notebook's code, then the probes; return data only.

Started by `sandbox.run_notebook` as ``python -I -m resnet_explorer.grading.child`` (in a
bubblewrap sandbox where there is one), in its own session and working directory. It reads
one JSON job on stdin (the code cells, the probe source, the probe names, seeds and
questions, the library code each question may not call, the limits), imports torch and
resolves the forbidden code while still trusted, sets its resource limits, drops to its
own uid (a root grader), and only then runs the submitted code. Everything after the first submitted cell is untrusted: this process
only *reports data* (probe outputs as JSON with base64 arrays, one line each on the result
fd); it never judges. The trusted parent compares those outputs with the solution's.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

MAX_MESSAGE = 600


class SoftTimeout(Exception):
    """A cell or probe ran past its soft time limit (SIGALRM)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeout("ran past its time limit")


@contextmanager
def soft_timeout(seconds: float) -> Iterator[None]:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def set_limits(limits: dict[str, int]) -> None:
    """CPU seconds, address space, file size, processes, no core dumps (soft = hard)."""
    cpu = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("nproc"):
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"], limits["nproc"]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing


def encode(value: Any) -> Any:
    """Probe outputs as JSON: numbers, strings, lists, dicts; tensors/arrays as base64."""
    import numpy as np
    import torch

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
        return {"__array__": arr.dtype.str, "shape": list(arr.shape),
                "data": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    raise TypeError(f"cannot report a {type(value).__name__}")


def describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def strip_magics(source: str) -> str:
    """IPython magics and shell escapes are not Python: they are skipped, not run."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


# Imported while still trusted (and, for a root grader, still root): the interpreter may live
# where the submission's uid cannot read (e.g. /root/.pyenv), so a later first import would fail.
PRELOAD = (
    "abc argparse base64 bisect collections collections.abc contextlib copy csv dataclasses "
    "datetime decimal enum fractions functools glob hashlib heapq inspect io itertools json "
    "math numbers operator os pathlib pprint queue random re shutil statistics string struct "
    "tempfile textwrap time traceback types typing warnings weakref zlib "
    "numpy torch torch.nn torch.nn.functional torch.optim torch.utils.data "
    "resnet_explorer resnet_explorer.model resnet_explorer.count resnet_explorer.analysis "
    "resnet_explorer.train resnet_explorer.recipes resnet_explorer.data resnet_explorer.zoo "
    "resnet_explorer.experiments resnet_explorer.grading.checks resnet_explorer.grading.probing"
).split()


def preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


def main() -> None:
    job = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w")  # the result channel; the submission's prints go to stderr
    os.dup2(2, 1)

    def emit(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    import torch

    from .integrity import Watch, resolve

    torch.set_num_threads(1)
    preload()
    forbidden = {q: resolve(list(names)) for q, names in (job.get("forbidden") or {}).items()}
    set_limits(job["limits"])
    os.chdir(job["workdir"])
    if job.get("uid") is not None:  # started as root: become the submission's own uid for good
        os.chown(job["workdir"], job["uid"], job["uid"])
        os.setgroups([])
        os.setgid(job["uid"])
        os.setuid(job["uid"])
    emit({"event": "start", "uid": os.getuid()})
    ns: dict[str, Any] = {"__name__": "__main__"}
    errors = []
    for i, source in enumerate(job["cells"]):
        try:
            with soft_timeout(job["limits"]["cell_s"]):
                exec(compile(strip_magics(source), f"<cell {i + 1}>", "exec"), ns)
        except BaseException as e:  # SystemExit, KeyboardInterrupt and timeouts included
            errors.append({"cell": i + 1, "error": describe(e)})
    emit({"event": "cells", "errors": errors})
    probes: dict[str, Any] = {"__name__": "probes"}
    exec(compile(job["probes"], "<probes>", "exec"), probes)
    for probe in job["tests"]:
        name = probe["name"]
        watched = forbidden.get(probe.get("question"))
        watch = Watch(watched) if watched else None
        try:
            with soft_timeout(job["limits"]["probe_s"]):
                if watch:
                    with watch:
                        result = probes[name](ns, probe["seed"])
                else:
                    result = probes[name](ns, probe["seed"])
                record = {"probe": name, "outputs": encode(result)}
        except BaseException as e:
            record = {"probe": name, "error": describe(e)}
        if watch:
            record["uses"] = watch.report()
        emit(record)
    emit({"event": "done"})
    out.close()
    os._exit(0)


if __name__ == "__main__":
    main()
