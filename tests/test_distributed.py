"""Data-parallel training on the CPU: two gloo processes under torchrun against one process.

PyTorch's SyncBatchNorm runs on CUDA only (DDP refuses it on CPU modules, "SyncBatchNorm
layers only work with GPU modules"), so the equivalence runs use a net without BatchNorm:
with BN, each rank normalises its own half-batch and two ranks differ from one by design.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import psutil
import pytest
import torch

from resnet_explorer.cli import main
from resnet_explorer.data import GpuCifarLoader, load_tensors, parse_data, pixel_mean
from resnet_explorer.data.imagenet import EpochBatchSampler
from resnet_explorer.distributed import shard
from resnet_explorer.recipes import get_recipe
from resnet_explorer.spec import ArchSpec, ConvLayer, Head, Pool, Stage
from resnet_explorer.runs import read_metrics
from resnet_explorer.train import train

pytestmark = pytest.mark.slow  # run the fast part alone with: pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "resnet-explorer")
TOL = dict(rtol=1e-4, atol=1e-5)  # float summation order differs between 1 and 2 processes


def no_bn_net() -> ArchSpec:
    """A small CIFAR-shaped conv net without BatchNorm (its result cannot depend on how the
    batch is split)."""
    conv = lambda c: ConvLayer(c, bias=True, bn=False, pool=Pool(2, 2))  # noqa: E731
    return ArchSpec(name="nobn", stages=[Stage("conv1", "conv", layers=[conv(8)]),
                                         Stage("conv2", "conv", layers=[conv(16)])],
                    head=Head("avgpool-fc"), residual=False, input_size=32, num_classes=10).validate()


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_same_weights(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], **TOL, msg=k)
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def assert_same_metrics(a: Path, b: Path) -> None:
    ra = [r for r in read_metrics(a) if r["kind"] != "grad"]
    rb = [r for r in read_metrics(b) if r["kind"] != "grad"]
    assert [(r["kind"], r["iter"], r["epoch"], r["lr"]) for r in ra] == \
           [(r["kind"], r["iter"], r["epoch"], r["lr"]) for r in rb]
    for x, y in zip(ra, rb):
        for key in ("train_error", "test_error"):
            assert x.get(key) == y.get(key), (x, y)
        for key in ("train_loss", "test_loss"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-5), (x, y)


# -- the data each rank sees --------------------------------------------------------------------
def test_shards_are_contiguous_and_cover_the_batch():
    assert [shard(0, 32, r, 2) for r in range(2)] == [(0, 16), (16, 32)]
    assert [shard(100, 110, r, 4) for r in range(4)] == [(100, 103), (103, 106), (106, 109), (109, 110)]
    assert [shard(0, 2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]  # the last rank: nothing


def test_ranks_together_see_the_single_process_batches():
    x, y, tx, ty = load_tensors(parse_data("synthetic:100"))
    mean = pixel_mean(x)
    one = GpuCifarLoader(x, y, 32, "cpu", True, mean, seed=5)
    two = [GpuCifarLoader(x, y, 32, "cpu", True, mean, seed=5, rank=r, world_size=2) for r in range(2)]
    assert len(two[0]) == len(one) == 3  # batches per epoch count global batches
    for ld in (one, *two):
        ld.set_epoch(1, start_batch=1)
    for (xb, yb), (x0, y0), (x1, y1) in zip(one, *two):
        assert x0.shape[0] == x1.shape[0] == 16
        assert torch.equal(torch.cat([x0, x1]), xb) and torch.equal(torch.cat([y0, y1]), yb)
    # evaluation: 200 test images in batches of 64 over 3 ranks, nothing lost or repeated
    tx, ty = tx[:200], ty[:200]
    ev = [GpuCifarLoader(tx, ty, 64, "cpu", False, mean, rank=r, world_size=3) for r in range(3)]
    per_rank = [[yb for _, yb in ld] for ld in ev]
    assert [[len(b) for b in r] for r in per_rank] == [[22, 22, 22, 3], [22, 22, 22, 3], [20, 20, 20, 2]]
    assert torch.equal(torch.cat([b for parts in zip(*per_rank) for b in parts]), ty)


def test_imagenet_batch_sampler_slices_the_same_global_batches():
    one = list(EpochBatchSampler(50, 8, True, True, seed=3))
    two = [list(EpochBatchSampler(50, 8, True, True, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(one) == 6 and [a + b for a, b in zip(*two)] == one  # same indices, same per-image seeds


# -- bad launches: one line, nothing written ------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--set", "batch_size=15"], "does not split evenly across 2 processes"),
    (["--dist-backend", "nccl"], "nccl needs GPUs"),
    (["--sync-bn"], "--sync-bn needs GPUs"),
    (["--dist-backend", "mpi"], "invalid choice"),
])
def test_bad_distributed_launch_is_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():  # as torchrun sets them
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_ADDR", raising=False)  # a check that let it through would fail to join
    with pytest.raises(SystemExit) if fragment == "invalid choice" else nullcontext():
        code = main(["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--recipe", "test",
                     "--device", "cpu", "--out", str(tmp_path / "r"), "--quiet", *args])
        assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_experiments_refuse_torchrun(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["demo", "--iters", "1", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "degradation runs in one process, not under torchrun" in err and err.count("\n") == 1, err
    assert not (tmp_path / "d").exists()


def test_resume_on_a_world_size_that_does_not_divide_the_batch_keeps_the_run(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert main(["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--recipe", "test",
                 "--iters", "4", "--set", "batch_size=15", "--out", str(run), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert main(["train", "--resume", "--out", str(run), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == ("resnet-explorer: error: rank 1: the global batch of 15 images does not split evenly "
                   "across 2 processes: use a number of processes that divides 15, or --set batch_size=N "
                   "with N a multiple of 2 (for a new run)\n")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# -- two processes equal one -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process: the whole run (20 iterations) and the same run stopped after 13."""
    d = tmp_path_factory.mktemp("one")
    (d / "nobn.json").write_text(no_bn_net().to_json())
    recipe = get_recipe("test", iters=20)
    train(no_bn_net(), "synthetic:256", recipe, d / "full", device="cpu", progress=False)
    train(no_bn_net(), "synthetic:256", recipe, d / "part", device="cpu", progress=False,
          should_stop=lambda it: it == 13)
    return d


def test_two_processes_train_like_one_and_resume_on_one(reference, tmp_path):
    run = tmp_path / "two"
    r = torchrun(str(ROOT / "tests" / "ddp_job.py"), str(reference / "nobn.json"), str(run),
                 "--iters", "20", "--stop-at", "13")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "iteration 13 finished False" in r.stdout
    env = json.loads((run / "env.json").read_text())["distributed"]
    assert env == {"world_size": 2, "backend": "gloo", "nnodes": 1, "sync_bn": False, "batch_per_rank": 16}
    # after 13 iterations of batch 2 x 16: the weights and the metrics of one process of batch 32
    diff = assert_same_weights(reference / "part", run)
    moved = max((a - b).abs().max().item() for a, b in zip(weights(reference / "part").values(),
                                                          weights(reference / "full").values()))
    assert moved > 1e3 * max(diff, 1e-7)  # the tolerance is far below what training changes
    assert_same_metrics(reference / "part", run)
    part = torch.load(reference / "part" / "checkpoints" / "last.pt", weights_only=False)
    two = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert (two["iteration"], two["epoch"], two["batch_in_epoch"]) == (13, 1, 5)
    assert two["window"] == part["window"] | {"time": two["window"]["time"]}
    torch.testing.assert_close(two["acc"][0], part["acc"][0], **TOL)  # summed over both ranks
    assert torch.equal(two["acc"][1], part["acc"][1])
    # resumed by a single process: the same run as the uninterrupted one
    done = train(None, None, None, run, resume=True, device="cpu", progress=False)
    assert done.finished and done.iteration == 20
    assert_same_weights(reference / "full", run)
    assert_same_metrics(reference / "full", run)


def test_one_process_resumed_on_two_with_the_command_line(reference, tmp_path):
    run = tmp_path / "part"
    shutil.copytree(reference / "part", run)
    r = torchrun("--no-python", EXE, "train", "--resume", "--out", str(run), "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("20 iterations, test error") == 1  # rank 0 alone reports
    assert_same_weights(reference / "full", run)
    assert_same_metrics(reference / "full", run)


# -- a lost rank ---------------------------------------------------------------------------------
def test_a_killed_rank_fails_the_job_loudly(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python",
           EXE, "train", "--arch", "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test",
           "--iters", "100000", "--set", "log_every=1", "--out", str(out), "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().strip()):  # both ranks are training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        workers = psutil.Process(proc.pid).children(recursive=True)
        victim = next(w for w in workers if w.environ().get("RANK") == "1")
        victim.send_signal(signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)  # fails, does not hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL)" in output and "local_rank: 1" in output, output[-3000:]
    assert read_metrics(out)  # what rank 0 wrote is still there


# -- the benchmark --------------------------------------------------------------------------------
def test_ddp_benchmark_runs():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ddp_throughput.py"), "--arch", "cifar-resnet8",
         "--width", "4", "--batch", "32", "--iters", "2", "--warmup", "1", "--images", "256"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line[:1].isdigit()}
    assert set(rows) == {"1", "2"}, r.stdout
    assert all(float(row[3]) > 0 for row in rows.values()), r.stdout
