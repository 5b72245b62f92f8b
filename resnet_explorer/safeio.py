"""Files written safely into folders that others share: atomic writes that never follow a
planted link, directories made with a one-line error, and one writer per directory.

`atomic_write` writes a temporary file and renames it over the target, so a reader, a
crash or a full disk never leaves half a file. `RunLock` takes an exclusive ``flock`` on
``DIR/.lock`` without waiting; a second process (or a second training thread of the same
notebook) that asks for it gets one line naming the directory and the holder (pid, host,
start time, command). Because the lock
belongs to the open file, not to the file's existence, a ``kill -9`` never leaves a stale
lock: the next writer simply gets it. The file stays in the directory between runs.
On systems without ``fcntl`` (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import TrainingError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # files we create in a run directory never follow a planted link
LOCK_NAME = ".lock"
PathLike = str | os.PathLike


def atomic_write(path: PathLike, content: bytes | Callable[[Any], None]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to a temporary file,
    then rename it over ``path``: readers never see a half-written file.

    The temporary file has a private random name and is created with ``O_EXCL|O_NOFOLLOW``, so
    in a shared folder a link planted at ``path`` or at a guessed temporary name is never
    followed; the rename replaces a link at ``path`` instead of writing through it. On failure
    (a full disk) it is removed, the old file is left as it was, and the `OSError` names it."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            content(f) if callable(content) else f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # say which file could not be written
            raise OSError(e.errno, e.strerror, str(tmp)) from None
        raise
    return path


def write_json(path: PathLike, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


# -- reading files others may have planted --------------------------------------------------------
MAX_RECORD = 16 * 2**20  # a record (spec, recipe, data, env, manifest, analysis) larger than this is not ours
MAX_DEPTH = 64  # nesting of a JSON record
MAX_INT = 2**63  # integers in a record (seeds, iterations, sizes) fit 64 bits


class UnsafeFile(ValueError):
    """A file that is not what it should be (a FIFO, a device, too large, not strict JSON);
    the message says what it is, without the path (the caller names the file)."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


@contextlib.contextmanager
def open_regular(path: PathLike) -> Iterator[Any]:
    """``path`` open for reading in binary, only if it is a regular file (links followed): a
    FIFO, device or socket put in its place is refused at once (`UnsafeFile`), never waited
    on. `FileNotFoundError` and other `OSError`s pass through."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(next((what for test, what in _KINDS if test(mode)), "not a regular file"))
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_regular(path: PathLike, limit: int = MAX_RECORD) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (`open_regular`; else `UnsafeFile`)."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFile(f"larger than {limit:,} bytes")
    return data


def parse_json(data: bytes | str, allow_nan: bool = False) -> Any:
    """Strict JSON (`UnsafeFile` saying why not): UTF-8, at most `MAX_DEPTH` levels of
    nesting, integers of at most 64 bits, and no NaN or Infinity unless ``allow_nan``."""
    def refuse(token: str) -> Any:
        raise UnsafeFile(f"it holds {token}, which strict JSON has not")

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = json.loads(text, parse_constant=None if allow_nan else refuse)
    except UnicodeDecodeError:
        raise UnsafeFile("not UTF-8 text") from None
    except RecursionError:
        raise UnsafeFile(f"nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as e:
        raise UnsafeFile("not JSON (empty)" if not text.strip() else f"not JSON: {e}") from None
    except UnsafeFile:
        raise
    except ValueError as e:  # an integer of thousands of digits
        raise UnsafeFile(f"not JSON a reader can use ({str(e).split(';')[0]})") from None
    _check_tree(obj, allow_nan)
    return obj


def _check_tree(obj: Any, allow_nan: bool = False) -> None:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UnsafeFile(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, int) and not isinstance(item, bool) and not -MAX_INT <= item < MAX_INT:
            raise UnsafeFile(f"it holds an integer of {len(str(abs(item)))} digits")
        if isinstance(item, float) and not allow_nan and not math.isfinite(item):
            raise UnsafeFile(f"it holds {item}, which strict JSON has not")
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]


def read_record(path: PathLike) -> Any:
    """A JSON record read strictly (`read_regular`, `parse_json`): `FileNotFoundError` when
    it is missing, `UnsafeFile` (why) or `OSError` when it cannot be used."""
    return parse_json(read_regular(path))


def read_json(path: PathLike) -> Any | None:
    """The JSON in ``path``, or None when it is missing, unreadable or not strict JSON (a
    FIFO or device in its place is never waited on)."""
    try:
        return read_record(path)
    except (OSError, UnsafeFile):
        return None


def io_error_words(e: OSError) -> str:
    """An I/O error as what to do: a full or read-only disk, or a file that cannot be read."""
    where = f" {e.filename}" if e.filename else " the run"
    if e.filename is None or e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return f"cannot write{where} ({e.strerror or e}): free the disk, or choose a writable --out"
    return f"cannot read or write{where} ({e.strerror})"


def make_dir(path: Path) -> Path:
    """``path`` as a directory (created with its parents); one line when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TrainingError(f"{path} is a file, not a directory: choose another --out") from None
    except NotADirectoryError:
        raise TrainingError(f"{path}: a folder on its way is a file, not a directory: choose another --out") from None
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
        for _ in range(100):  # retried only when the last holder removed the file under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileNotFoundError:  # the folder itself was removed by the last holder
                make_dir(self.directory)
                continue
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
            if self._still_there(fd):
                break
            os.close(fd)
        else:
            raise TrainingError(f"{self.directory}: its lock file keeps disappearing: choose another --out")
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv).replace("\n", " ")[:300]}
        os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return self

    def _still_there(self, fd: int) -> bool:
        """Whether the locked file is still the one at our path (a holder that removes the
        folder it left unused deletes the file while holding it: then we must take the new one)."""
        try:
            st, ours = os.stat(self.path, follow_symlinks=False), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return (f"pid {info['pid']} on {info['host']} since {info['since']}: "
                    f"{info.get('command') or '(python)'}")
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def release(self, remove_if_unused: bool = False) -> None:
        """Drop the lock; with ``remove_if_unused``, first remove the directory if it holds
        nothing but the lock file (a run refused before it wrote anything leaves no trace)."""
        if self.fd is None:
            return
        if remove_if_unused:
            try:
                if {p.name for p in self.directory.iterdir()} == {LOCK_NAME}:
                    self.path.unlink()
                    self.directory.rmdir()
            except OSError:
                pass
        else:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the file drops the lock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()
