"""Hostile run directories, data folders and command lines: each attack is here, and each is
refused in one line (exit 2) without waiting, without a traceback, and without losing what
was written; a resume is checked against everything it is given and everything it reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import one_line
from PIL import Image

from resnet_explorer import get_spec
from resnet_explorer.cli import main
from resnet_explorer.data import parse_data
from resnet_explorer.data.folder import CACHE_NAME
from resnet_explorer.errors import TrainingError, UsageError
from resnet_explorer.experiments import manifest_path, run_experiment
from resnet_explorer.jobs import Job, run_jobs
from resnet_explorer.plans import degradation
from resnet_explorer.recipes import get_recipe
from resnet_explorer.report import degradation_summary
from resnet_explorer.runs import RunDir, read_metrics
from resnet_explorer.train import train

EXE = str(Path(sys.executable).parent / "resnet-explorer")
TINY = get_recipe("test", iters=10)  # batch 32: log 5, eval and checkpoint 10
TRAIN = ["train", "--arch", "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextlib.contextmanager
def no_hang(seconds: float = 20.0):
    """Fail (instead of hanging the suite) when the block blocks longer than ``seconds``."""
    def fire(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def files(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 20-iteration run (cifar-resnet8, width 4) stopped and checkpointed at iteration 10."""
    d = tmp_path_factory.mktemp("runs") / "stopped"
    train(get_spec("cifar-resnet8", width=4), "synthetic:256", get_recipe("test", iters=20), d, progress=False,
          should_stop=lambda it: it == 10)
    return d


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    return Path(shutil.copytree(stopped, tmp_path / "run"))


def resume(capsys, run: Path, *extra: str) -> str:
    with no_hang():
        return one_line(capsys, main(["train", "--resume", "--out", str(run), "--quiet", *extra]))


# -- files that would make a reader wait for ever --------------------------------------------------
@pytest.mark.parametrize("name", ["checkpoints/last.pt", "spec.json", "metrics.jsonl", "recipe.json"])
def test_a_fifo_in_a_run_is_refused_at_once(run, tmp_path, capsys, name):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (run / name).unlink()
    (run / name).symlink_to(fifo)  # a link to a FIFO, as planted in a shared folder
    err = resume(capsys, run)
    assert "FIFO" in err, err


def test_a_fifo_as_the_manifest_is_refused_at_once(tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    os.mkfifo(manifest_path(exp))
    with no_hang():
        err = one_line(capsys, main(["experiment", "degradation", "--data", "synthetic:256", "--recipe", "test",
                                     "--depths", "8", "--width", "4", "--out", str(exp), "--quiet"]))
    assert "manifest.json is corrupt (a FIFO)" in err


def test_a_fifo_as_a_folders_cache_is_ignored(tmp_path):
    root = tmp_path / "imgs"
    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / split / c / f"{i}.png")
    os.mkfifo(root / CACHE_NAME)  # a planted cache file that never answers
    from resnet_explorer.data import load_tensors

    with no_hang():
        train_x, train_y, test_x, _ = load_tensors(parse_data(f"folder:{root}"))
    assert train_x.shape == (6, 3, 32, 32) and test_x.shape[0] == 2 and train_y.tolist() == [0, 0, 0, 1, 1, 1]


# -- records made to crash a reader ----------------------------------------------------------------------
DEEP = "[" * 10_000 + "]" * 10_000
HUGE = "9" * 5_000


@pytest.mark.parametrize("name,text,fragment", [
    ("spec.json", DEEP, "nested more than 64 levels deep"),
    ("recipe.json", '{"name": "test", "max_iters": ' + HUGE + "}", "Exceeds the limit"),
    ("spec.json", '{"name": "x", "num_classes": ' + "9" * 30 + "}", "an integer of 30 digits"),
    ("env.json", '{"seed": NaN}', "NaN, which strict JSON has not"),
    ("data.json", DEEP, "nested more than 64 levels deep"),
])
def test_a_record_made_to_crash_the_reader_is_one_line(run, capsys, name, text, fragment):
    (run / name).write_text(text)
    before = files(run)
    err = resume(capsys, run)
    assert f"{name} is malformed (" in err and fragment in err, err
    assert files(run) == before


def test_a_metrics_line_of_the_wrong_types_is_skipped_by_the_report_and_refused_by_a_resume(run, capsys):
    good = (run / "metrics.jsonl").read_bytes()
    bad = [b'{"kind": "train", "iter": 5, "train_error": "high"}', b'{"kind": "eval", "iter": "5"}',
           b'\xff\xfe{"kind": "train"}', DEEP.encode()]
    (run / "metrics.jsonl").write_bytes(good + b"\n".join(bad) + b"\n")
    summary = degradation_summary([run])  # the report's table: the good lines, no crash
    trained = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert summary["runs"][0]["window_train_error"] == trained[-1]["train_error"] and trained[-1]["iter"] == 10
    before = files(run)
    err = resume(capsys, run)
    assert "metrics.jsonl line" in err and "is malformed" in err and "cannot be resumed without losing it" in err
    assert files(run) == before


def test_a_torn_last_metrics_line_is_still_redone_on_resume(run, stopped, capsys):
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "train", "it')  # a crash mid-write: no newline
    kept = [r["iter"] for r in read_metrics(run) if r["kind"] == "train"]
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    done = [r["iter"] for r in read_metrics(run) if r["kind"] == "train"]
    assert done[:len(kept)] == kept and done == sorted(set(done)) and done[-1] == 20


# -- a resume that would silently train something else -----------------------------------------------
def _edit_checkpoint(run: Path, **changes) -> None:
    path = RunDir(run).checkpoint_path
    state = torch.load(path, weights_only=True)
    state.update(changes)
    torch.save(state, path)


@pytest.mark.parametrize("changes,fragment", [
    ({"iteration": 10**30}, "past the end of its recipe"),
    ({"iteration": 18, "epoch": 2, "batch_in_epoch": 2}, "stands at iteration 18, past the end"),
    ({"epoch": 10**9}, "it stands at epoch 1000000000, batch 2 (epochs of 8), which is not iteration 10"),
])
def test_a_checkpoint_out_of_its_recipe_is_refused(run, capsys, changes, fragment):
    if changes.get("iteration") == 18:  # within 20, but the recipe asked for 16: past its end
        (run / "recipe.json").write_text(json.dumps({**json.loads((run / "recipe.json").read_text()),
                                                     "max_iters": 16, "milestones": [8, 12]}))
    _edit_checkpoint(run, **changes)
    before = files(run)
    assert fragment in resume(capsys, run)
    assert files(run) == before


def test_an_infinite_momentum_buffer_is_not_a_good_checkpoint(run, capsys):
    path = RunDir(run).checkpoint_path
    state = torch.load(path, weights_only=True)
    state["optimizer"]["state"][0]["momentum_buffer"][0].fill_(float("inf"))
    torch.save(state, path)
    err = resume(capsys, run)
    assert "non-finite tensors (optimizer.state.0.momentum_buffer" in err


@pytest.mark.parametrize("option,fragment", [
    (["--plain"], "--plain (the run's: residual)"),
    (["--shortcut", "B"], "--shortcut B (the run's: A)"),
    (["--width", "8"], "--width 8 (the run's: 4)"),
])
def test_resume_with_other_architecture_options_is_refused(run, capsys, option, fragment):
    before = files(run)
    err = resume(capsys, run, *option)
    assert "trains cifar-resnet8, not what" in err and fragment in err, err
    assert files(run) == before
    assert main(["train", "--resume", "--out", str(run), "--quiet", "--width", "4", "--shortcut", "A"]) == 0


def test_eval_of_non_finite_weights_is_one_line(run, capsys):
    path = RunDir(run).checkpoint_path
    state = torch.load(path, weights_only=True)
    state["model"]["fc.weight"].fill_(float("inf"))
    torch.save(state, path)
    err = one_line(capsys, main(["eval", str(run)]))
    assert "holds 1 non-finite tensors (fc.weight" in err and "a diverged net has no test error" in err


def test_a_resume_uses_the_thread_count_the_run_started_with(stopped, tmp_path):
    run = Path(shutil.copytree(stopped, tmp_path / "run"))
    assert RunDir(run).recorded_threads() == 1  # trained under one_torch_thread
    seen = []
    torch.set_num_threads(2)
    try:
        train(out=run, resume=True, progress=False, on_metrics=lambda row: seen.append(torch.get_num_threads()))
    finally:
        torch.set_num_threads(1)
    assert seen and set(seen) == {1}
    assert RunDir(run).env()["cpu_threads"] == 1


# -- command lines that trained, then lost the run, or wrote where nobody asked ---------------------------
@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_a_seed_the_run_cannot_record_is_refused_before_training(tmp_path, capsys, seed):
    out = tmp_path / "r"
    err = one_line(capsys, main([*TRAIN, "--seed", seed, "--out", str(out)]))
    assert f"seed {seed} is invalid: use a whole number from 0 to 2**63 - 1" in err
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    [*TRAIN],
    ["experiment", "degradation", "--data", "synthetic:256", "--recipe", "test"],
    ["demo", "--iters", "2"],
])
def test_an_empty_out_is_one_line(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    err = one_line(capsys, main([*argv, "--out", ""]))
    assert "--out '' names no folder" in err
    assert list(tmp_path.iterdir()) == []


def test_a_huge_synthetic_set_is_one_line(tmp_path, capsys):
    err = one_line(capsys, main(["train", "--arch", "cifar-resnet8", "--data", "synthetic:99999999999",
                                 "--out", str(tmp_path / "r")]))
    assert "with 10 <= N <= 1,000,000 training images" in err


def test_a_class_folder_whose_name_is_not_utf8_trains(tmp_path, capsys):
    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for c in (b"caf\xe9", b"plain"):
            folder = os.path.join(os.fsencode(root / split), c)
            os.makedirs(folder)
            for i in range(4):
                Image.new("RGB", (8, 8), (60 * i, 20, 90)).save(os.fsdecode(os.path.join(folder, b"%d.png" % i)))
    out = tmp_path / "r"
    assert main(["train", "--arch", "cifar-resnet8", "--width", "4", "--data", f"folder:{root}", "--recipe", "test",
                 "--iters", "2", "--set", "batch_size=4", "--quiet", "--out", str(out)]) == 0
    assert RunDir(out).iteration() == 2 and len(RunDir(out).config().data["data"]["classes"]) == 2


def test_two_ctrl_c_in_a_row_leave_one_line_and_no_traceback(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([EXE, *TRAIN, "--iters", "100000", "--out", str(out)], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (RunDir(out).metrics_path.exists() and read_metrics(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode in (2, 130) and "Traceback" not in err, err
    assert 1 <= len(lines) <= 2 and all(line.startswith("resnet-explorer: ") for line in lines), err
    assert read_metrics(out)  # what was written stays


# -- a job pool that must end ----------------------------------------------------------------------------
SLEEP = "subprocess:run"  # a job that sleeps (its kwargs: args=["sleep", N])


def test_a_signal_ends_a_pool_with_jobs_still_to_start(tmp_path):
    jobs = [Job(f"j{i}", SLEEP, {"args": ["sleep", "60"]}, tmp_path / "logs" / f"j{i}.log") for i in range(3)]
    lines: list[str] = []

    def log(line: str) -> None:  # a SIGTERM to this process once the first job runs
        lines.append(line)
        if len(lines) == 1:
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()

    t = time.monotonic()
    with no_hang(90):
        outcomes, stopped = run_jobs(jobs, 1, log=log)
    assert stopped == "SIGTERM" and [o.name for o in outcomes] == ["j0"] and outcomes[0].status == "interrupted", (
        lines, outcomes)
    assert time.monotonic() - t < 60  # the sleeps alone would take 180 s


def test_a_pool_whose_folder_is_removed_stops_its_jobs(tmp_path):
    exp = tmp_path / "exp"
    jobs = [Job(f"j{i}", SLEEP, {"args": ["sleep", "60"]}, exp / "logs" / f"j{i}.log") for i in range(2)]
    threading.Timer(2.0, shutil.rmtree, (exp,)).start()
    with no_hang(60), pytest.raises(UsageError, match=r"exp was removed while its runs trained: they are stopped"):
        run_jobs(jobs, 2, log=lambda m: None, watch=exp)


def test_an_experiment_refuses_a_bad_seed_before_writing(tmp_path):
    with pytest.raises(TrainingError, match="seed -3 is invalid"):
        run_experiment("degradation", degradation((8,), TINY, width=4), "synthetic:256", tmp_path / "e", seed=-3,
                       progress=False, log=lambda m: None)
    assert not (tmp_path / "e").exists()
