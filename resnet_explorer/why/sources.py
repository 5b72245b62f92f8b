"""Where the analyses get their nets and images: the one module of `why` that reads run
directories, checkpoints and datasets (through `evaluate`, `runs` and `data`).

A net is a run directory, a checkpoint file or a built model (`open_net`); its images are an
`EvalSet`, read and preprocessed once (`eval_set`) and then shared by every analysis and
every net that trained on the same data, so no evaluation re-reads the dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import DataSource, GpuCifarLoader, as_source, load_tensors, pixel_mean, split_train_val
from ..errors import UsageError
from ..evaluate import load_model
from ..model import Net, build
from ..runs import RunDir
from ..spec import ArchSpec

NetLike = str | os.PathLike | nn.Module
# The images the analyses measure on by default: the first 1,000 training images, in eval
# mode, as the demo's own training-error pass (`run_analysis.train_subset_error`, which reads
# 2,000), and the first 1,000 test images. Half the demo's count keeps a lesion of ResNet-56
# under 20 s on two CPU cores; `images=2000` gives the demo's measure exactly.
IMAGES = 1000


@dataclass
class NetSource:
    """A trained (or freshly built) net and what is known about it."""

    name: str  # the run directory's name, the checkpoint's stem, or the spec's name
    model: Net
    data: str | None  # the --data it was trained on, where a run directory says
    seed: int = 0  # the run's seed (its initial weights), 0 where unknown
    val_split: int | None = None  # images the run held out of its training set

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec


def open_net(net: NetLike, name: str | None = None) -> NetSource:
    """A run directory (its last checkpoint), a checkpoint file, or a model built from a
    spec (``build(spec)``), in evaluation mode on the CPU."""
    if isinstance(net, nn.Module):
        if not isinstance(getattr(net, "spec", None), ArchSpec):
            raise UsageError("give a run directory, a checkpoint, or a model built with build(spec)")
        return NetSource(name or net.spec.name, net.cpu().eval(), None)
    path = Path(net)
    model = load_model(path, "cpu")
    run = RunDir(path)
    if run.is_run():
        config = run.config()
        return NetSource(name or path.name, model, run.data_arg(), config.seed, config.recipe.val_split)
    return NetSource(name or path.stem, model, None)


def initial_model(spec: ArchSpec, seed: int) -> Net:
    """The weights a run of ``spec`` with ``seed`` starts from (the trainer seeds, then builds)."""
    torch.manual_seed(seed)
    return build(spec).eval()


@dataclass
class EvalSet:
    """Images preprocessed as in training (no augmentation), held in memory: the first
    ``n`` training images (the demo's eval-mode training-error measure) and test images."""

    data: str  # the --data string that names the source again
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def side(self) -> int:
        return int(self.train_x.shape[-1])

    def describe(self, test: bool = True) -> str:
        tests = f" and {len(self.test_y):,} test" if test else ""
        return (f"eval mode (BN running statistics, no augmentation) on the first {len(self.train_y):,} "
                f"training{tests} images of {self.data}")


def eval_set(data: str | DataSource, images: int = IMAGES, val_split: int | None = None,
             seed: int = 0) -> EvalSet:
    """Read an in-memory dataset once and preprocess its first ``images`` training and test
    images as the trainer does (the per-pixel mean of the images trained on subtracted).
    ``val_split``, ``seed``: a run that held out a validation set trained on the rest."""
    if not isinstance(images, int) or isinstance(images, bool) or images < 1:
        raise UsageError(f"images {images!r} is invalid: give a positive number of images (default {IMAGES})")
    source = as_source(data)
    if not source.in_memory:
        raise UsageError(f"{source.spec}: ImageNet is read lazily, image by image, but these analyses read "
                         "their images into memory once: use a CIFAR-style dataset (synthetic, cifar10:DIR, "
                         "folder:DIR)")
    train_x, train_y, test_x, test_y = load_tensors(source)
    if val_split:
        train_x, train_y, test_x, test_y = split_train_val(train_x, train_y, val_split, seed)
    mean = pixel_mean(train_x)  # the training loader's mean: over every image trained on

    def first(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(images, int(x.shape[0]))
        return next(iter(GpuCifarLoader(x[:n], y[:n], n, "cpu", False, mean, seed, False)))

    (tx, ty), (sx, sy) = first(train_x, train_y), first(test_x, test_y)
    return EvalSet(source.spec, tx, ty, sx, sy, source.num_classes)


def data_for(nets: list[NetSource], data: str | DataSource | None) -> str | DataSource:
    """The one dataset the nets are evaluated on: ``data`` if given, else the one their run
    directories name (all the same). A checkpoint records no data: then ``data`` is needed."""
    if data is not None:
        return data
    named = {n.data for n in nets}
    if None in named:
        n = next(n for n in nets if n.data is None)
        imagenet = n.spec.input_size >= 64 or n.spec.num_classes == 1000
        hint = (f" ({n.spec.name} is an ImageNet net, {n.spec.input_size}² input: these analyses need an "
                "in-memory dataset of its classes and size, folder:DIR)") if imagenet else ""
        raise UsageError(f"{n.name}: a checkpoint or built model records no dataset: give --data "
                         f"(e.g. --data synthetic-demo){hint}")
    if len(named) > 1:
        raise UsageError(f"the nets trained on different data ({', '.join(sorted(named))}): "
                         "analyse them separately, or give one --data for all")
    return named.pop()


def check_fits(net: NetSource, images: EvalSet) -> None:
    """One line where a net cannot read the images (classes or input channels differ)."""
    if net.spec.num_classes != images.num_classes:
        raise UsageError(f"{net.name} predicts {net.spec.num_classes} classes but {images.data} has "
                         f"{images.num_classes}: give the --data it was trained on")
    if net.spec.in_channels != images.train_x.shape[1]:
        raise UsageError(f"{net.name} takes {net.spec.in_channels}-channel images but {images.data} has "
                         f"{images.train_x.shape[1]}")


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory has a checkpoint to study yet."""
    return RunDir(run_dir).has_checkpoint()


def open_nets(nets: list[NetLike], data: str | DataSource | None = None,
              images: int = IMAGES) -> tuple[list[NetSource], EvalSet]:
    """The nets (`open_net`) and their images, read once for all of them (`data_for`; the
    first run's held-out split, if it had one)."""
    if not nets:
        raise UsageError("give at least one run directory, checkpoint or built model")
    sources = [open_net(n) for n in nets]
    first = sources[0]
    return sources, eval_set(data_for(sources, data), images=images, val_split=first.val_split, seed=first.seed)
