"""The trainer's entry point: the training and evaluation loaders of a source.

Loaders share one interface: iterating yields ``(images, labels)`` already on the target
device, ``len()`` is the number of batches per epoch, and ``set_epoch(epoch,
start_batch=0)`` fixes the epoch's order and augmentation from (seed, epoch), so a
resumed run replays the same batches. Images are scaled to [0, 1] and the per-pixel mean
of the training split is subtracted (optional per-channel std division, off by default,
as in the paper).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import Sampler

from ..errors import DataError
from .cifar import GpuCifarLoader, read_cifar10
from .cpus import resolve_workers
from .folder import load_image_folder
from .imagenet import make_imagenet_loader, resolve_loader
from .seeds import seeded_generator
from .sources import SYNTHETIC_TEST, SYNTHETIC_TRAIN, DataSource
from .synthetic import synthetic_variant
from .transforms import IMAGENET_MEAN, IMAGENET_STD


def load_tensors(source: DataSource) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An in-memory source as ``(train_x, train_y, test_x, test_y)`` (uint8 NCHW, int64)."""
    if source.kind == "synthetic":
        return synthetic_variant(source.n_train or SYNTHETIC_TRAIN, source.n_test or SYNTHETIC_TEST,
                                 source.seed or 0, source.variant)
    if source.kind == "cifar10":
        return read_cifar10(source.path)
    if source.kind == "folder":
        return load_image_folder(source.path)[:4]
    raise DataError(f"{source.spec}: ImageNet is read lazily, not into memory; use make_imagenet_loader")


def pixel_mean(x: torch.Tensor) -> torch.Tensor:
    """The per-pixel mean image (3×H×W, float32, in [0, 1] units) of uint8 images."""
    total = x.sum(0, dtype=torch.int32 if x.shape[0] < 2**23 else torch.int64)  # exact, and fast
    return (total.double() / (255.0 * x.shape[0])).float()


def channel_std(x: torch.Tensor) -> torch.Tensor:
    """The per-channel standard deviation (3, float32, [0, 1] units) over all pixels of uint8 images."""
    # From each channel's histogram of the 256 values: exact, and no float copy of the data.
    hist = torch.stack([torch.bincount(x[:, c].flatten(), minlength=256) for c in range(x.shape[1])]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * values).sum(1) / n
    var = ((hist * values**2).sum(1) / n - mean**2).clamp_min(0)
    return var.sqrt().float()


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, val_split: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``val_split`` random training images (the paper's 45k/5k split), fixed by seed."""
    if not 0 < val_split < x.shape[0]:
        raise DataError(f"val_split={val_split} must be between 1 and {x.shape[0] - 1} (the training set's size - 1)")
    order = torch.randperm(x.shape[0], generator=seeded_generator("val-split", seed))
    train, val = order[val_split:].sort().values, order[:val_split].sort().values
    return x[train], y[train], x[val], y[val]


def make_loaders(
    source: DataSource, batch_size: int, device: str | torch.device, seed: int,
    val_split: int | None = None, augment: bool = True, channels_last: bool = False,
    *, dtype: torch.dtype = torch.float32, normalize_std: bool = False,
    eval_batch_size: int | None = None, workers: int | None = None, sampler: Sampler | None = None,
    rank: int = 0, world_size: int = 1, loader: str = "auto",
) -> tuple[Any, Any, dict[str, Any]]:
    """The training and evaluation loaders for a source, and a JSON-ready ``info`` dict.

    With ``val_split`` (CIFAR-style sources only) that many training images are held out
    and become the evaluation set (the paper's 45k/5k split); otherwise the test split is
    evaluated. The mean is computed on the images actually trained on. With ``world_size``
    > 1 both loaders yield rank ``rank``'s slice of each (global) batch. ``workers``: ImageNet
    loader processes (default: see `resolve_workers`). ``loader``: ImageNet's input path,
    ``cpu`` (PIL in the workers), ``gpu`` (decoded and augmented on the device) or ``auto``
    (gpu on CUDA; see `resolve_loader`); CIFAR-style sources always live on the device.
    """
    eval_batch_size = eval_batch_size or batch_size
    workers = resolve_workers(workers)
    info: dict[str, Any] = {"data": source.to_dict(), "val_split": val_split}
    if not source.in_memory:
        if val_split:
            raise DataError("val_split applies to CIFAR-style sources; ImageNet evaluates on val/")
        std = IMAGENET_STD if normalize_std else None
        path = resolve_loader(loader, device)
        common = dict(seed=seed, workers=workers, channels_last=channels_last, dtype=dtype, std=std,
                      rank=rank, world_size=world_size, loader=path)
        train = make_imagenet_loader(source.path, "train", batch_size, device, True, sampler=sampler,
                                     augment=augment, **common)
        test = make_imagenet_loader(source.path, "val", eval_batch_size, device, False, **common)
        info.update(train_size=train.num_samples, eval_size=test.num_samples, eval_split="val",
                    mean=list(IMAGENET_MEAN), std=None if std is None else list(std),
                    augment="scale [256,480], crop 224, flip, lighting 0.1" if augment else "none",
                    loader=path)
        return train, test, info

    t0 = time.perf_counter()
    train_x, train_y, test_x, test_y = load_tensors(source)
    eval_split = "test"
    if val_split:
        train_x, train_y, test_x, test_y = split_train_val(train_x, train_y, val_split, seed)
        eval_split = "val"
    mean = pixel_mean(train_x)
    std = channel_std(train_x) if normalize_std else None
    shards = dict(rank=rank, world_size=world_size)
    side = int(train_x.shape[-1])
    pad = max(1, side // 8)  # the paper's 4 px of 32, scaled to the image
    train = GpuCifarLoader(train_x, train_y, batch_size, device, True, mean, seed, augment,
                           channels_last, dtype, std, pad=pad, **shards)
    test = GpuCifarLoader(test_x, test_y, eval_batch_size, device, False, mean, seed, False,
                          channels_last, dtype, std, **shards)
    info.update(
        train_size=int(train_x.shape[0]), eval_size=int(test_x.shape[0]), eval_split=eval_split,
        mean=[round(v, 6) for v in mean.mean((1, 2)).tolist()],  # the mean image's average colour
        std=None if std is None else [round(v, 6) for v in std.tolist()],
        augment=f"pad {pad}, crop {side}, flip" if augment else "none",
        load_seconds=round(time.perf_counter() - t0, 3),
    )
    return train, test, info
