"""The dashboard's training thread: what it shows on, and a wait that keeps the page working.

`Training` is one thread training into one ``out`` folder, with its Stop and the dashboards
that show it. `Training.wait` waits for it; inside a Jupyter kernel it handles the page's
messages meanwhile (jupyter-ui-poll: widget clicks are processed, cells that come later in a
Run All wait their turn), so a Stop clicked during a waiting cell stops the training.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..runs import load_run_config

POLL_S = 0.05  # how often `wait` looks at the thread and handles the page's events


def ui_events_here() -> Any:
    """jupyter-ui-poll's event pump inside a Jupyter kernel; None elsewhere (a script, pytest) or
    without the package (then `Training.wait` just joins the thread)."""
    try:
        from IPython import get_ipython
        from jupyter_ui_poll import ui_events
    except ImportError:
        return None
    shell = get_ipython()
    return ui_events() if shell is not None and getattr(shell, "kernel", None) is not None else None


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
        """Until the thread ends (or ``timeout`` seconds), handling the page's events meanwhile
        inside a kernel (`ui_events_here`); elsewhere it joins the thread."""
        events = ui_events_here()
        if events is None:
            self.thread.join(timeout)
            return
        end = None if timeout is None else time.monotonic() + timeout
        with events as poll:
            while self.alive and (end is None or time.monotonic() < end):
                poll(20)  # up to 20 of the page's messages: a click on Stop among them
                self.thread.join(POLL_S)


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
            ends.append(load_run_config(d)[1].max_iters)
        except UserError:
            continue
    return ends
