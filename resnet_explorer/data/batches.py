"""What the two ImageNet input paths share: the epoch's batches of (index, seed), and
what happens to a file that cannot be decoded.

Each sample's randomness comes from (seed, epoch, its position in the epoch), so batches
do not depend on the number of workers, a resumed run replays them, and the CPU and GPU
paths draw the same augmentation for the same image.

An unreadable file (corrupt, truncated, not an image) is **skipped with one warning line
naming it**, once per loader, rather than stopping the run: one bad file among 1.28
million must not cost the hours since the last checkpoint, and it is still named, so it
can be replaced. Its batch is one image shorter; a batch with no readable image left is
a `DataError` (every file is bad: the dataset, not one file, is wrong).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler, default_collate

from ..distributed import shard
from ..errors import DataError
from .jpeg import Unreadable
from .seeds import seeded_generator


class EpochBatchSampler(Sampler):
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
        g = seeded_generator("imagenet-epoch", self.seed, self.epoch)
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


class SkipLog:
    """Says once per file, on one line of stderr, that an unreadable file was skipped."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def report(self, bad: Sequence[Unreadable]) -> None:
        for b in bad:
            if b.path not in self.seen:
                self.seen.add(b.path)
                print(f"warning: skipped unreadable image {b.path}: {b.reason}", file=sys.stderr, flush=True)

    def check_batch(self, bad: Sequence[Unreadable], kept: int) -> None:
        """Report ``bad``; fail if nothing of the batch was readable."""
        self.report(bad)
        if kept == 0 and bad:
            names = ", ".join(b.path for b in bad[:3])
            raise DataError(f"no image of a batch could be read ({names}{' …' if len(bad) > 3 else ''}: "
                            f"{bad[0].reason}); check the dataset's files")


def collate_readable(batch: list) -> tuple[torch.Tensor | None, torch.Tensor | None, list[Unreadable]]:
    """The readable samples of a batch stacked, and the unreadable ones apart."""
    bad = [s for s in batch if isinstance(s, Unreadable)]
    good = [s for s in batch if not isinstance(s, Unreadable)]
    if not good:
        return None, None, bad
    images, labels = default_collate(good)
    return images, labels, bad
