"""One writer per run directory: an OS file lock that the OS itself drops when the holder dies.

`RunLock` takes an exclusive ``flock`` on ``DIR/.lock`` without waiting. A second
process (or a second training thread of the same notebook) that asks for it gets one line
naming the directory and the holder (pid, host, start time, command). Because the lock
belongs to the open file, not to the file's existence, a ``kill -9`` never leaves a stale
lock: the next writer simply gets it. The file stays in the directory between runs.
On systems without ``fcntl`` (Windows) there is no lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import TrainingError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # files we create in a run directory never follow a planted link
LOCK_NAME = ".lock"


def make_dir(path: Path) -> Path:
    """``path`` as a directory (created with its parents); one line when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TrainingError(f"{path} is a file, not a directory: choose another --out") from None
    except OSError as e:
        raise TrainingError(f"cannot create the directory {path} ({e.strerror}): "
                            "choose a --out on a writable disk") from None
    return path


class RunLock:
    """The exclusive lock of one directory, held from `acquire` until `release` or death."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise TrainingError(f"cannot write in {self.directory} ({e.strerror}): "
                                "choose a --out on a writable disk") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._holder(fd)
                os.close(fd)
                raise TrainingError(f"{self.directory} is being written by another process ({holder}): "
                                    "wait for it to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv).replace("\n", " ")[:300]}
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return (f"pid {info['pid']} on {info['host']} since {info['since']}: "
                    f"{info.get('command') or '(python)'}")
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing the file drops the lock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
