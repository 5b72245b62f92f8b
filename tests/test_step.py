"""The whole training step in one function (``--compile step``, `step.WholeStep`) against the
eager step (`torch.optim.SGD` after autograd's backward), on the CPU.

On a GPU the compiled function is replayed as one CUDA graph; that replay cannot run here,
but the function it captures is this one, compiled by inductor.
"""

import copy

import pytest
import torch

from resnet_explorer import get_spec
from resnet_explorer.devices import Accel
from resnet_explorer.errors import TrainingError
from resnet_explorer.model import build
from resnet_explorer.recipes import get_recipe
from resnet_explorer.step import Stepper
from resnet_explorer.runs import read_metrics
from resnet_explorer.train import train

CPU = torch.device("cpu")
LRS = (0.1, 0.1, 0.05)  # the schedule moves: the learning-rate tensor must follow
# The comparison runs in float64: in float32 a few steps of a small net on random data are
# chaotic (one ReLU flipped by a rounding difference moves the momentum by ~1e-3 after two or
# three steps, for the eager step against itself in fp64 too), so only fp64 can tell a wrong
# update from rounding. Measured (CPU, inductor, 3 steps): loss 2.4e-7 (the loss is taken in
# fp32, as in training), weights and BN buffers 2.7e-9, momentum 2.7e-8. A dropped weight
# decay moves the momentum by ~3e-4, a wrong momentum or a stale learning rate by far more.
LOSS_TOL, STATE_TOL = 1e-6, 1e-6


def net_and_opt(width: int = 16, dtype: torch.dtype = torch.float32):
    """ResNet-8 at the paper's width (narrower nets hit oneDNN's imprecise small-channel convs
    on the CPU), channels_last, SGD as the recipes make it."""
    torch.manual_seed(0)
    model = build(get_spec("cifar-resnet8", width=width)).to(dtype).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return model, opt


def batches(n: int = len(LRS)):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last),
             torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def run(mode: str, dtype: torch.dtype = torch.float32):
    model, opt = net_and_opt(dtype=dtype)
    step = Stepper(model, opt, Accel("off", True, mode), CPU)
    losses, norms = [], []
    for (x, y), lr in zip(batches(), LRS):
        loss, logits = step(x.to(dtype), y, lr)
        assert logits.shape == (8, 10)
        losses.append(loss.item())
        norms.append(step.grad_norms())
    return losses, norms, copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def compare(a, b) -> dict:
    (la, na, sa, oa), (lb, nb, sb, ob) = a, b
    return {"loss": max(abs(x - y) for x, y in zip(la, lb)),
            "weights and BN buffers": max_diff(sa, sb),
            "momentum": max_diff({k: v["momentum_buffer"] for k, v in oa["state"].items()},
                                 {k: v["momentum_buffer"] for k, v in ob["state"].items()}),
            "grad norms": max(abs(x[k] - y[k]) for x, y in zip(na, nb) for k in x),
            "lr": abs(oa["param_groups"][0]["lr"] - ob["param_groups"][0]["lr"])}


@pytest.mark.slow
def test_the_compiled_whole_step_equals_the_eager_step(capsys):
    eager = run("off", torch.float64)
    compiled = run("step", torch.float64)  # torch.compile (inductor on the CPU) of forward, backward and SGD
    diffs = compare(eager, compiled)
    with capsys.disabled():
        print("\ncompiled whole step vs eager (fp64), after", len(LRS), "steps:",
              ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    assert diffs["loss"] <= LOSS_TOL and diffs["lr"] == 0, diffs
    assert diffs["weights and BN buffers"] <= STATE_TOL and diffs["momentum"] <= STATE_TOL, diffs
    assert diffs["grad norms"] <= 1e-6 * max(max(n.values()) for n in eager[1])
    # the BN running statistics moved (the compiled function wrote the module's own buffers)
    assert eager[2]["conv1.0.bn.num_batches_tracked"] == compiled[2]["conv1.0.bn.num_batches_tracked"] == 3
    fresh = net_and_opt(dtype=torch.float64)[0].state_dict()
    assert (compiled[2]["conv1.0.bn.running_var"] - fresh["conv1.0.bn.running_var"]).abs().max() > 1e-3


@pytest.fixture
def uncompiled(monkeypatch):
    """torch.compile as a no-op: the whole-step function runs as Python (fast to test)."""
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")


def test_the_whole_step_function_is_sgd_with_momentum_and_weight_decay(uncompiled):
    diffs = compare(run("off", torch.float64), run("step", torch.float64))
    assert diffs["loss"] <= 1e-6 and diffs["lr"] == 0
    assert diffs["weights and BN buffers"] <= 1e-6 and diffs["momentum"] <= 1e-6 and diffs["grad norms"] <= 1e-5


def strip(rows):
    keys = ("kind", "iter", "lr", "train_loss", "train_error", "test_loss", "test_error")
    return [{k: r[k] for k in keys if k in r} for r in rows]


@pytest.mark.slow
def test_a_whole_step_run_resumes_exactly_and_across_modes(tmp_path, uncompiled):
    """Interrupted and resumed with --compile step equals uninterrupted (metrics and weights bit for
    bit); a run checkpointed by the eager step resumes under --compile step, and back."""
    spec, recipe = get_spec("cifar-resnet8", width=8), get_recipe("test", iters=20)
    kw = dict(progress=False)
    full = train(spec, "synthetic:256", recipe, tmp_path / "full", compile="step", **kw)
    part = train(spec, "synthetic:256", recipe, tmp_path / "part", compile="step",
                 should_stop=lambda it: it == 10, **kw)
    assert not part.finished and part.iteration == 10
    ckpt = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert len(ckpt["optimizer"]["state"]) == len(list(build(spec).parameters()))  # the momentum travels
    train(None, None, None, tmp_path / "part", resume=True, compile="step", **kw)
    assert strip(read_metrics(full.run_dir)) == strip(read_metrics(tmp_path / "part"))
    a = torch.load(full.run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])

    eager = train(spec, "synthetic:256", recipe, tmp_path / "eager", **kw)
    mixed = train(spec, "synthetic:256", recipe, tmp_path / "mixed", should_stop=lambda it: it == 10, **kw)
    train(None, None, None, mixed.run_dir, resume=True, compile="step", **kw)
    rows_e, rows_m = strip(read_metrics(eager.run_dir)), strip(read_metrics(mixed.run_dir))
    assert [r["iter"] for r in rows_e] == [r["iter"] for r in rows_m]
    for r, s in zip(rows_e, rows_m):  # the same run up to rounding (the update is the same arithmetic)
        assert all(r[k] == pytest.approx(s[k], rel=1e-4, abs=1e-6) for k in r if k != "kind")


@pytest.mark.filterwarnings("ignore:torch.cuda.amp.GradScaler is enabled")
@pytest.mark.parametrize("how, fragment", [
    (dict(amp="fp16"), "--compile step has no fp16 grad scaler"),
    (dict(nesterov=True), "without dampening, nesterov or maximize"),
    (dict(groups=2), "SGD with one parameter group"),
    (dict(adam=True), "SGD with one parameter group"),
])
def test_what_the_whole_step_cannot_do_is_one_line(how, fragment):
    model, _ = net_and_opt(width=4)
    params = list(model.parameters())
    if how.get("adam"):
        opt = torch.optim.Adam(params)
    elif how.get("groups"):
        opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=how.get("nesterov", False))
    accel = Accel(how.get("amp", "off"), True, "step")
    with pytest.raises(TrainingError, match=fragment.replace("-", r"\-")):
        Stepper(model, opt, accel, CPU)
    with pytest.raises(TrainingError, match="--compile step trains in one process"):
        Stepper(model, torch.optim.SGD(params, lr=0.1), Accel("off", True, "step"), CPU,
                forward=torch.nn.Sequential(model))


def test_the_command_line_offers_the_whole_step(capsys):
    from resnet_explorer.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "step (the whole SGD step in one graph" in " ".join(capsys.readouterr().out.split())
    assert Accel.resolve(CPU, compile="step").compile == "step"


def test_tf32_is_on_unless_the_environment_turns_it_off(monkeypatch):
    from resnet_explorer.devices import environment

    monkeypatch.delenv("RESNET_EXPLORER_TF32", raising=False)
    assert Accel.resolve(CPU).tf32 is True
    monkeypatch.setenv("RESNET_EXPLORER_TF32", "0")
    off = Accel.resolve(CPU)
    assert off.tf32 is False and Accel.resolve(CPU, tf32=True).tf32 is True
    assert environment(CPU, off)["tf32"] is None  # a CPU has no TF32: the record says nothing
