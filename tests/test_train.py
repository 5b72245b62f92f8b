"""The training engine on the CPU: learning, resume equivalence, determinism, the guards."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_explorer import get_spec
from resnet_explorer.cli import main
from resnet_explorer.recipes import get_recipe
from resnet_explorer.errors import TrainingError
from resnet_explorer.runs import read_metrics
from resnet_explorer.train import train

DETERMINISTIC = ("kind", "iter", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


def small(**over):
    return get_recipe("test", **over)


def tiny_net(depth=8, **over):
    return get_spec(f"cifar-resnet{depth}", width=8, **over)


def strip(rows):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


@pytest.mark.slow
def test_loss_falls_on_mini_cifar(mini, tmp_path):
    recipe = small(iters=120, batch_size=64, lr=0.05, log_every=40, eval_every=120, checkpoint_every=120)
    result = train(tiny_net(14), f"folder:{mini}", recipe, tmp_path / "run", progress=False)
    rows = read_metrics(result.run_dir)
    losses = [r["train_loss"] for r in rows if r["kind"] == "train"]
    assert result.finished and result.iteration == 120
    assert losses[-1] < losses[0] - 0.2, losses
    assert rows[-1]["kind"] == "eval" and rows[-1]["test_error"] < 0.85
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["data"]["num_classes"] == 10 and data["train_size"] == 1000


def test_run_directory_records_everything(tmp_path):
    result = train(tiny_net(), "synthetic:256", small(), tmp_path / "run", progress=False)
    d = result.run_dir
    assert json.loads((d / "spec.json").read_text())["name"] == "cifar-resnet8"
    assert json.loads((d / "recipe.json").read_text())["name"] == "test"
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["amp"] == "off"
    assert (d / "checkpoints" / "last.pt").exists()
    assert not list((d / "checkpoints").glob("*.tmp"))
    rows = read_metrics(d)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["iter"] for r in train_rows] == list(range(5, 41, 5))
    for key in ("epoch", "lr", "train_loss", "train_error", "images_per_s", "wall_time"):
        assert key in train_rows[0]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [10, 20, 30, 40]
    assert "test_error" in evals[0] and "test_loss" in evals[0]
    # the schedule: lr / 10 at 50 % and 75 % of the run
    lrs = {r["iter"]: r["lr"] for r in train_rows}
    assert lrs[20] == pytest.approx(0.1) and lrs[25] == pytest.approx(0.01) and lrs[35] == pytest.approx(0.001)


@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path):
    a = train(tiny_net(), "synthetic:256", small(), tmp_path / "a", progress=False, seed=3)
    b = train(tiny_net(), "synthetic:256", small(), tmp_path / "b", progress=False, seed=3)
    c = train(tiny_net(), "synthetic:256", small(), tmp_path / "c", progress=False, seed=4)
    assert strip(read_metrics(a.run_dir)) == strip(read_metrics(b.run_dir))
    assert strip(read_metrics(a.run_dir)) != strip(read_metrics(c.run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [10, 13])  # at a checkpoint, and between log lines
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, stop_at):
    spec, recipe = tiny_net(), small(iters=30)
    full = train(spec, "synthetic:256", recipe, tmp_path / "full", progress=False)
    part = train(spec, "synthetic:256", recipe, tmp_path / "part", progress=False,
                 should_stop=lambda it: it == stop_at)
    assert not part.finished and part.iteration == stop_at
    done = train(None, None, None, tmp_path / "part", resume=True, progress=False)
    assert done.finished and done.iteration == 30
    assert strip(read_metrics(full.run_dir)) == strip(read_metrics(tmp_path / "part"))
    a = torch.load(full.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(tiny_net(), "synthetic:256", small(iters=20), run, progress=False, should_stop=lambda it: it == 10)
    with open(run / "metrics.jsonl", "a") as f:  # a crash after the checkpoint left these behind
        f.write(json.dumps({"kind": "train", "iter": 15, "train_loss": 9.9}) + "\n")
        f.write('{"kind": "train", "iter": 1')  # a torn line
    train(None, None, None, run, resume=True, progress=False)
    rows = read_metrics(run)
    assert [r["iter"] for r in rows if r["kind"] == "train"] == [5, 10, 15, 20]
    assert all(r.get("train_loss") != 9.9 for r in rows)


def test_divergence_keeps_the_last_finite_checkpoint_and_names_its_iteration(tmp_path):
    # the lr jumps to 1e29 at iteration 7: checkpoints at 3 and 6 are good, the one due at 9 is not
    run = tmp_path / "run"
    recipe = small(iters=20, checkpoint_every=3, milestones=[7], gamma=1e30)
    with pytest.raises(TrainingError, match=r"by iteration (8|9|10); the run is stopped and its last good "
                                            r"checkpoint is kept in .*last.pt \(iteration 6, its weights finite\)"):
        train(tiny_net(), "synthetic:256", recipe, run, progress=False)
    kept = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert kept["iteration"] == 6
    assert all(v.isfinite().all() for v in kept["model"].values() if v.is_floating_point())
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_a_diverged_model_is_never_checkpointed(tmp_path, capsys):
    # lr=1e30 with a checkpoint every 3 iterations (no log line falls on them)
    run = tmp_path / "run"
    code = main(["train", "--arch", "cifar-resnet8", "--width", "8", "--data", "synthetic:256", "--recipe", "test",
                 "--set", "lr=1e30", "--set", "checkpoint_every=3", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no checkpoint had been written yet" in err, err
    assert not (run / "checkpoints" / "last.pt").exists()


def test_a_checkpoint_with_nan_weights_is_refused_on_resume(tmp_path):
    run = tmp_path / "run"
    train(tiny_net(), "synthetic:256", small(iters=20), run, progress=False, should_stop=lambda it: it == 10)
    good = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    good["model"]["conv1.0.conv.weight"].fill_(float("nan"))
    torch.save(good, run / "checkpoints" / "last.pt")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(TrainingError, match=r"holds 1 non-finite tensors \(conv1.0.conv.weight …\): it is not a good"):
        train(None, None, None, run, resume=True, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_huge_lr_diverges_without_a_traceback(tmp_path, capsys):
    code = main(["train", "--arch", "cifar-plain8", "--data", "synthetic:256", "--recipe", "test",
                 "--set", "lr=1e12", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "loss became" in err and err.count("\n") == 1


def test_warmup_for_deep_nets_until_training_error_below_threshold():
    from resnet_explorer.recipes import LRSchedule

    r = get_recipe("cifar-paper")
    s = LRSchedule(r, warmup=get_spec("cifar-resnet110").depth >= r.warmup_min_depth)
    assert s.lr(0) == 0.01
    s.observe_train_error(0.85)
    assert s.lr(100) == 0.01
    s.observe_train_error(0.79)
    assert s.lr(400) == 0.1 and s.lr(32_000) == pytest.approx(0.01) and s.lr(48_000) == pytest.approx(0.001)
    assert LRSchedule(r, warmup=get_spec("cifar-resnet56").depth >= r.warmup_min_depth).lr(0) == 0.1


def test_plateau_schedule():
    from resnet_explorer.recipes import LRSchedule

    s = LRSchedule(get_recipe("imagenet-paper", plateau_patience=2), warmup=False)
    for e in (0.9, 0.8, 0.8, 0.8):
        s.observe_eval_error(e)
    assert s.lr(0) == pytest.approx(0.01)


def test_paper_recipes_as_data():
    c = get_recipe("cifar-paper")
    assert (c.batch_size, c.lr, c.momentum, c.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert c.milestones == [32_000, 48_000] and c.max_iters == 64_000
    i = get_recipe("imagenet-paper")
    assert (i.batch_size, i.schedule, i.max_iters) == (256, "plateau", 600_000)
    short = get_recipe("cifar-paper", iters=640)
    assert short.milestones == [320, 480]
    assert get_recipe("cifar-paper", lr=0.05).lr == 0.05


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--arch", "cifar-resnet20", "--data", "folder:/nonexistent"], "/nonexistent"),
        (["--arch", "cifar-resnet20", "--data", "mnist:/x"], "synthetic"),
        (["--arch", "cifar-resnet21", "--data", "synthetic"], "6n+2"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--recipe", "fast"], "unknown recipe 'fast'"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--set", "lr"], "--set FIELD=VALUE"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--set", "lrr=1"], "no field(s) lrr"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--iters", "0"], "iters=0 is invalid"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--device", "cuda"], "sees no GPU"),
        (["--arch", "cifar-resnet20", "--data", "synthetic", "--amp", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--resume", "--out", "/nonexistent/run"], "no checkpoint to resume from"),
        (["--data", "synthetic"], "needs --arch and --data"),
        (["--arch", "cifar-resnet8", "--data", "synthetic:20"], "fewer than one batch of 32"),
        (["--arch", "cifar-resnet8", "--data", "synthetic:256", "--set", "val_split=256"], "val_split=256 must be between"),
        (["--arch", "cifar-resnet8", "--data", "synthetic:256", "--workers", "-1"], "workers=-1 is invalid"),
    ],
)
def test_bad_train_input_one_line(tmp_path, capsys, args, fragment):
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("this machine has a GPU")
    code = main(["train", *args, "--recipe" if "--recipe" not in args else "--quiet",
                 *([] if "--recipe" in args else ["test"]), "--quiet"] +
                ([] if "--out" in args else ["--out", str(tmp_path / "r")]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1, err


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    args = ["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--recipe", "test",
            "--iters", "5", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_cli_train_and_resume_end_to_end(tmp_path):
    exe = Path(sys.executable).parent / "resnet-explorer"
    out = tmp_path / "run"
    r = subprocess.run([str(exe), "train", "--arch", "cifar-resnet8", "--data", "synthetic:256",
                        "--recipe", "test", "--iters", "10", "--out", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "10 iterations, test error" in r.stdout
    r = subprocess.run([str(exe), "train", "--resume", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0 and "10 iterations" in r.stdout  # already finished: nothing more to do


def test_val_split_holds_out_training_images(tmp_path):
    result = train(tiny_net(), "synthetic:512", small(iters=5, val_split=100), tmp_path / "r", progress=False)
    data = json.loads((result.run_dir / "data.json").read_text())
    assert data["eval_split"] == "val" and data["eval_size"] == 100 and data["train_size"] == 412


def test_resume_refuses_a_different_architecture(tmp_path):
    run = tmp_path / "r"
    train(tiny_net(), "synthetic:256", small(iters=10), run, progress=False, should_stop=lambda it: it == 5)
    with pytest.raises(TrainingError, match="was started with architecture cifar-resnet8, not cifar-resnet14"):
        train(tiny_net(14), None, None, run, resume=True, progress=False)
