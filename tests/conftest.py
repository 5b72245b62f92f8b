"""Shared helpers and fixtures: random architecture specs, the shared data, BN randomised for hand checks."""

from __future__ import annotations

import os
import random
import tarfile
from pathlib import Path

import pytest
import torch

from resnet_explorer import ArchSpec, ConvLayer, Head, Pool, Stage


def random_spec(seed: int) -> ArchSpec:
    """A random but valid spec mixing every kind of stage and option."""
    rng = random.Random(seed)
    stem = ConvLayer(
        rng.choice([8, 12, 16]), kernel=rng.choice([3, 5, 7]), stride=rng.choice([1, 2]),
        groups=1, bias=rng.random() < 0.5, bn=rng.random() < 0.7, lrn=rng.random() < 0.2,
        pool=Pool(3, 2, 1) if rng.random() < 0.5 else None,
    )
    stages = [Stage("conv1", "conv", layers=[stem])]
    for i in range(rng.randint(1, 3)):
        kind = rng.choice(["basic", "bottleneck", "conv"])
        name = f"conv{i + 2}_x"
        if kind == "conv":
            layers = [
                ConvLayer(rng.choice([8, 16, 24]), kernel=rng.choice([1, 3]), groups=rng.choice([1, 2]),
                          bias=True, bn=rng.random() < 0.5)
                for _ in range(rng.randint(1, 2))
            ]
            stages.append(Stage(name, "conv", layers=layers))
        else:
            stages.append(Stage(name, kind, rng.randint(1, 2), rng.choice([4, 8, 12]), rng.choice([1, 2])))
    head = Head("avgpool-fc") if rng.random() < 0.6 else Head("flatten-fc", [rng.choice([16, 32])], 0.5)
    return ArchSpec(
        name=f"random{seed}", stages=stages, head=head,
        residual=rng.random() < 0.7, shortcut=rng.choice("ABC"),
        stride_at=rng.choice(["1x1", "3x3"]), input_size=rng.choice([17, 24, 32, 33]),
        num_classes=rng.choice([3, 10]),
    )


@pytest.fixture
def make_random_spec():
    return random_spec


# The project's shared data sits beside the checkout (../shared/data), unless told otherwise.
SHARED_DATA = Path(
    os.environ.get("RESNET_EXPLORER_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
MINI_TAR = SHARED_DATA / "cifar10-jpeg-mini.tar.gz"


def extract_mini(dest: Path) -> Path:
    """The mini CIFAR-10 JPEG copy (1,000 train / 200 test images) unpacked into ``dest``."""
    if not MINI_TAR.is_file():
        pytest.fail(f"{MINI_TAR} is missing: the folder tests need the project's shared data "
                    "(set RESNET_EXPLORER_SHARED_DATA to the folder holding cifar10-jpeg-mini.tar.gz)")
    with tarfile.open(MINI_TAR) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    return extract_mini(tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets: one intra-op thread is faster than two on a shared 2-core machine, and
    deterministic. A module that wants it for all its tests imports it (module scope)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Random BN affine parameters and running statistics (eval mode then does more than the
    identity), so that a hand computation checks that every BN is applied where it should be."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.randn(m.bias.shape, generator=g)
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def one_line(capsys, code: int) -> str:
    """The CLI's stderr for a refused input: exit 2 and exactly one 'resnet-explorer: error:' line."""
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("resnet-explorer: error: "), err
    return err


# -- running in parallel (pytest-xdist: `-n auto --dist loadfile`, as quickstart.sh does) ----------
# Each test file runs on one worker, so a module-scoped fixture (a trained run, a built wheel, a
# sandboxed grading) is built once; a session-scoped one (JupyterLab, Chromium) once per worker.


def pytest_configure(config):
    """In each of several workers: one torch thread, here and in the processes it starts (two
    workers on two cores: more threads would only wait for each other)."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, so that the last ones to start are short and the workers end together."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# -- the browser tests: one JupyterLab and one Chromium for the whole session ------------------------
# tests/browser_support.py drives them (open_notebook, close_notebook, shoot …); a browser test
# asks for ``lab`` and ``browser`` and opens its notebook in a tab of its own.
@pytest.fixture(scope="session")
def chromium() -> str:
    from browser_support import chromium_path

    return chromium_path()


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium):
    """A JupyterLab server of its own for the session (`browser_support.Lab`). Stopped afterwards."""
    from browser_support import start_lab

    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(lab, chromium, tmp_path_factory):
    """One headless Chromium for the session (a Playwright persistent context: ``browser.new_page()``)."""
    from browser_support import start_browser

    with start_browser(chromium, tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context
