"""Bad input on the command line gets one line (exit 2) that says what was wrong and what to
do, and writes nothing: bad recipe values, an --out that cannot be written, a device or a net
that cannot be, a full disk (a real one: a small tmpfs), a closed output pipe.
"""

from __future__ import annotations

import errno
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import one_line
import torch

from resnet_explorer import get_spec
from resnet_explorer.cli import main
from resnet_explorer.errors import TrainingError
from resnet_explorer.recipes import get_recipe
from resnet_explorer.runs import RunDir, read_metrics
from resnet_explorer.train import train

EXE = str(Path(sys.executable).parent / "resnet-explorer")
TRAIN = ["train", "--arch", "cifar-resnet8", "--width", "4", "--data", "synthetic:256", "--recipe", "test", "--quiet"]
DETERMINISTIC = ("kind", "iter", "epoch", "lr", "train_loss", "train_error", "test_loss", "test_error")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny nets, one thread


@pytest.mark.parametrize("value,fragment", [
    ("lr=abc", "lr='abc' is invalid: use a finite number, lr > 0"),
    ("lr=NaN", "lr=nan is invalid"),
    ("lr=Infinity", "lr=inf is invalid"),
    ("lr=-1", "lr=-1 is invalid"),
    ("batch_size=true", "batch_size=True is invalid: use a positive integer"),
    ("momentum=abc", "momentum='abc' is invalid: use a finite number, 0 <= momentum < 1"),
    ("gamma=abc", "gamma='abc' is invalid"),
    ("milestones=abc", "milestones='abc' is invalid: use a list of positive iteration numbers"),
    ("milestones=[10,-1]", "milestones=[10, -1] is invalid"),
    ("name=5", "recipe name 5 is invalid"),
    ("iters=abc", "iters='abc' is invalid"),
    ("augment=1", "augment=1 is invalid: use true or false"),
    ("val_split=true", "val_split=True is invalid"),
])
def test_a_bad_recipe_value_is_one_line_and_writes_nothing(tmp_path, capsys, value, fragment):
    out = tmp_path / "r"
    err = one_line(capsys, main([*TRAIN, "--set", value, "--out", str(out)]))
    assert fragment in err, err
    assert not out.exists()  # nothing half-made blocks this --out afterwards


def test_a_recipe_may_be_renamed_and_the_out_is_free_after_a_refusal(tmp_path, capsys):
    assert get_recipe("test", name="mine").name == "mine"
    out = tmp_path / "r"
    assert main([*TRAIN, "--set", "gamma=abc", "--out", str(out)]) == 2
    assert main([*TRAIN, "--iters", "2", "--set", "name=mine", "--out", str(out)]) == 0
    assert RunDir(out).config()[1].name == "mine"


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert "notes.txt is a file, not a directory: choose another --out" in one_line(
        capsys, main([*TRAIN, "--out", str(out)]))
    assert out.read_text() == "mine"
    assert "is a file, not a directory" in one_line(capsys, main([*TRAIN, "--out", str(out / "run")]))


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--device", "meta"],
     "device 'meta' cannot train or evaluate a net: use auto, cpu, cuda or cuda:N"),
    (["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--device", "nonsense"], "device 'nonsense' is invalid"),
    (["train", "--arch", "cifar-resnet20", "--width", "100000", "--data", "synthetic:256"],
     "cifar-resnet20 at batch 32 needs at least "),
    (["train", "--arch", "cifar-resnet99998", "--data", "synthetic:256"], "cifar-resnet99998 at batch 32 needs at least "),
])
def test_a_device_or_net_that_cannot_train_is_refused_at_once(tmp_path, capsys, argv, fragment):
    t = time.perf_counter()
    err = one_line(capsys, main([*argv, "--recipe", "test", "--out", str(tmp_path / "r"), "--quiet"]))
    assert fragment in err, err
    assert time.perf_counter() - t < 10  # the estimate, not an allocation of hundreds of GB
    assert not (tmp_path / "r").exists()
    if "needs at least" in fragment:
        assert "use a narrower (--width) or shallower net, or --set batch_size=N" in err


def test_eval_with_a_bad_batch_size_or_device_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*TRAIN, "--iters", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert "batch size 0 is invalid" in one_line(capsys, main(["eval", str(out), "--batch-size", "0"]))
    assert "device 'meta' cannot" in one_line(capsys, main(["eval", str(out), "--device", "meta"]))


@pytest.mark.slow
def test_info_into_a_closed_pipe_is_one_line():
    proc = subprocess.Popen([EXE, "info", "resnet152", "--layers", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)  # what `| head -c 10` reads, then it goes away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 2
    assert err.count("\n") == 1 and "the output was cut short" in err and "Traceback" not in err, err


# -- a real full (or read-only) disk: a small tmpfs ---------------------------------------------------------------
@contextmanager
def small_disk(path: Path, size: str = "4m", *options: str):
    """A tmpfs of ``size`` mounted at ``path`` (root only: CI and the dev machine run as root)."""
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"the full-disk tests mount a small tmpfs and need root: mount says {r.stderr.strip()!r}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler file is returned (unlink it to free the disk)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for n in (1 << 20, 4096, 512, 64, 8, 1):  # big chunks, then smaller ones to the last byte
            try:
                while True:
                    f.write(b"\0" * n)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def test_an_out_on_a_read_only_disk_is_one_line(tmp_path, capsys):
    with small_disk(tmp_path / "ro", "1m", "ro") as disk:
        err = one_line(capsys, main([*TRAIN, "--out", str(disk / "run")]))
        assert f"cannot create the directory {disk / 'run'} (Read-only file system)" in err


def strip(rows):
    return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


# a train line every iteration and a checkpoint every 20: 19 iterations of lines (~10 kB, more
# than the 4 kB slack a file's last page can hold) between a fill after 20 and the next checkpoint
FULL_DISK_RECIPE = get_recipe("test", iters=40, log_every=1, checkpoint_every=20)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("full") / "run"
    train(get_spec("cifar-resnet8", width=4), "synthetic:256", FULL_DISK_RECIPE, d, progress=False)
    return d


@pytest.mark.slow
@pytest.mark.parametrize("when,file", [("train", r"metrics\.jsonl"), ("eval", r"\.last\.pt\.[0-9a-f]+\.tmp")],
                         ids=["during-a-metrics-write", "during-a-checkpoint-write"])
def test_a_full_disk_keeps_the_last_checkpoint_and_a_later_resume_is_exact(tmp_path, uninterrupted, when, file):
    # the disk fills at the first train line after iteration 20, or at the eval line of
    # iteration 40, which comes just before its checkpoint
    with small_disk(tmp_path / "disk") as disk:
        run = disk / "run"
        train(get_spec("cifar-resnet8", width=4), "synthetic:256", FULL_DISK_RECIPE, run, progress=False,
              should_stop=lambda it: it == 20)
        kept = RunDir(run).checkpoint_path.read_bytes()
        filled: list[Path] = []

        def fill_now(row: dict) -> None:
            if not filled and row["kind"] == when and row["iter"] >= (21 if when == "train" else 40):
                filled.append(fill(disk))

        with pytest.raises(TrainingError) as e:
            train(None, None, None, run, resume=True, progress=False, on_metrics=fill_now)
        message = str(e.value)
        assert "\n" not in message and re.search(rf"{file} \(No space left on device\)", message), message
        assert "its last good checkpoint is kept in" in message and "(iteration 20, its weights finite)" in message
        assert RunDir(run).checkpoint_path.read_bytes() == kept  # intact
        assert not list(run.rglob("*.tmp"))
        filled[0].unlink()  # space again: the resume goes on as if nothing had happened
        assert train(None, None, None, run, resume=True, progress=False).finished
        assert strip(read_metrics(run)) == strip(read_metrics(uninterrupted))
        a, b = (torch.load(RunDir(d).checkpoint_path, weights_only=True)["model"] for d in (run, uninterrupted))
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_full_disk_at_the_start_of_a_run_is_one_line(tmp_path, capsys):
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk)
        err = one_line(capsys, main([*TRAIN, "--out", str(disk / "run")]))
        assert "No space left on device" in err and "free the disk, or choose a writable --out" in err

