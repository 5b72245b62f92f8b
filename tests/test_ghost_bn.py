"""Ghost batch norm (a recipe's ``bn_batch``): BN over groups of the batch, as on the paper's two GPUs.

The claim: one process with ``bn_batch = B / 2`` trains like two data-parallel processes of
B / 2 images each without synchronised BN (gloo, torchrun), up to float summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_explorer import build, get_spec
from resnet_explorer.errors import RecipeError
from resnet_explorer.ghost_bn import GhostBatchNorm2d, convert, per_process
from resnet_explorer.recipes import get_recipe
from resnet_explorer.checkpoint import read_state as load_checkpoint
from resnet_explorer.runs import read_metrics
from resnet_explorer.train import train

ROOT = Path(__file__).resolve().parents[1]
# Two processes sum the weight gradients of their halves and average them (gloo all-reduce);
# one process sums the whole batch's at once: the same numbers, in another summation order.
# Measured (2-core CPU, cifar-resnet8 width 4, batch 32): the largest weight or BN-statistic
# difference is 3e-8 after 1 iteration, 2.4e-7 after 6, 9e-5 after 10 and 4e-3 after 20 (the
# rounding differences grow as training goes on), so the test compares 6 iterations.
ITERS = 6
TOL = dict(rtol=1e-5, atol=1e-6)


def ghost(bn: nn.BatchNorm2d, size: int) -> GhostBatchNorm2d:
    return GhostBatchNorm2d.from_bn(bn, size)


def test_each_group_is_normalised_alone_and_the_first_updates_the_running_statistics():
    torch.manual_seed(0)
    bn, plain = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
        plain.load_state_dict(bn.state_dict())
    g = ghost(bn, 4)
    x = torch.randn(12, 3, 5, 5) * 3 + 1
    y = g(x)
    for k in range(3):  # each group: what a plain BN of that group alone gives
        part = x[4 * k: 4 * k + 4]
        want = nn.functional.batch_norm(part, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        assert torch.equal(y[4 * k: 4 * k + 4], want)
    plain(x[:4])  # the running statistics: the first group's, as rank 0's under DDP
    assert torch.equal(bn.running_mean, plain.running_mean) and torch.equal(bn.running_var, plain.running_var)
    assert int(bn.num_batches_tracked) == 1
    assert not torch.allclose(y, plain(x))  # the whole batch's statistics differ
    # gradients flow to the shared parameters through every group
    y.square().sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def test_evaluation_and_small_batches_are_plain_batch_norm():
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    g = ghost(bn, 8)
    x = torch.randn(16, 3, 4, 4)
    g.eval()
    assert torch.equal(g(x), nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                                      False, 0.0, bn.eps))
    g.train()
    small = x[:8]
    assert torch.equal(g(small), nn.functional.batch_norm(small, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    # a batch that does not divide: the last group is shorter (as the last rank's slice)
    odd = torch.randn(10, 3, 4, 4)
    assert torch.equal(g(odd)[8:], nn.functional.batch_norm(odd[8:], None, None, bn.weight, bn.bias, True, 0.0, bn.eps))


def test_convert_keeps_the_net_its_parameters_and_its_state_dict():
    model = build(get_spec("cifar-resnet8", width=4, shortcut="B"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    converted = convert(model, 16)
    assert converted is model and [id(p) for p in model.parameters()] == params
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is GhostBatchNorm2d and m.bn_batch == 16 for m in bns)  # the shortcut's BN too
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    plain = build(get_spec("cifar-resnet8", width=4, shortcut="B"))
    plain.load_state_dict(model.state_dict())  # a ghost-BN checkpoint loads into the plain net
    assert convert(plain, None) is plain and not any(isinstance(m, GhostBatchNorm2d) for m in plain.modules())


def test_bn_batch_is_checked_in_one_line():
    assert get_recipe("cifar-paper", bn_batch=64).bn_batch == 64
    with pytest.raises(RecipeError, match=r"bn_batch=50 is invalid: use a divisor of batch_size=128"):
        get_recipe("cifar-paper", bn_batch=50)
    for bad in (0, -64, 6.4, True, "64"):
        with pytest.raises(RecipeError, match="bn_batch"):
            get_recipe("cifar-paper", bn_batch=bad)
    assert per_process(None, 64) is None
    assert per_process(64, 128) == 64
    assert per_process(64, 64) is None  # two processes of 64: plain BN is already the paper's
    with pytest.raises(RecipeError, match="does not divide the 32 images each process trains on"):
        per_process(64, 32)  # four processes of 32 cannot normalise groups of 64
    with pytest.raises(RecipeError, match="contradict"):
        per_process(64, 128, sync_bn=True)


def test_a_run_with_a_bn_batch_that_does_not_divide_the_batch_is_one_line_and_leaves_nothing(tmp_path, capsys):
    from resnet_explorer.cli import main

    out = tmp_path / "r"
    code = main(["train", "--arch", "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test",
                 "--set", "bn_batch=24", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "bn_batch=24 is invalid: use a divisor of batch_size=32" in err and err.count("\n") == 1
    assert not out.exists()


def test_one_process_with_bn_batch_trains_and_records_it(tmp_path):
    recipe = get_recipe("test", iters=6, bn_batch=8)
    spec = get_spec("cifar-resnet8", width=4)
    ghost_run = train(spec, "synthetic:256", recipe, tmp_path / "ghost", device="cpu", progress=False)
    plain_run = train(spec, "synthetic:256", get_recipe("test", iters=6), tmp_path / "plain", device="cpu",
                      progress=False)
    assert json.loads((tmp_path / "ghost" / "recipe.json").read_text())["bn_batch"] == 8
    a = load_checkpoint(ghost_run.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(plain_run.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert not torch.allclose(a["conv1.0.bn.running_mean"], b["conv1.0.bn.running_mean"])  # it did change BN


@pytest.mark.slow
def test_bn_batch_equals_two_process_ddp_without_sync_bn(tmp_path):
    """ITERS iterations of batch 32: torchrun with 2 gloo processes (16 images each, plain BN)
    against one process with bn_batch=16."""
    spec = get_spec("cifar-resnet8", width=4)
    (tmp_path / "net.json").write_text(spec.to_json())
    two = tmp_path / "two"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(ROOT / "tests" / "ddp_job.py"), str(tmp_path / "net.json"), str(two), "--iters", str(ITERS)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train(spec, "synthetic:256", get_recipe("test", iters=ITERS, bn_batch=16), tmp_path / "one",
                    device="cpu", progress=False).run_dir
        whole = train(spec, "synthetic:256", get_recipe("test", iters=ITERS), tmp_path / "whole",
                      device="cpu", progress=False).run_dir
    finally:
        torch.set_num_threads(threads)
    w1, w2, w0 = (load_checkpoint(d / "checkpoints" / "last.pt")["model"] for d in (one, two, whole))
    assert w1.keys() == w2.keys()
    for k in w1:  # weights and BN running statistics (rank 0's = the first group's)
        torch.testing.assert_close(w1[k], w2[k], **TOL, msg=k)
    gap = max((w1[k].float() - w0[k].float()).abs().max().item() for k in w1)
    diff = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1)
    assert gap > 100 * max(diff, 1e-7)  # whole-batch BN is another run; the tolerance is far below it
    # four processes of 8 images cannot normalise groups of 16: every rank says so in one line
    bad = tmp_path / "bad"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "--no-python", str(Path(sys.executable).parent / "resnet-explorer"), "train", "--arch",
                        "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test",
                        "--set", "bn_batch=32", "--out", str(bad), "--device", "cpu", "--quiet"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert "rank 0: bn_batch=32 does not divide the 16 images each process trains on" in r.stderr, r.stderr[-2000:]
    assert not bad.exists()
    rows1 = [r for r in read_metrics(one) if r["kind"] in ("train", "eval")]
    rows2 = [r for r in read_metrics(two) if r["kind"] in ("train", "eval")]
    assert [(r["kind"], r["iter"]) for r in rows1] == [(r["kind"], r["iter"]) for r in rows2]
    for a, b in zip(rows1, rows2):
        for key in ("train_loss", "test_loss", "train_error", "test_error"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)
