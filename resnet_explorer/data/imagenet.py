"""The ImageNet loaders: the CPU path (PIL decoding and torchvision transforms in
DataLoader worker processes) and the choice between it and the GPU path.

Each sample's randomness comes from (seed, epoch, its position in the epoch), so batches
do not depend on the number of workers and a resumed run replays them. ``loader="gpu"``
(`gpu_imagenet`) reads the same files in the same order with the same draws, and decodes
and augments them on the device; ``"auto"`` takes it on a CUDA device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from ..errors import DataError
from .batches import EpochBatchSampler, SkipLog, collate_readable
from .cpus import resolve_workers
from .jpeg import Unreadable, failure_reason, pil_loader
from .seeds import seeded_generator
from .sources import layout_error
from .transforms import imagenet_eval_transform, imagenet_train_transform

LOADERS = ("auto", "cpu", "gpu")


class SeededDataset(Dataset):
    """Applies a random transform under a seed sent with each index, so a sample's
    augmentation is fixed by (seed, epoch, position) whichever worker decodes it."""

    def __init__(self, base: Dataset, transform: Any):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | Unreadable:
        index, seed = key
        try:
            img, label = self.base[index]
        except Exception as e:  # noqa: BLE001 - any decoder failure means this one file is unusable
            samples = getattr(self.base, "samples", None)
            path = samples[index][0] if samples is not None else f"sample {index}"
            return Unreadable(path, failure_reason(e))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


class ImageNetLoader:
    """A DataLoader over an image dataset with the same interface as `GpuCifarLoader`.

    Workers decode and augment; each sample's randomness comes from (seed, epoch, its
    position in the epoch), so batches do not depend on the number of workers and a
    resumed run (``set_epoch(e, start_batch=k)``) replays them. A DistributedSampler (or
    any sampler) may replace the built-in shuffle; its ``set_epoch`` is called for you.
    The trainer shards with ``rank``/``world_size`` instead (each rank its slice of the
    single-process global batches), which keeps N ranks equal to one process. A file that
    cannot be decoded is skipped with one warning line naming it (see `batches`).
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
        self.batch_sampler = EpochBatchSampler(self.num_samples, batch_size, train, train, seed, sampler,
                                                rank, world_size)
        self.loader = DataLoader(
            SeededDataset(dataset, transform), batch_sampler=self.batch_sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None, collate_fn=collate_readable,
        )
        self.skipped = SkipLog()

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_epoch()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        self.batch_sampler.epoch, self.batch_sampler.start_batch = epoch, start
        for images, labels, bad in self.loader:
            self.skipped.check_batch(bad, 0 if labels is None else len(labels))
            images = images.to(self.device, non_blocking=True)
            if self.channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images.to(self.dtype), labels.to(self.device, non_blocking=True)
        self.epoch = epoch + 1


def resolve_loader(loader: str, device: str | torch.device) -> str:
    """``cpu`` or ``gpu`` for ``--loader`` on ``device``: ``auto`` is ``gpu`` on a CUDA device
    whose torchvision decodes JPEGs there, else ``cpu``. ``gpu`` on the CPU runs the GPU
    path's decoding and tensor ops on the CPU (slow: it is how that path is tested)."""
    if loader not in LOADERS:
        raise DataError(f"--loader {loader!r} is invalid: use auto (gpu on CUDA), cpu (PIL in worker "
                        "processes) or gpu (nvJPEG and tensor ops on the device)")
    device = torch.device(device)
    if loader != "auto":
        if loader == "gpu" and device.type == "cuda" and not gpu_decode_works(device):
            raise DataError(f"--loader gpu: torchvision {_tv_version()} cannot decode JPEGs on {device} "
                            "(built without nvJPEG?); use --loader cpu")
        return loader
    return "gpu" if device.type == "cuda" and gpu_decode_works(device) else "cpu"


def _tv_version() -> str:
    import torchvision

    return torchvision.__version__


_DECODE_WORKS: dict[str, bool] = {}


def gpu_decode_works(device: torch.device) -> bool:
    """Whether torchvision decodes a JPEG on ``device`` (asked once per device)."""
    key = str(device)
    if key not in _DECODE_WORKS:
        import io

        from PIL import Image
        from torchvision.io import decode_jpeg

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(buf, format="JPEG")
        try:
            data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
            _DECODE_WORKS[key] = decode_jpeg([data], device=device)[0].shape == (3, 16, 16)
        except (RuntimeError, ValueError, TypeError):
            _DECODE_WORKS[key] = False
    return _DECODE_WORKS[key]


def make_imagenet_loader(
    root: str, split: str, batch_size: int, device: str | torch.device, train: bool,
    seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
    mean: Sequence[float] | torch.Tensor | None = None, channels_last: bool = False,
    dtype: torch.dtype = torch.float32, ten_crops: bool = False, std: Sequence[float] | None = None,
    augment: bool = True, rank: int = 0, world_size: int = 1, loader: str = "auto",
) -> Any:
    """A loader over ``root/<split>/<wnid>/*`` (torchvision ImageFolder) with the paper's
    train transform (``train`` and ``augment``) or test transform. ``ten_crops`` makes
    test batches B×10×3×224×224. ``loader``: ``cpu`` (`ImageNetLoader`), ``gpu``
    (`GpuImageNetLoader`) or ``auto`` (see `resolve_loader`); both give the same batches
    up to decoding and resize rounding."""
    from torchvision.datasets import ImageFolder

    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise layout_error(f"imagenet:{root}", f"no {split}/ subfolder", "imagenet")
    dataset = ImageFolder(folder, loader=pil_loader)
    if resolve_loader(loader, device) == "gpu":
        from .gpu_imagenet import GpuImageNetLoader

        views = "train" if train and augment else ("ten" if ten_crops else "centre")
        return GpuImageNetLoader(dataset.samples, batch_size, device, train, views, seed, workers, sampler,
                                 mean, std, channels_last, dtype, rank, world_size)
    if train and augment:
        transform = imagenet_train_transform(mean, std=std)
    else:
        transform = imagenet_eval_transform(mean, ten_crops=ten_crops, std=std)
    return ImageNetLoader(
        dataset, transform, batch_size, device, train, seed, workers, sampler, channels_last, dtype,
        rank, world_size,
    )


def estimate_imagenet_mean(root: str, samples: int = 10_000, size: int = 224, seed: int = 0) -> torch.Tensor:
    """A per-pixel mean image (3×size×size, [0, 1]) from random training images at the
    test geometry (shorter side 256·size/224, centre crop), to use instead of the
    per-channel mean."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(os.path.join(root, "train"))
    pick = torch.randperm(len(dataset), generator=seeded_generator("imagenet-mean", seed))[:samples]
    tf = v2.Compose([v2.ToImage(), v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size),
                     v2.ToDtype(torch.float32, scale=True)])
    total = torch.zeros(3, size, size, dtype=torch.float64)
    for i in pick.tolist():
        total += tf(dataset[i][0])
    return (total / len(pick)).float()
