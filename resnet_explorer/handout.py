"""Copies of the packaged notebooks in a user's folder: the walkthrough and the student assignment.

`hand_out` copies files into a folder that may be shared or planted with links: the folder
itself must not be a symbolic link, every file is written with `safeio.atomic_write` (a
private ``O_EXCL|O_NOFOLLOW`` temporary file renamed into place, so a link planted at a
target is replaced, never written through), and nothing is read through a link. A file the
user has changed since we copied it is kept: ``.resnet-explorer-copies.json`` records the
SHA-256 of what we wrote, so an unchanged copy of an older version is updated and an edited
one is left alone (and reported).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import UsageError
from .safeio import NOFOLLOW, atomic_write, read_json, write_json

MANIFEST = ".resnet-explorer-copies.json"
DEFAULT_NOTEBOOK_DIR = "resnet-explorer-notebooks"


@dataclass
class Handout:
    """What `hand_out` did with each file, by name."""

    folder: Path
    copied: list[str] = field(default_factory=list)  # new in the folder
    updated: list[str] = field(default_factory=list)  # our unchanged older copy, replaced
    unchanged: list[str] = field(default_factory=list)  # already the packaged version
    kept: list[str] = field(default_factory=list)  # changed by the user: left alone
    not_files: list[str] = field(default_factory=list)  # a link or a folder there: neither read nor written

    def summary(self) -> str:
        """A few lines for the terminal: where, how many, and which files were kept."""
        parts = [f"{len(v)} {k}" for k, v in (("copied", self.copied), ("updated", self.updated),
                                               ("unchanged", self.unchanged)) if v]
        lines = [f"{self.folder}: {', '.join(parts) or 'nothing to copy'}"]
        if self.kept:
            lines.append(f"kept {len(self.kept)} you changed (delete one to get the packaged version back): "
                         + ", ".join(self.kept))
        if self.not_files:
            lines.append(f"left alone {len(self.not_files)} that are links or folders, not files (never followed): "
                         + ", ".join(self.not_files))
        return "\n".join(lines)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_nofollow(path: Path) -> bytes | None:
    """The bytes of a regular file at ``path``; None for a link, a folder or anything else."""
    try:  # never waiting on a FIFO put in its place
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def _folder(path: Path) -> Path:
    """``path`` as a real directory we may write in (created if missing); never a link."""
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link: give a real folder (e.g. its target) or another name")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{path} is a file, not a folder: give another folder") from None
    except OSError as e:
        raise UsageError(f"cannot create the folder {path} ({e.strerror}): give a writable folder") from None
    if path.is_symlink() or not path.is_dir():  # replaced by a link between the check and mkdir
        raise UsageError(f"{path} is not a real folder: give another folder")
    return path


def hand_out(sources: Iterable[Path], folder: str | os.PathLike) -> Handout:
    """Copy each file of ``sources`` into ``folder`` by its name, keeping the user's edits; a
    folder that cannot be written (read-only, immutable, full) is one line."""
    folder = _folder(Path(folder))
    try:
        return _copy(sources, folder)
    except OSError as e:
        raise UsageError(f"cannot write in {folder} ({e.strerror or e}): give a folder you can write in "
                         "(whatever was there is kept)") from None


def _copy(sources: Iterable[Path], folder: Path) -> Handout:
    manifest = None if (folder / MANIFEST).is_symlink() else read_json(folder / MANIFEST)
    written = manifest.get("sha256") if isinstance(manifest, dict) else None
    written = {k: v for k, v in written.items() if isinstance(v, str)} if isinstance(written, dict) else {}
    report, record = Handout(folder), {}
    for source in sources:
        name, data = source.name, source.read_bytes()
        ours, target = _sha256(data), folder / name
        if not (target.exists() or target.is_symlink()):
            atomic_write(target, data)
            report.copied.append(name)
            record[name] = ours
            continue
        current = _read_nofollow(target)
        if current is None:
            report.not_files.append(name)
        elif _sha256(current) == ours:
            report.unchanged.append(name)
            record[name] = ours
        elif written.get(name) == _sha256(current):
            atomic_write(target, data)
            report.updated.append(name)
            record[name] = ours
        else:
            report.kept.append(name)
            if name in written:
                record[name] = written[name]
    write_json(folder / MANIFEST, {"sha256": record})
    return report
