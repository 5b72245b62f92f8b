"""The instructor bundle: a teacher who installed with pip gets the solution, probes and hidden
tests from a bundle, checked as hostile input, into a private folder that `grade` takes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from conftest import one_line

from resnet_explorer.cli import main
from resnet_explorer.grading.assignment import load_assignment
from resnet_explorer.instructor import MANIFEST, MAX_BYTES, make_bundle, read_bundle, unpack_bundle
from resnet_explorer.notebooks import student_assignment_dir

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "assignments" / "instructor" / "resnet_basics"
FILES = ("resnet_basics.ipynb", "probes.py", "hidden_tests.py")


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(SOURCE, tmp_path / "resnet_basics-instructor.zip",
                       student_assignment_dir() / "resnet_basics" / "resnet_basics.ipynb")


def test_bundle_round_trip_gives_a_private_folder_grade_can_load(bundle, tmp_path, capsys):
    assert main(["assignment", "new", str(tmp_path / "course"), "--instructor", str(bundle)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "course" / "instructor" / "resnet_basics"
    assert f"grade with: resnet-explorer grade SUBMISSIONS/ --assignment {folder}" in out
    assert "another version" not in out  # made with the student notebook this install hands out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in FILES:
        assert (folder / f).read_bytes() == (SOURCE / f).read_bytes()
    assert (tmp_path / "course" / "resnet_basics.ipynb").is_file()
    a = load_assignment(folder)
    assert a.name == "resnet_basics" and len(a.tests) > 5


def test_without_a_bundle_the_message_says_how_to_get_one(tmp_path, capsys):
    assert main(["assignment", "new", str(tmp_path / "course")]) == 0
    out = capsys.readouterr().out
    assert "not installed with the package" in out and "resnet_basics-instructor.zip" in out
    assert "resnet-explorer assignment bundle assignments/instructor/resnet_basics" in out
    assert "--instructor resnet_basics-instructor.zip" in out
    assert "source repository" not in out  # no address a teacher cannot reach


def test_the_bundle_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["assignment", "bundle", str(SOURCE)]) == 0
    assert "teachers only, never to students" in capsys.readouterr().out
    assert set(read_bundle(tmp_path / "resnet_basics-instructor.zip", "resnet_basics")) == set(FILES)
    assert one_line(capsys, main(["assignment", "bundle", str(tmp_path)])).endswith(
        "probes.py, hidden_tests.py missing (it holds NAME.ipynb, probes.py and hidden_tests.py, "
        "e.g. assignments/instructor/resnet_basics)\n")


def _zip(path: Path, members: dict[str, bytes], manifest: dict | None = None, link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        if manifest is not None:
            z.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def _good(bundle: Path) -> tuple[dict, dict]:
    with zipfile.ZipFile(bundle) as z:
        manifest = json.loads(z.read(MANIFEST))
        return manifest, {f: z.read(f) for f in FILES}


@pytest.mark.parametrize("attack", ["traversal", "extra", "link", "altered", "bomb", "manifest", "other"])
def test_a_hostile_bundle_is_one_line_and_writes_nothing(attack, bundle, tmp_path, capsys):
    manifest, files = _good(bundle)
    bad = tmp_path / "bad.zip"
    if attack == "traversal":  # a member that would land outside the folder
        _zip(bad, {**{f"../{k}" if k == "probes.py" else k: v for k, v in files.items()}}, manifest)
    elif attack == "extra":  # one file more than the manifest lists (a .pth, a sitecustomize.py …)
        _zip(bad, {**files, "sitecustomize.py": b"import os"}, manifest)
    elif attack == "link":
        _zip(bad, {k: v for k, v in files.items() if k != "probes.py"}, manifest, link="probes.py")
    elif attack == "altered":  # the manifest's checksum no longer matches
        _zip(bad, {**files, "hidden_tests.py": files["hidden_tests.py"] + b"\nTESTS = []\n"}, manifest)
    elif attack == "bomb":  # a member that unpacks to more than the cap
        huge = b"0" * (MAX_BYTES + 10)
        manifest["files"]["probes.py"] = hashlib.sha256(huge).hexdigest()
        with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest))
            for k, v in {**files, "probes.py": huge}.items():
                z.writestr(k, v)
        assert bad.stat().st_size < 200_000  # small on disk: the cap is on what it unpacks to
    elif attack == "manifest":
        _zip(bad, files, {"assignment": "other", "files": manifest["files"]})
    else:  # not a zip at all
        bad.write_bytes(b"#!/bin/sh\nrm -rf ~\n")
    code = main(["assignment", "new", str(tmp_path / "course"), "--instructor", str(bad)])
    err = one_line(capsys, code)
    assert "bundle" in err or "manifest" in err or "SHA-256" in err or "plain file name" in err, err
    assert not (tmp_path / "course").exists()  # checked whole before anything is written
    assert not (tmp_path / "probes.py").exists()


def test_the_private_folder_is_never_made_through_a_link(bundle, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "course").mkdir()
    os.symlink(elsewhere, tmp_path / "course" / "instructor")
    with pytest.raises(Exception, match="symbolic link"):
        unpack_bundle(bundle, tmp_path / "course" / "instructor", "resnet_basics")
    assert list(elsewhere.iterdir()) == []


def test_the_bundle_is_not_package_data():
    """The wheel's package data is the walkthrough and the student notebook; the bundle is made
    from the source's instructor folder and never sits in the package (tests/test_wheel.py)."""
    import resnet_explorer

    package = Path(resnet_explorer.__file__).parent
    assert not list(package.rglob("*-instructor.zip")) and not list(package.rglob("hidden_tests.py"))
