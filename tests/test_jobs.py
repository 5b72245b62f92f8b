"""``experiment --jobs N``: runs side by side, one process each, each with its solo run's numbers.

Tiny nets (width 4) on synthetic:256 on the CPU. The jobs split the cores
(`jobs.threads_per_job`), so a solo run compared with them is trained with the same number
of threads: then the numbers agree bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_explorer.cli import main
from resnet_explorer.errors import TrainingError, UsageError
from resnet_explorer.experiments import run_experiment
from resnet_explorer.plans import degradation
from resnet_explorer.jobs import Job, run_jobs, threads_per_job
from resnet_explorer.recipes import get_recipe
from resnet_explorer.checkpoint import read_state as load_checkpoint
from resnet_explorer.experiments import read_manifest
from resnet_explorer.runs import RunDir, read_metrics

TIMING = ("images_per_s", "wall_time")


def numbers(run: Path) -> list[dict]:
    """A run's metrics lines without their clock readings."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run)]


def quiet(_: str) -> None:
    pass


@pytest.mark.slow
def test_two_jobs_give_each_run_its_solo_numbers_bit_for_bit(tmp_path):
    plans = degradation((8,), get_recipe("test", iters=10), width=4)  # plain-8 and resnet-8
    logs: list[str] = []
    both = run_experiment("degradation", plans, "synthetic:256", tmp_path / "both", device="cpu",
                          progress=False, log=logs.append, jobs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(2))
    try:
        solo = run_experiment("degradation", plans, "synthetic:256", tmp_path / "solo", device="cpu",
                              progress=False, log=quiet)
    finally:
        torch.set_num_threads(threads)
    assert [r["status"] for r in read_manifest(both)["runs"]] == ["finished", "finished"]
    for p in plans:
        a, b = both / p.name, solo / p.name
        assert numbers(a) == numbers(b) and any(r["kind"] == "eval" for r in numbers(a))
        wa, wb = (load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (a, b))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert json.loads((a / "analysis.json").read_text()) == json.loads((b / "analysis.json").read_text())
        assert (both / "logs" / f"{p.name}.log").is_file()
    assert sum("started (pid" in m for m in logs) == 2 and sum(": finished in" in m for m in logs) == 2


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_other_finishes_then_a_rerun_retries_it(tmp_path):
    plans = degradation((8,), get_recipe("test", iters=3, eval_every=3, log_every=3), width=4)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "plain-8").write_text("in the way")  # plain-8's run directory cannot be made
    logs: list[str] = []
    with pytest.raises(TrainingError, match=r"1 of 2 runs failed \(plain-8: .*is a file, not a directory"):
        run_experiment("degradation", plans, "synthetic:256", out, device="cpu", progress=False,
                       log=logs.append, jobs=2)
    runs = {r["name"]: r for r in read_manifest(out)["runs"]}
    assert runs["plain-8"]["status"] == "failed" and "is a file, not a directory" in runs["plain-8"]["error"]
    assert "\n" not in runs["plain-8"]["error"]
    assert runs["resnet-8"]["status"] == "finished" and RunDir(out / "resnet-8").iteration() == 3
    assert any("plain-8: FAILED" in m for m in logs)
    before = (out / "resnet-8" / "metrics.jsonl").read_text()
    (out / "plain-8").unlink()
    logs.clear()
    run_experiment("degradation", plans, "synthetic:256", out, device="cpu", progress=False, log=logs.append, jobs=2)
    assert [r["status"] for r in read_manifest(out)["runs"]] == ["finished", "finished"]
    assert "error" not in read_manifest(out)["runs"][0]
    assert any("resnet-8: finished earlier, skipped" in m for m in logs)
    assert (out / "resnet-8" / "metrics.jsonl").read_text() == before


def test_jobs_must_be_a_positive_number(tmp_path, capsys):
    with pytest.raises(UsageError, match="--jobs 0 is invalid"):
        run_experiment("degradation", degradation((8,), width=4), "synthetic:256", tmp_path / "e", jobs=0)
    assert main(["experiment", "degradation", "--data", "synthetic:256", "--jobs", "-1",
                 "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--jobs -1 is invalid" in err and err.count("\n") == 1
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_a_job_that_crashes_or_is_killed_is_one_line_and_the_pool_goes_on(tmp_path):
    jobs = [Job("bad", "json:loads", {"s": "{"}, tmp_path / "bad.log"),  # raises inside the job
            Job("ok", "json:dumps", {"obj": [1, 2]}, tmp_path / "ok.log"),
            Job("killed", "os:abort", {}, tmp_path / "k.log")]  # dies by a signal
    outcomes, stopped = run_jobs(jobs, 3, log=quiet)
    assert stopped is None
    assert [o.status for o in outcomes] == ["failed", "done", "failed"]
    assert outcomes[0].error.startswith("JSONDecodeError: Expecting property name") and outcomes[0].returncode == 1
    assert "Traceback" in (tmp_path / "bad.log").read_text()  # the whole story is in the job's log
    assert outcomes[1].value == "[1, 2]"
    assert outcomes[2].error.startswith("killed by SIGABRT") and outcomes[2].returncode == -signal.SIGABRT


@pytest.mark.slow
def test_ctrl_c_checkpoints_every_run_and_a_rerun_resumes_each(tmp_path):
    # 600 iterations (about 30 s each on one shared core): long enough that neither run can finish
    # while the other is still starting up (at 60, one once finished before the other logged a row).
    iters = 600
    recipe = {"iters": iters, "log_every": 1, "eval_every": iters, "checkpoint_every": iters, "log_grad_norms": False}
    plan = tmp_path / "two.json"
    plan.write_text(json.dumps([{"name": n, "arch": "cifar-resnet8", "arch_options": {"width": 4},
                                 "recipe": "test", "recipe_options": recipe} for n in ("a", "b")]))
    out = tmp_path / "exp"
    cmd = [str(Path(sys.executable).parent / "resnet-explorer"), "experiment", str(plan), "--data", "synthetic:256",
           "--device", "cpu", "--jobs", "2", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not all((out / n / "metrics.jsonl").is_file()
                                             and read_metrics(out / n) for n in ("a", "b")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C would, to the experiment alone: it forwards
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.strip().count("\n") == 0 and "stopped by SIGINT: 2 running run(s) checkpointed" in stderr
    stopped_at = {n: RunDir(out / n).iteration() for n in ("a", "b")}
    assert all(0 < it < iters for it in stopped_at.values()), stopped_at
    assert [r["status"] for r in read_manifest(out)["runs"]] == ["partial", "partial"]
    assert all("stopped by SIGINT" in (out / "logs" / f"{n}.log").read_text() for n in ("a", "b"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(resumed)") == 2
    assert [r["status"] for r in read_manifest(out)["runs"]] == ["finished", "finished"]
    for n in ("a", "b"):
        its = [row["iter"] for row in read_metrics(out / n) if row["kind"] == "train"]
        assert its == list(range(1, iters + 1))  # resumed where it stopped: every iteration once


def image_folder(root: Path, train: int = 13, test: int = 2) -> Path:
    """A tiny CIFAR-shaped image folder (10 classes of 32x32 PNGs): just over one batch of 128."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((32, 32, 3)) * 60 + 20 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_fidelity_benchmark_runs_its_three_rows_side_by_side_on_a_tiny_schedule(tmp_path):
    data = image_folder(tmp_path / "images")
    out = tmp_path / "fidelity"
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "cifar_fidelity.py"),
                        "--data", f"folder:{data}", "--iters", "3", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "3 runs in" in r.stdout and "| row | what | iters | wall s | images/s |" in r.stdout
    rows = json.loads((out / "fidelity.json").read_text())
    assert [x["row"] for x in rows] == ["a", "b", "c"]
    for x in rows:
        assert x["iters"] == x["planned_iters"] == 3 and x["images_per_s"] > 0
        assert [i for i, _ in x["evals"]] == [1, 2, 3] and 0 <= x["final_error"] <= 1  # every iteration (3 // 8 -> 1)
    assert "amp off, NCHW, compile off" in rows[1]["what"] and "reference" in rows[2]["what"]
    assert "At iteration 3 (every run evaluated it)" in (out / "fidelity.md").read_text()
    assert "- (a) - (b): " in (out / "fidelity.md").read_text()


def test_a_planted_link_at_a_jobs_log_is_refused_before_any_run_starts(tmp_path):
    """The attack: out/logs/RUN.log (or out/logs itself) is a link to a file of the victim's."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    plans = degradation((8,), get_recipe("test", iters=2), width=4)
    out = tmp_path / "exp"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "resnet-8.log").symlink_to(victim)
    with pytest.raises(UsageError, match=r"resnet-8.log is a link: remove it"):
        run_experiment("degradation", plans, "synthetic:256", out, device="cpu", progress=False, log=quiet, jobs=2)
    assert victim.read_text() == "precious"
    assert not (out / "plain-8").exists()  # nothing started
    (out / "logs" / "resnet-8.log").unlink()
    (out / "logs").rmdir()
    (out / "logs").symlink_to(tmp_path)
    with pytest.raises(UsageError, match=r"logs is a link"):
        run_experiment("degradation", plans, "synthetic:256", out, device="cpu", progress=False, log=quiet, jobs=2)
    assert not (tmp_path / "plain-8.log").exists()


@pytest.mark.slow
def test_when_the_parent_itself_fails_every_running_job_is_stopped_and_waited_for(tmp_path):
    def fail(outcome) -> None:
        raise RuntimeError(f"the caller broke on {outcome.name}")

    jobs = [Job("quick", "json:dumps", {"obj": 1}, tmp_path / "quick.log"),
            Job("long", "subprocess:call", {"args": ["sleep", "120"]}, tmp_path / "long.log")]
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="the caller broke on quick"):
        run_jobs(jobs, 2, log=quiet, on_done=fail)
    assert time.perf_counter() - t < 100  # "long" was stopped (SIGINT), not waited out
    assert "KeyboardInterrupt" in (tmp_path / "long.log").read_text()
