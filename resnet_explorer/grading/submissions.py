"""The submissions folder read as hostile input: every entry a row, nothing followed out of the folder.

Each entry of the folder becomes one `Entry`: a notebook to grade (a regular file named
``*.ipynb``, any case, read through the folder's descriptor with ``O_NOFOLLOW``, so a
symbolic link, from an extracted zip say, is never followed to the solution or to
``/dev/zero``), or a row saying why it is not graded (a link, a folder, a device, another
kind of file, the solution itself by a hard link). Names are shown escaped (`shown`): a
newline, a control character or a byte that is not UTF-8 cannot fake a row or break the table;
and in one form (`display_names`: Unicode NFC, so ``café`` typed either way reads the same), with
a short digest of the name's bytes where two entries would read alike, so no row can pass
for another.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import GradingError
from .notebook import MAX_NOTEBOOK_BYTES


def shown(name: str) -> str:
    """``name`` printable and unambiguous: undecodable bytes as ``\\xff``, controls as ``\\n`` …, ``\\`` doubled."""
    out = []
    for ch in name:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def display_names(names: list[str]) -> list[str]:
    """Each name as rows show and key it: `shown`, in NFC, plus ``[digest]`` of its bytes while two read alike."""
    out = [unicodedata.normalize("NFC", shown(n)) for n in names]
    for _ in range(4):  # a name that itself ends like a digest collides once more at most
        counts = Counter(out)
        if max(counts.values(), default=1) == 1:
            break
        out = [d if counts[d] == 1 else f"{d} [{hashlib.sha256(os.fsencode(n)).hexdigest()[:10]}]"
               for d, n in zip(out, names)]
    return out


@dataclass
class Entry:
    """One entry of the submissions folder: its bytes when it is a notebook to grade, else why not."""

    name: str  # as the folder lists it
    data: bytes | None = None
    skipped: str = ""
    shown: str = ""  # as rows show it (`display_names`)

    def __post_init__(self) -> None:
        self.shown = self.shown or unicodedata.normalize("NFC", shown(self.name))


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def scan(folder: Path, solution: Path | None = None) -> list[Entry]:
    """Every entry of ``folder``, sorted by name; notebooks read (at most the size cap and one byte)."""
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise GradingError(f"cannot read the submissions folder {folder}: {e.strerror}") from None
    try:
        own = None
        if solution is not None:
            try:
                st = os.stat(solution)
                own = (st.st_dev, st.st_ino)
            except OSError:
                pass
        entries = [_entry(dfd, name, own) for name in sorted(os.listdir(dfd))]
        for e, display in zip(entries, display_names([e.name for e in entries])):
            e.shown = display
        return entries
    finally:
        os.close(dfd)


def _entry(dfd: int, name: str, solution: tuple[int, int] | None) -> Entry:
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError as e:
        return Entry(name, skipped=f"cannot be read ({e.strerror})")
    is_notebook = name.lower().endswith(".ipynb")
    if not stat.S_ISREG(st.st_mode):
        what = _kind(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            try:
                what += f" to {shown(os.readlink(name, dir_fd=dfd))[:200]}"
            except OSError:
                pass
        hint = ": not followed; copy the notebook itself into the folder" if is_notebook else ""
        return Entry(name, skipped=f"not graded: {what}{hint}")
    if not is_notebook:
        return Entry(name, skipped="not graded: not a notebook (.ipynb)")
    if solution is not None and (st.st_dev, st.st_ino) == solution:
        return Entry(name, skipped="not graded: this file is the solution notebook itself (a hard link)")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError as e:
        return Entry(name, skipped=f"not graded: cannot be opened ({e.strerror})")
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            return Entry(name, skipped="not graded: the file changed while it was read")
        chunks, size = [], 0
        while size <= MAX_NOTEBOOK_BYTES:
            chunk = os.read(fd, min(2**20, MAX_NOTEBOOK_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return Entry(name, data=b"".join(chunks))
    except OSError as e:
        return Entry(name, skipped=f"not graded: cannot be read ({e.strerror})")
    finally:
        os.close(fd)
