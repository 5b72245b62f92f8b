"""The instructor bundle: an assignment's solution, probes and hidden tests, in one file for teachers.

The package installs the student notebook only: students install the same package, so nothing
in it is private. A teacher who installed with pip gets the rest as a bundle, a zip that is
never package data: whoever has the project's source (a course's maintainers) makes it with
``resnet-explorer assignment bundle assignments/instructor/NAME`` and sends it to teachers;
``resnet-explorer assignment new DIR --instructor NAME-instructor.zip`` unpacks it into a private
folder ``DIR/instructor/NAME`` (mode 700), the folder ``resnet-explorer grade --assignment`` takes.

A bundle is a file a user hands us, so it is read as hostile: its members must be exactly the
files its manifest lists (plain names: no folders, links, duplicates or other files), each at most
`MAX_BYTES` once unpacked and with the SHA-256 the manifest gives; everything is checked before
anything is written, and the folder it goes into is created without following links.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path

from .errors import UsageError
from .safeio import atomic_write

MANIFEST = "resnet-explorer-instructor.json"
PARTS = ("probes.py", "hidden_tests.py")  # beside the solution notebook NAME.ipynb
MAX_BYTES = 8 * 2**20  # a member unpacked; the solution notebook is about 40 kB
BUNDLE_SUFFIX = "-instructor.zip"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(name: str) -> list[str]:
    return [f"{name}.ipynb", *PARTS]


def make_bundle(instructor_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                student_notebook: Path | None = None) -> Path:
    """Pack an instructor folder (``NAME/NAME.ipynb``, probes.py, hidden_tests.py) into
    ``NAME-instructor.zip`` (in the working directory unless ``out`` says where)."""
    folder = Path(instructor_dir)
    name = folder.name
    missing = [f for f in _files(name) if not (folder / f).is_file() or (folder / f).is_symlink()]
    if missing:
        raise UsageError(f"{folder} is not an instructor folder: {', '.join(missing)} missing (it holds "
                         f"NAME.ipynb, probes.py and hidden_tests.py, e.g. assignments/instructor/resnet_basics)")
    data = {f: (folder / f).read_bytes() for f in _files(name)}
    manifest = {"assignment": name, "files": {f: _sha256(b) for f, b in data.items()},
                "student_notebook_sha256": _sha256(student_notebook.read_bytes())
                if student_notebook is not None and student_notebook.is_file() else None}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, json.dumps(manifest, indent=1))
        for f, b in data.items():
            z.writestr(f, b)
    target = Path(out) if out is not None else Path(f"{name}{BUNDLE_SUFFIX}")
    return atomic_write(target, buffer.getvalue())


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, bundle: Path) -> bytes:
    if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16) or "/" in info.filename or "\\" in info.filename:
        raise UsageError(f"{bundle}: {info.filename!r} is not a plain file name: not an instructor bundle")
    with z.open(info) as f:
        data = f.read(MAX_BYTES + 1)  # never more, whatever the header claims
    if len(data) > MAX_BYTES:
        raise UsageError(f"{bundle}: {info.filename} unpacks to more than {MAX_BYTES // 2**20} MB: "
                         "not an instructor bundle")
    return data


def read_bundle(bundle: str | os.PathLike, name: str) -> dict[str, bytes]:
    """The checked files of an instructor bundle for assignment ``name`` ({file name: bytes})."""
    bundle = Path(bundle)
    if not bundle.is_file() or not zipfile.is_zipfile(bundle):
        raise UsageError(f"{bundle} is not an instructor bundle (a .zip made by resnet-explorer assignment bundle)")
    with zipfile.ZipFile(bundle) as z:
        members = z.infolist()
        names = [m.filename for m in members]
        if len(set(names)) != len(names) or set(names) != {MANIFEST, *_files(name)}:
            raise UsageError(f"{bundle} is not the instructor bundle of {name}: it holds {', '.join(sorted(set(names)))} "
                             f"(expected {', '.join([MANIFEST, *_files(name)])})")
        data = {m.filename: _read_member(z, m, bundle) for m in members}
    try:
        manifest = json.loads(data.pop(MANIFEST))
        sums = manifest["files"]
        ok = manifest["assignment"] == name and set(sums) == set(_files(name))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UsageError(f"{bundle}: its {MANIFEST} is not an instructor manifest for {name}")
    for f, b in data.items():
        if _sha256(b) != sums[f]:
            raise UsageError(f"{bundle}: {f} does not match its SHA-256 in the manifest (damaged or altered): "
                             "ask for the bundle again")
    return data


def _private_folder(path: Path) -> Path:
    """``path`` created (parents too) as a real folder, mode 700; never through a link."""
    for p in [*reversed(path.parents), path]:
        if p.is_symlink():
            raise UsageError(f"{p} is a symbolic link: give a real folder for the instructor material")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise UsageError(f"cannot create the private folder {path} ({e.strerror}): give another folder") from None
    try:
        os.fchmod(fd, 0o700)  # on the folder just opened without following a link
    finally:
        os.close(fd)
    return path


def unpack_bundle(bundle: str | os.PathLike, folder: str | os.PathLike, name: str) -> Path:
    """Check ``bundle`` (`read_bundle`), then write its files into ``folder/NAME`` (mode 700):
    the instructor folder for ``resnet-explorer grade --assignment``. Returns that folder."""
    files = read_bundle(bundle, name)
    target = _private_folder(Path(folder) / name)
    for f, b in files.items():
        atomic_write(target / f, b)
    return target


def bundle_matches(bundle: str | os.PathLike, student_notebook: Path) -> bool | None:
    """Whether the bundle was made with this student notebook (None: the bundle does not say)."""
    with zipfile.ZipFile(bundle) as z:
        recorded = json.loads(z.read(MANIFEST)).get("student_notebook_sha256")
    return None if recorded is None else recorded == _sha256(student_notebook.read_bytes())
