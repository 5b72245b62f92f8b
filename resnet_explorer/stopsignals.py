"""SIGINT and SIGTERM handled by one function while a block of code runs, then restored.

The training loop uses it to checkpoint where a signal lands; the job pool to pass a signal
on to every run it started. Only the main thread may set signal handlers, so elsewhere (a
notebook's background thread) the block runs with the handlers as they are."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator


@contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``handler`` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
