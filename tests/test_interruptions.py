"""What must keep holding, tried as a user would: real ``resnet-explorer`` processes on tiny nets,
killed with ``kill -9`` (once or twice), SIGTERM or SIGINT, then resumed, are bit-identical to
an uninterrupted run; an interrupted experiment skips its finished runs and resumes the partial
one exactly; two processes started into one ``--out`` leave one run, written once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_explorer.experiments import read_manifest
from resnet_explorer.runs import RunDir, read_metrics

pytestmark = pytest.mark.slow

EXE = str(Path(sys.executable).parent / "resnet-explorer")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
ITERS = 100  # a checkpoint every 10, a train line every 5, an eval every 10
TRAIN = ["train", "--arch", "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test",
         "--iters", str(ITERS), "--quiet"]
DETERMINISTIC = ("kind", "iter", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def checkpoint_at_least(run: Path, iteration: int):
    def ready() -> bool:
        try:
            return RunDir(run).iteration() >= iteration
        except Exception:  # noqa: BLE001 - not written yet
            return False
    return ready


def strip(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


def same_run(a: Path, b: Path) -> None:
    """Bit for bit: the deterministic metrics and every weight of the last checkpoint."""
    assert strip(read_metrics(a)) == strip(read_metrics(b))
    wa, wb = (torch.load(RunDir(d).checkpoint_path, weights_only=True)["model"] for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    code, out, err = finish(start(*TRAIN, "--out", str(run)))
    assert code == 0, err
    return run


def test_kill_9_twice_then_resume_is_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    proc = start(*TRAIN, "--out", str(run))
    for at in (20, 50):  # killed once, resumed, killed again, resumed
        wait_for(proc, checkpoint_at_least(run, at), f"a checkpoint at {at}")
        os.killpg(proc.pid, signal.SIGKILL)
        assert finish(proc)[0] == -signal.SIGKILL
        proc = start("train", "--resume", "--out", str(run), "--quiet")
    code, out, err = finish(proc)
    assert code == 0 and f"{ITERS} iterations" in out, err
    same_run(run, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_where_it_lands_then_resume_is_bit_identical(tmp_path, reference, sig):
    run = tmp_path / "run"
    proc = start(*TRAIN, "--out", str(run))
    wait_for(proc, checkpoint_at_least(run, 20), "a checkpoint at 20")
    proc.send_signal(sig)
    code, out, err = finish(proc)
    assert code == 2 and err.count("\n") == 1, err
    stopped = RunDir(run).iteration()
    assert f"stopped by {sig.name} at iteration {stopped}; its checkpoint is in" in err, err
    assert 20 <= stopped < ITERS
    assert max(r["iter"] for r in read_metrics(run)) <= stopped  # nothing past the checkpoint
    code, out, err = finish(start("train", "--resume", "--out", str(run), "--quiet"))
    assert code == 0, err
    same_run(run, reference)


def test_two_writers_into_one_out_leave_one_run_written_once(tmp_path):
    run = tmp_path / "run"
    long = [*TRAIN[:-3], "--iters", "100000", "--quiet"]
    first = start(*long, "--out", str(run))
    try:
        wait_for(first, lambda: RunDir(run).metrics_path.exists(), "the first writer's metrics")
        for argv in (long, ["train", "--resume", "--quiet"]):  # a second new run, a resume
            code, out, err = finish(start(*argv, "--out", str(run)))
            assert code == 2 and err.count("\n") == 1, err
            assert f"{run} is being written by another process (pid {first.pid} on " in err, err
        assert first.poll() is None  # refused while the first one was writing
        first.send_signal(signal.SIGTERM)
        code, out, err = finish(first)
        assert code == 2 and "stopped by SIGTERM" in err, err
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    keys = [(r["kind"], r["iter"]) for r in read_metrics(run)]
    assert keys and len(keys) == len(set(keys))  # every line once
    code, out, err = finish(start("train", "--resume", "--out", str(run), "--iters", "100000", "--quiet", "--set",
                                  "lr=0.2"))  # the holder is gone: its lock went with it
    assert code == 2 and "recipe lr=0.1 (asked 0.2)" in err, err


def test_an_interrupted_experiment_skips_finished_runs_and_resumes_the_partial_one(tmp_path):
    exp = ["experiment", "degradation", "--depths", "8", "--width", "4", "--data", "synthetic:256", "--recipe",
           "test", "--iters", "30", "--quiet"]
    code, _, err = finish(start(*exp, "--out", str(tmp_path / "whole")))
    assert code == 0, err
    out = tmp_path / "exp"
    proc = start(*exp, "--out", str(out))
    wait_for(proc, checkpoint_at_least(out / "resnet-8", 10), "resnet-8's checkpoint at 10")
    os.killpg(proc.pid, signal.SIGKILL)
    finish(proc)
    finished = RunDir(out / "plain-8").metrics_path.read_bytes()
    code, text, err = finish(start(*exp, "--out", str(out)))
    assert code == 0, err
    assert "[1/2] plain-8: finished earlier, skipped" in text and "[2/2] resnet-8: 8 layers, 30 iterations (resumed)" in text
    assert RunDir(out / "plain-8").metrics_path.read_bytes() == finished  # not trained again
    for name in ("plain-8", "resnet-8"):
        same_run(out / name, tmp_path / "whole" / name)
    assert [r["status"] for r in read_manifest(out)["runs"]] == ["finished", "finished"]
