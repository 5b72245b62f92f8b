"""Runs you can trust: the safe checkpoint loader on every path, finite checkpoints, one writer
per run, resume checked against the run's records, experiments that know their runs, and the
logged images/s against the wall clock.

Every defence is tested with its attack: a checkpoint whose pickle runs ``touch MARKER`` is
handed to each load path (command line and Python API, widgets included), and the marker
file must never appear.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import one_line
import torch

from resnet_explorer import get_spec
from resnet_explorer.checkpoint import read_state
from resnet_explorer.cli import main
from resnet_explorer.errors import EvalError, TrainingError, UserError
from resnet_explorer.evaluate import evaluate_paths, load_model
from resnet_explorer.experiments import run_experiment
from resnet_explorer.plans import degradation
from resnet_explorer.run_analysis import analyze_run
from resnet_explorer.model import build
from resnet_explorer.recipes import get_recipe
from resnet_explorer.experiments import manifest_path, read_manifest
from resnet_explorer.runs import RunDir, read_metrics
from resnet_explorer.safeio import LOCK_NAME
from resnet_explorer.train import train

TINY = get_recipe("test", iters=10)  # batch 32: log 5, eval and checkpoint 10
DETERMINISTIC = ("kind", "iter", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny nets, one thread


def tiny(name: str = "cifar-resnet8"):
    return get_spec(name, width=4)


def strip(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


def files(run: Path) -> dict[Path, bytes]:
    """Every file of a run but its lock (whose holder line changes with each writer)."""
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 20-iteration run stopped (and checkpointed) at iteration 10."""
    d = tmp_path_factory.mktemp("runs") / "stopped"
    train(tiny(), "synthetic:256", get_recipe("test", iters=20), d, progress=False, should_stop=lambda it: it == 10)
    return d


@pytest.fixture(scope="module")
def full20(tmp_path_factory) -> Path:
    """The same 20-iteration run, never interrupted."""
    d = tmp_path_factory.mktemp("runs") / "full"
    train(tiny(), "synthetic:256", get_recipe("test", iters=20), d, progress=False)
    return d


def same_run(a: Path, b: Path) -> None:
    """Bit for bit: the deterministic metrics and every weight of the last checkpoint."""
    assert strip(read_metrics(a)) == strip(read_metrics(b))
    wa, wb = (torch.load(RunDir(d).checkpoint_path, weights_only=True)["model"] for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    return Path(shutil.copytree(stopped, tmp_path / "run"))


# -- 1. a checkpoint that runs code ------------------------------------------------------------------
class Payload:
    """Unpickled by an unsafe loader, this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def plant(ckpt: Path, marker: Path) -> Path:
    state = torch.load(ckpt, weights_only=True)
    state["notes"] = Payload(marker)
    torch.save(state, ckpt)
    return ckpt


def test_the_attack_is_real(run, tmp_path):
    marker = tmp_path / "pwned"
    plant(RunDir(run).checkpoint_path, marker)
    torch.load(RunDir(run).checkpoint_path, weights_only=False)  # what the project did before
    assert marker.exists()


def test_a_malicious_checkpoint_is_refused_on_every_path(run, tmp_path, capsys):
    from resnet_explorer.widgets import LayerResponseView, TrainingDashboard

    marker = tmp_path / "pwned"
    ckpt = plant(RunDir(run).checkpoint_path, marker)
    loose = Path(shutil.copy(ckpt, tmp_path / "shared.pt"))
    RunDir(run).write_analysis({"iteration": 10})  # so that analysis_current reads the checkpoint
    before = files(run)
    refused = "is refused: it asks to build posix.system"
    api = [
        lambda: read_state(ckpt),
        lambda: read_state(ckpt, mmap=True),
        lambda: RunDir(run).iteration(),
        lambda: RunDir(run).analysis_current(),
        lambda: load_model(run),
        lambda: load_model(loose),
        lambda: evaluate_paths([run]),
        lambda: evaluate_paths([loose], data="synthetic:256"),
        lambda: train(None, None, None, run, resume=True, progress=False),
        lambda: analyze_run(run, "synthetic:256"),
    ]
    for call in api:
        with pytest.raises(UserError, match=refused):
            call()
        assert not marker.exists()
    for argv in (["eval", str(run)], ["eval", str(loose), "--data", "synthetic:256"],
                 ["train", "--resume", "--out", str(run), "--quiet"]):
        assert refused in one_line(capsys, main(argv))
        assert not marker.exists()
    # the widgets: the dashboard's Open (and Resume) and the layer-response view
    dash = TrainingDashboard(device="cpu")
    for click in (lambda: dash.open(str(run)), dash.resume):
        try:
            click()
            shown = dash.error or ""
        except UserError as e:  # shown or raised, it is refused, in one line
            shown = str(e)
        dash.wait(60)
        assert refused in (shown or dash.error or ""), (shown, dash.error)
    view = LayerResponseView([run], data="synthetic:256")
    assert view.error and refused in view.error
    assert not marker.exists()
    assert files(run) == before


@pytest.mark.slow
def test_a_malicious_checkpoint_in_an_experiment_is_refused(tmp_path):
    plans = degradation((8,), TINY, width=4)[:1]
    out = run_experiment("degradation", plans, "synthetic:256", tmp_path / "exp", progress=False, log=lambda m: None)
    marker = tmp_path / "pwned"
    plant(RunDir(out / "plain-8").checkpoint_path, marker)
    with pytest.raises(TrainingError, match="is refused: it asks to build posix.system"):
        run_experiment("degradation", plans, "synthetic:256", out, progress=False, log=lambda m: None)
    assert not marker.exists()


# -- 2. checkpoints that are not this run's -----------------------------------------------------------
def _foreign(ckpt: Path) -> None:
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), ckpt)


def _other_arch(ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)
    state["spec"], state["model"] = tiny("cifar-resnet14").to_dict(), build(tiny("cifar-resnet14")).state_dict()
    torch.save(state, ckpt)


def _other_weights(ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)
    state["model"] = build(tiny("cifar-resnet14")).state_dict()  # the spec still says resnet-8
    torch.save(state, ckpt)


def _eval_only(ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)
    torch.save({"spec": state["spec"], "model": state["model"]}, ckpt)


def _bad_rng(ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)
    state["rng"] = {"torch": torch.zeros(3, dtype=torch.uint8)}
    torch.save(state, ckpt)


def _edit(**changes):
    def spoil(ckpt: Path) -> None:
        state = torch.load(ckpt, weights_only=True)
        state.update(changes)
        torch.save(state, ckpt)
    return spoil


@pytest.mark.parametrize("spoil,fragment", [
    (lambda c: c.write_bytes(c.read_bytes()[: c.stat().st_size // 2]), "is not a resnet-explorer checkpoint (it is empty, truncated"),
    (lambda c: c.write_bytes(b""), "is not a resnet-explorer checkpoint (it is empty, truncated"),
    (_foreign, "without 'model' and 'spec'; a bare state dict"),
    (_other_arch, "holds a cifar-resnet14 but the run trains cifar-resnet8"),
    (_other_weights, "cannot be resumed: it does not fit this run (RuntimeError"),
    (_eval_only, "cannot be resumed: it lacks optimizer, schedule, scaler"),
    (_bad_rng, "cannot be resumed: it does not fit this run"),
    (_edit(window={"loss": "x", "wrong": 0, "seen": 0, "time": 0.0}), "its position in the run (iteration, epoch, metrics window) is malformed"),
    (_edit(batch_in_epoch=10**6), "it stands at epoch 1, batch 1000000 (epochs of 8), which is not iteration 10"),
], ids=["truncated", "empty", "torchvision", "other-architecture", "other-weights", "eval-only", "bad-rng",
        "bad-window", "past-the-epoch"])
def test_resume_over_a_bad_checkpoint_is_one_line(run, capsys, spoil, fragment):
    spoil(RunDir(run).checkpoint_path)
    before = files(run)
    err = one_line(capsys, main(["train", "--resume", "--out", str(run), "--quiet"]))
    assert fragment in err
    assert files(run) == before


@pytest.mark.slow
def test_a_checkpoint_in_the_old_format_still_loads_and_resumes_exactly(run, full20):
    # torch.save's legacy (non-zip) format, as older PyTorch wrote: the safe loader reads it
    ckpt = RunDir(run).checkpoint_path
    torch.save(torch.load(ckpt, weights_only=True), ckpt, _use_new_zipfile_serialization=False)
    assert RunDir(run).iteration() == 10 and load_model(run).spec.name == "cifar-resnet8"
    train(None, None, None, run, resume=True, progress=False)
    same_run(run, full20)


# -- 3. malformed records ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,text,fragment", [
    ("recipe.json", '{"name": "test", "batch_si', "recipe.json is malformed (not JSON"),
    ("recipe.json", '{"name": "test", "lr": "abc"}', "recipe.json is malformed (recipe test: lr='abc'"),
    ("recipe.json", "[]", "recipe.json is malformed (not an object)"),
    ("env.json", "", "env.json is malformed (not JSON"),
    ("env.json", '{"seed": "zero"}', 'env.json is malformed (expected an object with a "seed" >= 0)'),
    ("data.json", '{"arg": 5}', 'data.json is malformed (expected an object with "arg"'),
    ("spec.json", '{"name": "x", "stages": [1]}', "spec.json is malformed"),
])
def test_resume_over_a_malformed_record_is_one_line(run, capsys, name, text, fragment):
    (run / name).write_text(text)
    before = files(run)
    assert fragment in one_line(capsys, main(["train", "--resume", "--out", str(run), "--quiet"]))
    assert files(run) == before


# -- 4. one writer per run ------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(run, tmp_path, capsys):
    holder = RunDir(run).lock()  # as a training process holds it
    try:
        before = files(run)
        with pytest.raises(TrainingError, match=rf"is being written by another process \(pid {os.getpid()} on "):
            train(None, None, None, run, resume=True, progress=False)
        err = one_line(capsys, main(["train", "--resume", "--out", str(run), "--quiet"]))
        assert f"{run} is being written by another process (pid {os.getpid()}" in err
        assert files(run) == before
        fresh = tmp_path / "fresh"
        with RunDir(fresh).lock():
            with pytest.raises(TrainingError, match="being written by another process"):
                train(tiny(), "synthetic:256", TINY, fresh, progress=False)
            assert not RunDir(fresh).has_started()
    finally:
        holder.release()
    done = train(None, None, None, run, resume=True, progress=False)  # released: it goes on
    assert done.finished and done.iteration == 20


def test_a_lock_file_removed_by_its_last_holder_is_never_shared(tmp_path):
    import fcntl

    d = tmp_path / "r"
    first = RunDir(d).lock()
    stale = os.open(d / LOCK_NAME, os.O_RDWR)  # a process that opened the file just before
    first.release(remove_if_unused=True)  # a run refused at once: its folder goes
    assert not d.exists()
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it now locks a file that is gone …
    try:
        with RunDir(d).lock():  # … which is not the run's lock: the next writer takes a new one
            with pytest.raises(TrainingError, match="being written by another process"):
                RunDir(d).lock()
    finally:
        os.close(stale)


def test_an_experiment_has_one_writer_too(tmp_path):
    out = tmp_path / "exp"
    with RunDir(out).lock():
        with pytest.raises(TrainingError, match=f"{out} is being written by another process"):
            run_experiment("degradation", degradation((8,), TINY, width=4), "synthetic:256", out,
                           progress=False, log=lambda m: None)


# -- 5. resume is given the run's own settings, or says what differs ---------------------------------------
def test_resume_checks_the_data_recipe_and_seed_it_is_given(run, capsys):
    before = files(run)
    cases = {
        ("--data", "synthetic:1024"): "was started with data synthetic:256:0, not synthetic:1024:0",
        ("--iters", "40"): "max_iters=20 (asked 40)",
        ("--set", "lr=0.05"): "recipe lr=0.1 (asked 0.05)",
        ("--set", "iters=30"): "max_iters=20 (asked 30)",
        ("--recipe", "cifar-short"): "recipe name='test' (asked 'cifar-short')",
        ("--seed", "3"): "seed 0, not 3",
        ("--set", "lrr=0.1"): "recipe has no field(s) lrr: use augment",
        ("--arch", "cifar-resnet8"): "architecture cifar-resnet8 with widths [4, 4, 8, 16] (asked [16, 16, 32, 64])",
    }
    for args, fragment in cases.items():
        err = one_line(capsys, main(["train", "--resume", "--out", str(run), *args, "--quiet"]))
        # a field no recipe has is refused before any comparison with the run; the rest say what differs
        assert fragment in err and ("no field" in fragment or "resume with the run's own settings" in err), err
    assert files(run) == before
    # the same settings, said again, are fine
    assert main(["train", "--resume", "--out", str(run), "--data", "synthetic:256", "--iters", "20",
                 "--set", "lr=0.1", "--seed", "0", "--arch", "cifar-resnet8", "--width", "4", "--quiet"]) == 0
    assert RunDir(run).iteration() == 20


def test_a_resume_of_nothing_makes_no_directory(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "run"
    assert "no checkpoint to resume from" in one_line(capsys, main(["train", "--resume", "--out", str(missing)]))
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_records(run, full20):
    shutil.rmtree(run / "checkpoints")  # records and metrics, but no checkpoint yet
    with open(RunDir(run).metrics_path, "a") as f:
        f.write('{"kind": "train", "iter": 1')  # torn by the kill
    with pytest.raises(TrainingError, match="already holds a run: continue it with --resume"):
        train(tiny(), "synthetic:256", get_recipe("test", iters=20), run, progress=False)
    assert train(None, None, None, run, resume=True, progress=False).finished
    same_run(run, full20)


# -- 6. an experiment knows its runs by their records ------------------------------------------------------
@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "degradation"
    return run_experiment("degradation", degradation((8,), TINY, width=4), "synthetic:256", out,
                          progress=False, log=lambda m: None)


@pytest.fixture
def exp(experiment, tmp_path) -> Path:
    return Path(shutil.copytree(experiment, tmp_path / "exp"))


EXP = ["experiment", "degradation", "--depths", "8", "--data", "synthetic:256", "--recipe", "test",
       "--iters", "10", "--quiet"]


@pytest.mark.slow
def test_a_lost_manifest_does_not_let_other_runs_count_as_finished(exp, capsys):
    manifest_path(exp).unlink()
    before = files(exp)
    err = one_line(capsys, main([*EXP, "--width", "8", "--out", str(exp)]))
    assert "plain-8 holds another run than this experiment's plain-8 (it was started with architecture " \
           "cifar-plain8 with widths [4, 4, 8, 16] (asked [8, 8, 16, 32]))" in err
    assert files(exp) == before and not (exp / "report.html").exists()
    err = one_line(capsys, main([*EXP, "--width", "4", "--set", "lr=0.2", "--out", str(exp)]))
    assert "recipe lr=0.1 (asked 0.2)" in err


@pytest.mark.slow
def test_a_lost_manifest_is_rebuilt_from_the_runs(exp):
    manifest_path(exp).unlink()
    logs: list[str] = []
    run_experiment("degradation", degradation((8,), TINY, width=4), "synthetic:256", exp, progress=False,
                   log=logs.append)
    assert len(logs) == 2 and all("finished earlier, skipped" in line for line in logs)
    manifest = read_manifest(exp)
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]


@pytest.mark.parametrize("text,why", [
    ('{"name": "degradation", "da', "not JSON"), ("", "empty"), ("{}", 'a non-empty "runs" list'),
    ("[]", 'a non-empty "runs" list'),
    ('{"name": "d", "data": "synthetic:256", "runs": [{"dir": "../../elsewhere"}]}', "must be the name of a folder"),
], ids=["truncated", "empty", "{}", "[]", "escapes"])
def test_a_corrupt_manifest_is_one_line(tmp_path, capsys, text, why):
    exp = tmp_path / "exp"  # the manifest is read before any run is looked at
    exp.mkdir()
    manifest_path(exp).write_text(text)
    before = files(exp)
    err = one_line(capsys, main([*EXP, "--width", "4", "--out", str(exp)]))
    assert "manifest.json is corrupt (" in err and why in err and "delete it and run the experiment again" in err
    assert files(exp) == before


# -- 7. the logged images/s is the rate the wall clock shows ------------------------------------------------
def test_images_per_second_is_the_windows_images_over_its_wall_clock_time(tmp_path):
    # 8 batches an epoch, a line every 7 iterations: windows straddle epoch boundaries (where
    # the old loop dropped time); an eval every 14 (its time is not training time) and a
    # checkpoint every 9 (whose time is)
    stamps: list[tuple[float, dict]] = []
    recipe = get_recipe("test", iters=40, log_every=7, eval_every=14, checkpoint_every=9)
    t0 = time.perf_counter()
    train(tiny(), "synthetic:256", recipe, tmp_path / "r", progress=False,
          on_metrics=lambda row: stamps.append((time.perf_counter(), row)))
    windows = []  # (logged seconds, wall-clock seconds) of each window after the first
    prev, evals, last = None, 0.0, t0
    for t, row in stamps:
        if row["kind"] == "eval":
            evals += t - last  # the eval ran from the line before it to its own line
        if row["kind"] == "train":
            if prev is not None:
                images = (row["iter"] - prev["iter"]) * recipe.batch_size
                windows.append((images / row["images_per_s"], t - prev_t - evals))
            else:
                first = recipe.log_every * recipe.batch_size / row["images_per_s"]
                assert first <= t - t0  # the first window began after train() was called
            prev, prev_t, evals = row, t, 0.0
        last = t
    assert len(windows) == 5
    # The two clocks are read a few microseconds apart (the trainer's before the line is
    # written, ours as it is), so they agree to well under one iteration (~30 ms here); the
    # old loop lost one to six whole iterations in every window that crossed an epoch.
    for logged, wall in windows:
        assert abs(logged - wall) <= 0.005 + 0.02 * wall, windows
    assert sum(w for w, _ in windows) == pytest.approx(sum(w for _, w in windows), rel=0.01)


# -- 8. smaller: interrupts, the input size ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_where_it_lands_and_resume_is_exact(tmp_path, full20, sig):
    recipe = get_recipe("test", iters=20)  # periodic checkpoints at 10 and 20 only

    def send_at_7(it: int) -> bool:
        if it == 7:
            os.kill(os.getpid(), sig)
        return False

    with pytest.raises(TrainingError, match=rf"stopped by {sig.name} at iteration 8; its checkpoint is in .*"
                                            r"continue with: resnet-explorer train --resume"):
        train(tiny(), "synthetic:256", recipe, tmp_path / "part", progress=False, should_stop=send_at_7)
    assert RunDir(tmp_path / "part").iteration() == 8
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    train(None, None, None, tmp_path / "part", resume=True, progress=False)
    same_run(tmp_path / "part", full20)


def test_a_spec_records_the_input_size_it_was_trained_at(tmp_path, capsys):
    spec_file = tmp_path / "tiny.json"
    spec_file.write_text(tiny().replace(input_size=1).to_json())
    assert main(["train", "--arch", str(spec_file), "--data", "synthetic:256", "--recipe", "test", "--iters", "2",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert RunDir(tmp_path / "r").spec().input_size == 32  # the data's, not the 1 it was given
    assert load_model(tmp_path / "r").spec.input_size == 32


def test_the_memory_estimate_refuses_what_cannot_fit_and_passes_the_paper_on_a_big_gpu(monkeypatch):
    from resnet_explorer import devices
    from resnet_explorer.count import count, training_memory

    r152 = get_spec("resnet152")
    need = training_memory(r152, 256, 2)  # bf16, batch 256: the paper's largest ImageNet net
    assert 25 * 2**30 < need < 40 * 2**30
    monkeypatch.setattr(devices, "device_memory", lambda dev: 141 * 10**9)  # an H200
    devices.check_memory(r152, 256, torch.device("cpu"), "bf16")  # not refused
    # the blocks after a stage's second are multiplied, not walked: exact, and quick at any depth
    r110 = get_spec("cifar-resnet110")
    c = count(r110)
    assert training_memory(r110, 7, 4) == 4 * 7 * sum(r.out_shape[0] * r.out_shape[1] * r.out_shape[2]
                                                      for r in c.rows) + 12 * c.params
    t = time.perf_counter()
    with pytest.raises(TrainingError, match=r"cifar-resnet99998 at batch 128 needs at least [\d,.]+ GiB"):
        devices.check_memory(get_spec("cifar-resnet99998"), 128, torch.device("cpu"))
    assert time.perf_counter() - t < 5


# -- checkpoints written before the run directory had one owner ------------------------------------------
OLD_RUN = Path(__file__).parent / "data" / "old_run"  # written by commit 968b634: 6 of 12 iterations


def test_a_run_written_by_the_earlier_code_resumes_exactly(tmp_path, one_torch_thread):
    """tests/data/old_run was trained by the code before `RunDir` and `Checkpoint` (cifar-resnet8,
    width 4, synthetic:128, seed 3, stopped at iteration 6 of 12); resumed now, it ends with the
    metrics the earlier code's uninterrupted run wrote (old_run_full_metrics.jsonl), bit for bit."""
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    assert RunDir(run).iteration() == 6 and RunDir(run).status().state == "partial"
    assert train(out=run, resume=True, device="cpu", progress=False).finished
    expected = [json.loads(line) for line in (OLD_RUN.parent / "old_run_full_metrics.jsonl").read_text().splitlines()]

    def numbers(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "wall_time")} for r in rows]

    assert numbers(read_metrics(run)) == numbers(expected)
    assert RunDir(run).iteration() == 12
