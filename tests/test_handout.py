"""The packaged notebooks for pip users: `resnet-explorer notebooks`, `lab`, `assignment new`,
and the setup cell every walkthrough notebook starts with (fast; the wheel itself is
built and installed in tests/test_wheel.py, marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from resnet_explorer import cli_notebooks, handout
from resnet_explorer import notebooks as N
from resnet_explorer.cli import main

WALKTHROUGH = [p.name for p in N.notebook_paths()] + ["README.md"]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_walkthrough_notebook_starts_with_the_same_setup_cell():
    assert len(N.notebook_paths()) == 9
    for path in N.notebook_paths():
        nb = nbformat.read(path, as_version=4)
        assert N.setup_problems(nb) == [], path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source == N.SETUP_SOURCE and '# %pip install "resnet-explorer[notebooks]"' in code[0].source
        assert N.SHORT_MODE_LINE in N.parameters_source(nb)
        assert N.apply_setup(nb) is False  # already applied: re-applying changes nothing


def test_apply_setup_inserts_replaces_and_is_rerunnable(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("# Parameters: edit me.\nimport os\nMODE = 'cpu'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# 09 · x"), params, nbformat.v4.new_code_cell("1")]
    assert N.setup_problems(nb) == [
        "the first code cell is not the 'setup' cell (fix: python -m resnet_explorer.notebooks setup)",
        "the parameters cell does not say how to pick the short mode"]
    assert N.apply_setup(nb) is True
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code"]
    assert nb.cells[1].source == N.SETUP_SOURCE
    assert nb.cells[2].source.split("\n")[:2] == ["# Parameters: edit me.", N.SHORT_MODE_LINE]
    assert N.apply_setup(nb) is False and N.setup_problems(nb) == []
    nb.cells[1].source = "print('an old setup cell')"  # an older version of the cell is replaced
    assert N.apply_setup(nb) is True and nb.cells[1].source == N.SETUP_SOURCE and len(nb.cells) == 4
    path = tmp_path / "x.ipynb"
    nb.cells[1].source = "old"
    nbformat.write(nb, path)
    assert N.main(["check", str(path)]) == 1
    assert N.main(["setup", str(path)]) == 0 and N.main(["check", str(path)]) == 0


def test_the_setup_cell_says_how_to_install_when_resnet_explorer_is_missing(tmp_path):
    # -S: no site-packages, so resnet_explorer cannot be imported (as in a fresh hosted kernel)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", N.SETUP_SOURCE], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: resnet_explorer is not installed in this kernel: run %pip install "
        '"resnet-explorer[notebooks]" in a cell (or pip in a terminal), then restart the kernel')
    ok = subprocess.run([sys.executable, "-c", N.SETUP_SOURCE], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("resnet_explorer 0.1.0 from ")


def test_notebooks_copies_the_walkthrough_and_keeps_what_the_user_changed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = _run(["notebooks"], capsys)
    folder = tmp_path / handout.DEFAULT_NOTEBOOK_DIR
    assert rc == 0 and out.startswith(f"{handout.DEFAULT_NOTEBOOK_DIR}: 10 copied\n")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(WALKTHROUGH)
    for name in WALKTHROUGH:
        assert (folder / name).read_bytes() == (N.walkthrough_dir() / name).read_bytes()

    edited = folder / "03_degradation_cifar10.ipynb"
    edited.write_text(edited.read_text().replace("Fig. 1", "Fig. 1 (my notes)", 1))
    (folder / "00_quickstart.ipynb").unlink()
    rc, out, _ = _run(["notebooks"], capsys)
    assert rc == 0
    assert out.splitlines()[:2] == [
        f"{handout.DEFAULT_NOTEBOOK_DIR}: 1 copied, 8 unchanged",
        "kept 1 you changed (delete one to get the packaged version back): 03_degradation_cifar10.ipynb"]
    assert "(my notes)" in edited.read_text()  # the user's edit survives


def test_an_unchanged_older_copy_is_updated_and_an_edited_one_kept(tmp_path):
    old, new = tmp_path / "v1", tmp_path / "v2"
    old.mkdir(), new.mkdir()
    for d, text in ((old, "first"), (new, "second")):
        (d / "a.ipynb").write_text(text)
        (d / "b.ipynb").write_text(text)
    dest = tmp_path / "mine"
    assert handout.hand_out(sorted(old.iterdir()), dest).copied == ["a.ipynb", "b.ipynb"]
    (dest / "b.ipynb").write_text("my notes")
    report = handout.hand_out(sorted(new.iterdir()), dest)
    assert report.updated == ["a.ipynb"] and report.kept == ["b.ipynb"]
    assert (dest / "a.ipynb").read_text() == "second" and (dest / "b.ipynb").read_text() == "my notes"
    # still the user's on the next run, though the record of what we wrote was replaced
    assert handout.hand_out(sorted(new.iterdir()), dest).kept == ["b.ipynb"]


def test_a_link_planted_in_a_shared_folder_is_never_followed(tmp_path, capsys):
    folder = tmp_path / "shared"
    folder.mkdir()
    victim = tmp_path / "victim.ipynb"
    victim.write_text("the victim's own file")
    (folder / "01_residual_block.ipynb").symlink_to(victim)  # write through it: overwrite the victim
    (folder / "README.md").symlink_to(tmp_path / "created-by-us")  # a dangling one: create a file there
    (folder / handout.MANIFEST).symlink_to(tmp_path / "manifest-elsewhere")
    rc, out, _ = _run(["notebooks", str(folder)], capsys)
    assert rc == 0
    assert "left alone 2 that are links or folders, not files (never followed): 01_residual_block.ipynb, README.md" in out
    assert victim.read_text() == "the victim's own file"
    assert not (tmp_path / "created-by-us").exists() and not (tmp_path / "manifest-elsewhere").exists()
    assert not (folder / handout.MANIFEST).is_symlink()  # replaced by our own file, not written through
    assert json.loads((folder / handout.MANIFEST).read_text())["sha256"].keys() == set(WALKTHROUGH) - {
        "01_residual_block.ipynb", "README.md"}


def test_a_folder_that_is_a_link_or_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    rc, _, err = _run(["notebooks", str(tmp_path / "link")], capsys)
    assert rc == 2 and err == (f"resnet-explorer: error: {tmp_path / 'link'} is a symbolic link: give a real "
                               "folder (e.g. its target) or another name\n")
    assert list(target.iterdir()) == []
    (tmp_path / "file").write_text("x")
    rc, _, err = _run(["assignment", "new", str(tmp_path / "file")], capsys)
    assert rc == 2 and err.endswith("is a file, not a folder: give another folder\n")


def test_assignment_new_writes_only_the_student_notebook_and_says_where_the_rest_is(tmp_path, capsys):
    rc, out, _ = _run(["assignment", "new", str(tmp_path / "course")], capsys)
    assert rc == 0
    assert [p.name for p in (tmp_path / "course").iterdir() if not p.name.startswith(".")] == ["resnet_basics.ipynb"]
    student = N.student_assignment_dir() / "resnet_basics" / "resnet_basics.ipynb"
    assert (tmp_path / "course" / "resnet_basics.ipynb").read_bytes() == student.read_bytes()
    assert "assignments/instructor/resnet_basics" in out and "resnet-explorer grade" in out
    assert "# BEGIN SOLUTION" not in student.read_text()
    rc, _, err = _run(["assignment", "new", str(tmp_path / "x"), "--name", "nope"], capsys)
    assert rc == 2 and err == "resnet-explorer: error: no assignment 'nope': use one of resnet_basics\n"


def test_lab_help_and_the_command_it_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["lab", "--help"])
    out = " ".join(capsys.readouterr().out.replace("resnet-\n", "resnet-").split())
    assert e.value.code == 0 and "--smoke" in out and "--port" in out and "resnet-explorer[notebooks]" in out
    command = cli_notebooks.lab_command(tmp_path, 8899, browser=False)
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path}" in command and "--ServerApp.port=8899" in command


def test_lab_without_jupyterlab_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    real = cli_notebooks.importlib.util.find_spec
    monkeypatch.setattr(cli_notebooks.importlib.util, "find_spec",
                        lambda name, *a: None if name == "jupyterlab" else real(name, *a))
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("started JupyterLab"))
    rc, out, err = _run(["lab", str(tmp_path / "nb")], capsys)
    assert rc == 2 and err == ('resnet-explorer: error: JupyterLab is not installed here: pip install '
                               '"resnet-explorer[notebooks]", then run resnet-explorer lab again\n')
    assert "10 copied" in out  # the notebooks are there for another Jupyter


def test_notebooks_readme_links_every_notebook_for_a_hosted_service():
    text = (N.walkthrough_dir() / "README.md").read_text()
    links = N.hosted_links("OWNER/resnet-explorer")
    assert links in text and links.count("https://colab.research.google.com/github/") == 9
    assert N.main(["links", "--repo", "me/rx", "--branch", "dev"]) == 0


def test_a_packaged_notebook_runs_in_the_working_directory_not_in_site_packages(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "resnet_explorer"
    (package / "walkthrough").mkdir(parents=True)
    nb = package / "walkthrough" / "00_x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    outside = tmp_path / "mine.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), outside)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(N, "_PACKAGE", package)
    assert N.walkthrough_dir() == package / "walkthrough"  # a wheel install: the package data
    seen = {}

    def fake_execute(path, cwd=None, **kw):
        seen[path.name] = cwd
        return N.Executed(path, nbformat.v4.new_notebook(), 0.0, None)

    monkeypatch.setattr(N, "execute", fake_execute)
    assert N.main(["run", "--smoke"]) == 0 and seen == {"00_x.ipynb": work}  # not the package folder
    assert N.main(["run", "--smoke", str(outside)]) == 0 and seen["mine.ipynb"] is None  # its own folder


def test_a_read_only_folder_or_a_planted_fifo_is_one_line_not_a_wait(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True, text=True)
    assert r.returncode == 0, f"this test mounts a read-only tmpfs and needs root: {r.stderr.strip()}"
    try:
        for command in (["notebooks", str(ro)], ["assignment", "new", str(ro)]):
            rc, _, err = _run(command, capsys)
            assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
            assert f"cannot write in {ro} (Read-only file system): give a folder you can write in" in err, err
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.mkfifo(shared / "00_quickstart.ipynb")  # a reader would wait on it for ever
    rc, out, _ = _run(["notebooks", str(shared)], capsys)
    assert rc == 0 and "00_quickstart.ipynb" in out and "not files (never followed)" in out
