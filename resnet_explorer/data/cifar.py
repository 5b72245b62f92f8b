"""CIFAR-style data in memory: CIFAR-10's pickled batches, and the loader that keeps a whole
uint8 dataset on the device and augments it there (`GpuCifarLoader`).

The paper's CIFAR augmentation (Sec. 4.2): pad 4 pixels on each side, take a random
32×32 crop, flip half the crops horizontally; the padding is zero in the network's input
(after mean subtraction), like a conv layer's own padding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..distributed import shard
from .seeds import seeded_generator
from .sources import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, cifar10_folder, layout_error, unpickle_batch


def download_cifar10(root: str) -> str:
    """Fetch CIFAR-10 with torchvision (needs the internet); returns ``root`` for ``cifar10:root``."""
    import torchvision

    torchvision.datasets.CIFAR10(root, train=True, download=True)
    return root


def read_cifar10(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (or ``root`` itself) as uint8 NCHW + int64 labels."""
    folder = cifar10_folder(os.path.abspath(root), f"cifar10:{root}")

    def read(names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            try:
                batch = unpickle_batch(os.path.join(folder, name))
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch["labels"], dtype=np.int64))
            except Exception as e:  # a truncated or foreign file
                raise layout_error(f"cifar10:{root}", f"cannot read {name} ({type(e).__name__}: {e})", "cifar10") from None
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    return (*read(CIFAR10_TRAIN_FILES), *read([CIFAR10_TEST_FILE]))


class GpuCifarLoader:
    """Batches of a uint8 dataset held whole on ``device``, augmented there.

    The dataset moves to the device once; each batch is one gather (random crop of the
    padded images and horizontal flip in a single index), one multiply and one subtract.
    No DataLoader, no worker processes. Training mode shuffles, augments and drops the
    last partial batch; eval mode does none of these.

    The order and augmentation of epoch e are drawn on the CPU from (seed, e), so they
    are identical on any device and batch k of an epoch can be replayed alone:
    ``set_epoch(e, start_batch=k)`` resumes mid-epoch. Iterating a whole epoch moves on
    to the next one, so calling ``set_epoch`` is optional.

    With ``world_size`` > 1 (data-parallel training) ``batch_size`` is the global batch:
    every rank draws the same plan and yields only its contiguous slice (``rank``) of each
    batch, so the ranks together see exactly what one process sees.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: str | torch.device,
        train: bool, mean: torch.Tensor, seed: int = 0, augment: bool = True,
        channels_last: bool = False, dtype: torch.dtype = torch.float32,
        std: torch.Tensor | None = None, pad: int = 4, rank: int = 0, world_size: int = 1,
    ):
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be a uint8 N×C×H×W tensor, got {x.dtype} {tuple(x.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.augment = train and augment
        self.drop_last = train
        self.channels_last, self.dtype = channels_last, dtype
        self.pad = pad if self.augment else 0
        self.epoch, self._start = 0, 0

        c, h, w = x.shape[1:]
        mean = torch.as_tensor(mean, dtype=torch.float32).expand(c, h, w)
        std = torch.ones(c) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        # (x/255 - mean)/std = x·scale - shift; padding x and shift with zeros makes the
        # padded border exactly 0 in the output.
        self._scale = (1.0 / (255.0 * std)).view(c, 1, 1).to(self.device)
        shift = mean / std.view(c, 1, 1)
        p = self.pad
        x = x.to(self.device)
        self.x = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        self._shift = torch.nn.functional.pad(shift, (p, p, p, p)).to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.num_samples, self.image_shape = x.shape[0], (c, h, w)
        self._channels = torch.arange(c, device=self.device)
        self._rows = torch.arange(h, device=self.device)
        self._cols = torch.arange(w, device=self.device)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        yield from self.epoch_batches(epoch, start)
        self.epoch = epoch + 1

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s plan, by position in the epoch, on the CPU: the sample order, the
        crops' top-left corners in the padded image (n×2: row, col), and which crops are
        mirrored."""
        n = self.num_samples
        if not self.train:
            return torch.arange(n), torch.zeros(n, 2, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
        g = seeded_generator("epoch", self.seed, epoch)
        order = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5 if self.augment else torch.zeros(n, dtype=torch.bool)
        return order, offsets, flips

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch from ``start_batch`` on; leaves the loader's state alone."""
        order, offsets, flips = (t.to(self.device) for t in self.epoch_plan(epoch))
        for k in range(start_batch, len(self)):
            lo, hi = shard(k * self.batch_size, min((k + 1) * self.batch_size, self.num_samples),
                           self.rank, self.world_size)
            if lo < hi:  # an evaluation batch may leave the last ranks nothing
                yield self._batch(order[lo:hi], offsets[lo:hi], flips[lo:hi])

    def _batch(
        self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.pad:  # no augmentation: a plain gather of whole images
            images = self.x[idx].float() * self._scale - self._shift
        else:
            images = self._augmented(idx, offsets, flips)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images.to(self.dtype), self.y[idx]

    def _augmented(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        w = self.image_shape[2]
        rows = offsets[:, :1] + self._rows  # b × H rows of the padded image
        cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - self._cols, self._cols)  # b × W
        ch, r, c = self._channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
        return self.x[idx[:, None, None, None], ch, r, c].float() * self._scale - self._shift[ch, r, c]
