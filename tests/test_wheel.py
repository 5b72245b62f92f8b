"""From `pip install` to the walkthrough, as a user who never clones the repository.

The wheel is built from the checkout's files (`pip wheel . --no-deps --no-build-isolation`,
offline), installed into a fresh virtual environment, and used from a folder outside the
checkout. The fresh environment reuses this one's PyTorch, Jupyter and otter without a
download: a ``.pth`` file, written after the install (so that pip does not take this
checkout's editable install for the package), appends this environment's site-packages
to its path. A path in a ``.pth`` file is not itself scanned for ``.pth`` files, so the
editable install's finder stays inactive there and ``resnet_explorer`` is the wheel's.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
TOKEN = "resnet-explorer-test"


def test_the_package_list_names_every_package_and_maps_only_student_material():
    """The wheel's packages are listed in pyproject.toml (not found), so a new subpackage must be added."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "resnet_explorer").rglob("__init__.py")}
    mapped = config["package-dir"]
    assert set(config["packages"]) == found | set(mapped)
    assert mapped == {"resnet_explorer.walkthrough": "notebooks",
                      "resnet_explorer.student_assignments": "assignments/student"}


def _checkout_files(dest: Path) -> None:
    """The files git would commit (tracked, and new ones not ignored): no .venv, runs or caches."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    _checkout_files(base / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(base / "dist")], cwd=base / "src", check=True, timeout=300)
    (found,) = (base / "dist").glob("resnet_explorer-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with the wheel installed, borrowing this one's site-packages."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, timeout=300)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "borrowed-torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
            "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime")}


def _run(venv: Path, cwd: Path, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=_env(cwd), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_wheel_holds_the_walkthrough_and_the_student_notebook_and_no_solution(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("resnet_explorer/walkthrough/")) == sorted(
        WALKTHROUGH + ["README.md"])
    assert "resnet_explorer/student_assignments/resnet_basics/resnet_basics.ipynb" in names
    # no instructor folder, probes or hidden tests (the module that unpacks a teacher's bundle holds none)
    assert not [n for n in names if any(w in n for w in ("instructor/", "hidden_tests", "probes", "tests/"))]
    assert "resnet_explorer/instructor.py" in names
    instructor = ROOT / "assignments" / "instructor" / "resnet_basics"
    secret = {p.read_bytes() for p in instructor.iterdir() if p.is_file()}
    with zipfile.ZipFile(wheel) as z:  # nor the content of a solution or a hidden test, under any name
        for n in names:
            data = z.read(n)
            assert data not in secret, n
            assert b"\nTESTS = [" not in data and b"def q1_identity(ns, seed)" not in data, n
            if n.endswith(".ipynb"):
                assert b"# BEGIN SOLUTION" not in data and b"# END SOLUTION" not in data, n
    student = zipfile.ZipFile(wheel).read("resnet_explorer/student_assignments/resnet_basics/resnet_basics.ipynb")
    assert student == (ROOT / "assignments/student/resnet_basics/resnet_basics.ipynb").read_bytes()


@pytest.mark.slow
def test_from_the_wheel_a_student_copies_and_runs_a_notebook_and_the_demo(venv, tmp_path):
    where = _run(venv, tmp_path, "python", "-c", "import resnet_explorer, torch; print(resnet_explorer.__file__)")
    assert where.stdout.startswith(str(venv)), "the wheel's resnet_explorer, not the checkout's"

    listed = _run(venv, tmp_path, "python", "-m", "resnet_explorer.notebooks", "list").stdout.split()
    assert len(listed) == 9 and all(p.startswith(str(venv)) for p in listed)  # the packaged walkthrough

    out = _run(venv, tmp_path, "resnet-explorer", "notebooks").stdout
    assert out.startswith("resnet-explorer-notebooks: 10 copied")
    folder = tmp_path / "resnet-explorer-notebooks"
    assert sorted(p.name for p in folder.glob("*.ipynb")) == WALKTHROUGH

    ran = _run(venv, tmp_path, "python", "-m", "resnet_explorer.notebooks", "run", "--smoke", "--out", "executed",
               "--runs", "nb-runs", "resnet-explorer-notebooks/00_quickstart.ipynb")
    assert "1 of 1 notebooks ran" in ran.stdout
    nb = json.loads((tmp_path / "executed" / "00_quickstart.ipynb").read_text())
    setup = next(c for c in nb["cells"] if c["cell_type"] == "code")
    printed = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                      for o in setup["outputs"])
    assert printed.startswith(f"resnet_explorer 0.1.0 from {venv}"), printed
    assert (tmp_path / "nb-runs" / "00_quickstart" / "smoke").is_dir()

    demo = _run(venv, tmp_path, "resnet-explorer", "demo", "--depths", "8", "--width", "4", "--iters", "20",
                "--quiet", "--out", "demo")
    assert "report: demo/report.html" in demo.stdout
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000
    assert not list(ROOT.glob("resnet-explorer-notebooks")), "nothing was written into the checkout"


@pytest.mark.slow
def test_from_the_wheel_a_teacher_gets_the_student_notebook_and_assigns_from_an_own_folder(venv, tmp_path):
    out = _run(venv, tmp_path, "resnet-explorer", "assignment", "new", "course").stdout
    assert (tmp_path / "course" / "resnet_basics.ipynb").is_file()
    assert "assignments/instructor/resnet_basics" in out
    # the teacher's own instructor folder (a copy of the repository's), outside any checkout
    mine = tmp_path / "private" / "instructor" / "resnet_basics"
    shutil.copytree(ROOT / "assignments" / "instructor" / "resnet_basics", mine)
    made = _run(venv, tmp_path, "resnet-explorer", "assign", str(mine), "--out", "handout").stdout
    assert made.strip() == "handout/resnet_basics.ipynb"
    student = json.loads((tmp_path / "handout" / "resnet_basics.ipynb").read_text())
    assert "# BEGIN SOLUTION" not in json.dumps(student) and len(student["cells"]) > 10

    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(tmp_path / "handout" / "resnet_basics.ipynb", subs / "untouched.ipynb")
    shutil.copy(mine / "resnet_basics.ipynb", subs / "perfect.ipynb")
    # rlimits: bubblewrap's fresh /tmp would hide this test's environment, which lives under /tmp
    graded = _run(venv, tmp_path, "resnet-explorer", "grade", "subs", "--assignment", str(mine), "--out",
                  "scores.csv", "--jobs", "1", "--sandbox", "rlimits", "--seed", "3")
    rows = {r["submission"]: r for r in csv.DictReader((tmp_path / "scores.csv").open())}
    assert (rows["perfect.ipynb"]["status"], rows["perfect.ipynb"]["points"]) == ("ok", "27"), graded.stdout
    assert (rows["untouched.ipynb"]["status"], rows["untouched.ipynb"]["points"]) == ("ok", "0"), graded.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_lab_starts_jupyterlab_on_a_free_port_serving_the_copied_notebooks(venv, tmp_path):
    assert "--smoke" in _run(venv, tmp_path, "resnet-explorer", "lab", "--help").stdout
    port = _free_port()
    env = {**_env(tmp_path), "JUPYTER_TOKEN": TOKEN}
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen([str(venv / "bin" / "resnet-explorer"), "lab", "course-notes", "--no-browser",
                               "--port", str(port), "--smoke"], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/", headers={"Authorization": f"token {TOKEN}"})
        deadline, listing = time.monotonic() + 180, None
        while listing is None:
            assert server.poll() is None, (tmp_path / "lab.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "lab.log").read_text()
            try:
                listing = json.load(urllib.request.urlopen(request, timeout=5))
            except OSError:
                time.sleep(1)
        assert sorted(c["name"] for c in listing["content"] if c["type"] == "notebook") == WALKTHROUGH
        one = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/03_degradation_cifar10.ipynb",
                                     headers={"Authorization": f"token {TOKEN}"})
        served = json.load(urllib.request.urlopen(one, timeout=30))
        assert served["content"]["cells"][1]["metadata"]["tags"] == ["setup"]
        specs = json.load(urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/api/kernelspecs", headers={"Authorization": f"token {TOKEN}"}), timeout=30))
        kernel = specs["kernelspecs"][specs["default"]]["spec"]["argv"][0]
        assert kernel.startswith(str(venv)), kernel  # the notebooks' kernel imports the wheel's resnet_explorer
        lab_page = urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={TOKEN}", timeout=30).read()
        assert b"JupyterLab" in lab_page
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # JupyterLab's own clean shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
    text = (tmp_path / "lab.log").read_text()
    assert "starting JupyterLab (short mode: RESNET_EXPLORER_SMOKE=1)" in text
    assert server.returncode == 0, text  # it stopped when asked, not by the KILL
    with socket.socket() as s:  # stopped: nothing listens on the port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
