"""The dashboard's training thread: what it shows on, and a wait that keeps the page working.

`Training` is one thread training into one ``out`` folder, with its Stop and the dashboards
that show it. A notebook cell waits for it with ``await dashboard.wait_async()``: the kernel's
event loop runs meanwhile, so the page's widget messages are handled (ipykernel 7 dispatches
them beside an awaiting cell; an older ipykernel gets them through jupyter-ui-poll, in the
notebooks extra) and a Stop clicked during a Run All stops the training, while the Run All's
later cells wait their turn. `Training.wait` (scripts) just joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import TrainingError, UserError
from ..experiments import train_plan
from ..options import RunOptions
from ..plans import RunPlan
from ..runs import RunDir

POLL_S = 0.05  # how often `wait` looks at the thread and handles the page's events


def ui_pump() -> Any:
    """jupyter-ui-poll's event pump where the kernel needs it: an ipykernel that handles no
    widget message while a cell runs (before 7, ``kernel.do_one_iteration``). None in a newer
    kernel (it handles them beside an awaiting cell by itself), outside a kernel, or without
    the package."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None or not hasattr(kernel, "do_one_iteration"):
        return None
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:
        return None
    return ui_events()


@dataclass
class Training:
    """One training thread and what it shows on: the dashboards that display it (the one that
    started it, or the one that adopted it when its cell ran again), its Stop, the run it is on."""

    thread: threading.Thread
    out: Path
    stop: threading.Event = field(default_factory=threading.Event)
    current: Path | None = None  # the run being trained now
    shown_on: list = field(default_factory=list)  # the dashboards whose widgets it writes

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Until the thread ends (or ``timeout`` seconds). This holds the kernel: for scripts."""
        self.thread.join(timeout)

    async def wait_async(self, timeout: float | None = None) -> None:
        """Until the thread ends (or ``timeout`` seconds), giving the kernel's event loop back
        meanwhile: the page's widget messages (a click on Stop) are handled while a cell awaits
        this, and a Run All's later cells wait their turn."""
        end = None if timeout is None else time.monotonic() + timeout
        pump = ui_pump()
        if pump is None:
            while self.alive and (end is None or time.monotonic() < end):
                await asyncio.sleep(POLL_S)
            return
        async with pump as poll:
            while self.alive and (end is None or time.monotonic() < end):
                await poll(20)  # up to 20 of the page's messages: a click on Stop among them
                await asyncio.sleep(POLL_S)


def fmt_time(seconds: float) -> str:
    """Seconds as m:ss or h:mm:ss."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def same_dirs(dirs: Sequence[Path]) -> list[Path]:
    """``dirs`` without repeats (two spellings of one directory are one run), in order."""
    seen, out = set(), []
    for d in dirs:
        key = Path(d).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(d))
    return out


def run_ends(dirs: Sequence[Path]) -> list[int]:
    """The last iteration of each run (its recipe's), where its records say."""
    ends = []
    for d in dirs:
        try:
            ends.append(RunDir(d).config().recipe.max_iters)
        except UserError:
            continue
    return ends


def run_progress(d: Path) -> tuple[int, int] | None:
    """(last checkpoint's iteration, the recipe's end) of a run; None before it started."""
    run = RunDir(d)
    try:
        max_iters = run.config().recipe.max_iters
    except TrainingError:
        return None
    return run.iteration(), max_iters  # a hostile checkpoint raises: shown by the caller


def train_job(spec: Any, run_dir: Path, recipe: Any, data: str | None, options: RunOptions,
              should_stop: Callable[[int], bool], on_metrics: Callable[[dict], None]) -> bool:
    """One run of the dashboard's queue through the experiment runner's one code path of a run
    (`experiments.train_plan`: train, or resume, then analyse): a new run of ``spec`` and
    ``recipe`` on ``data``, or (``spec`` None) the run in ``run_dir`` continued on its records.
    Returns whether it reached its recipe's end."""
    run = RunDir(run_dir)
    if spec is None:
        config = run.config()
        plan, data, seed, state = RunPlan(run.path.name, config.spec, config.recipe), run.data_arg(), config.seed, \
            run.status().state
        if data is None:
            raise TrainingError(f"{run.path} does not record its data by name: resume it with train(..., resume=True)")
    else:
        plan, seed, state = RunPlan(run.path.name, spec, recipe), 0, "pending"
    done = train_plan(plan.to_dict(), data, str(run.path), state, seed, options, should_stop=should_stop,
                      on_metrics=on_metrics)
    return done["finished"]
