"""The ImageNet loader: JPEGs read lazily and augmented in DataLoader worker processes.

Each sample's randomness comes from (seed, epoch, its position in the epoch), so batches
do not depend on the number of workers and a resumed run replays them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from ..distributed import shard
from .cpus import resolve_workers
from .seeds import _generator
from .sources import _fail
from .transforms import imagenet_eval_transform, imagenet_train_transform


class _SeededDataset(Dataset):
    """Applies a random transform under a seed sent with each index, so a sample's
    augmentation is fixed by (seed, epoch, position) whichever worker decodes it."""

    def __init__(self, base: Dataset, transform: Any):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        img, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


class _EpochBatchSampler(Sampler):
    """Batches of (index, seed) pairs for one epoch, from (seed, epoch); can start mid-epoch.

    With ``world_size`` > 1, ``batch_size`` is the global batch and this rank's batches are
    its contiguous slices of the global batches (the same order and seeds on every rank)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 sampler: Sampler | None = None, rank: int = 0, world_size: int = 1):
        if sampler is not None and world_size > 1:
            raise ValueError("give either a sampler (e.g. a DistributedSampler) or rank/world_size, not both")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.sampler = seed, sampler
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def _count(self) -> int:
        return len(self.sampler) if self.sampler is not None else self.n  # type: ignore[arg-type]

    def batches_per_epoch(self) -> int:
        n, b = self._count(), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = _generator("imagenet-epoch", self.seed, self.epoch)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            order = list(self.sampler)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        seeds = torch.randint(0, 2**62, (len(order),), generator=g).tolist()
        for k in range(self.start_batch, self.batches_per_epoch()):
            lo, hi = shard(k * self.batch_size, min((k + 1) * self.batch_size, len(order)),
                           self.rank, self.world_size)
            if lo < hi:
                yield list(zip(order[lo:hi], seeds[lo:hi]))


class ImageNetLoader:
    """A DataLoader over an image dataset with the same interface as `GpuCifarLoader`.

    Workers decode and augment; each sample's randomness comes from (seed, epoch, its
    position in the epoch), so batches do not depend on the number of workers and a
    resumed run (``set_epoch(e, start_batch=k)``) replays them. A DistributedSampler (or
    any sampler) may replace the built-in shuffle; its ``set_epoch`` is called for you.
    The trainer shards with ``rank``/``world_size`` instead (each rank its slice of the
    single-process global batches), which keeps N ranks equal to one process.
    """

    def __init__(
        self, dataset: Dataset, transform: Any, batch_size: int, device: str | torch.device,
        train: bool, seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
        channels_last: bool = False, dtype: torch.dtype = torch.float32,
        rank: int = 0, world_size: int = 1,
    ):
        workers = resolve_workers(workers)
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.drop_last = train
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch, self._start = 0, 0
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.batch_sampler = _EpochBatchSampler(self.num_samples, batch_size, train, train, seed, sampler,
                                                rank, world_size)
        self.loader = DataLoader(
            _SeededDataset(dataset, transform), batch_sampler=self.batch_sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_epoch()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        self.batch_sampler.epoch, self.batch_sampler.start_batch = epoch, start
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images.to(self.dtype), labels.to(self.device, non_blocking=True)
        self.epoch = epoch + 1


def make_imagenet_loader(
    root: str, split: str, batch_size: int, device: str | torch.device, train: bool,
    seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
    mean: Sequence[float] | torch.Tensor | None = None, channels_last: bool = False,
    dtype: torch.dtype = torch.float32, ten_crops: bool = False, std: Sequence[float] | None = None,
    augment: bool = True, rank: int = 0, world_size: int = 1,
) -> ImageNetLoader:
    """A loader over ``root/<split>/<wnid>/*`` (torchvision ImageFolder) with the paper's
    train transform (``train`` and ``augment``) or test transform. ``ten_crops`` makes
    test batches B×10×3×224×224."""
    from torchvision.datasets import ImageFolder

    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise _fail(f"imagenet:{root}", f"no {split}/ subfolder", "imagenet")
    if train and augment:
        transform = imagenet_train_transform(mean, std=std)
    else:
        transform = imagenet_eval_transform(mean, ten_crops=ten_crops, std=std)
    return ImageNetLoader(
        ImageFolder(folder), transform, batch_size, device, train, seed, workers, sampler, channels_last, dtype,
        rank, world_size,
    )


def estimate_imagenet_mean(root: str, samples: int = 10_000, size: int = 224, seed: int = 0) -> torch.Tensor:
    """A per-pixel mean image (3×size×size, [0, 1]) from random training images at the
    test geometry (shorter side 256·size/224, centre crop), to use instead of the
    per-channel mean."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(os.path.join(root, "train"))
    pick = torch.randperm(len(dataset), generator=_generator("imagenet-mean", seed))[:samples]
    tf = v2.Compose([v2.ToImage(), v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size),
                     v2.ToDtype(torch.float32, scale=True)])
    total = torch.zeros(3, size, size, dtype=torch.float64)
    for i in pick.tolist():
        total += tf(dataset[i][0])
    return (total / len(pick)).float()
