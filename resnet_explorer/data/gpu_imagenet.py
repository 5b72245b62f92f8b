"""The GPU input path for ImageNet: files read on the CPU, JPEGs decoded on the GPU
(torchvision's nvJPEG batch decoder, the A100/H100 hardware decoder where there is one),
the paper's augmentation and test views as batched tensor ops on the device.

The worker processes only read files (`jpeg.read_sample`; the rare file that is not a
plain JPEG is decoded there with PIL). A background thread decodes each batch on a side
CUDA stream, draws each image's view from its own seed exactly as the CPU path does
(`views.draw_train_view`), resamples all the crops of the batch with two batched matrix
products (`views.resample_views`), adds the lighting and subtracts the mean, and queues
the batch; the training loop's stream waits on it, so decoding overlaps training.

On the CPU the same code runs with libjpeg-turbo instead of nvJPEG: that is how its
equivalence with the CPU path (`ImageNetLoader`) is tested. NVIDIA DALI was not taken:
it would add a large optional dependency that cannot be installed or tested without a
GPU, and nothing was measured about it; torchvision's decoder comes with torchvision.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .batches import EpochBatchSampler, SkipLog
from .cpus import resolve_workers
from .jpeg import Sample, Unreadable, decode_on, read_sample
from .transforms import IMAGENET_MEAN, MULTI_SCALES
from .views import View, ViewMaker, resample_views, to_device

VIEWS = ("train", "centre", "ten", "scales")


class _FileDataset(Dataset):
    """(index, seed) → the file as `jpeg.read_sample` gives it (bytes or a decoded image),
    with its views already drawn."""

    def __init__(self, samples: Sequence[tuple[str, int]], views: ViewMaker):
        self.samples, self.views = samples, views

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> Sample | Unreadable:
        index, seed = key
        path, label = self.samples[index]
        return read_sample(path, label, seed, index, self.views)


def _as_list(batch: list) -> list:
    return batch


class GpuImageNetLoader:
    """`ImageNetLoader`'s interface and batches, decoded and augmented on ``device``.

    ``views``: ``train`` (scale, crop, flip, lighting from each sample's seed), ``centre``
    (the 224 centre crop of the 256 resize), ``ten`` (B×10×3×224×224) or ``scales`` (one
    image at a time: a list of 1×3×h×w views, each of ``scales`` and its mirror). Batches
    come from the same `EpochBatchSampler` as the CPU path's, so order, rank slices and
    mid-epoch resumption are the same; ``prefetch`` batches are made ahead in a thread
    (0: none, make each batch when asked)."""

    def __init__(
        self, samples: Sequence[tuple[str, int]], batch_size: int, device: str | torch.device, train: bool,
        views: str = "train", seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
        mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | None = None,
        channels_last: bool = False, dtype: torch.dtype = torch.float32, rank: int = 0, world_size: int = 1,
        scales: Sequence[int] = MULTI_SCALES, scale: tuple[int, int] = (256, 480), crop: int = 224,
        lighting: float = 0.1, prefetch: int = 2,
    ):
        if views not in VIEWS:
            raise ValueError(f"views={views!r}: use one of {', '.join(VIEWS)}")
        if views == "scales" and batch_size != 1:
            raise ValueError("multi-scale views come one image at a time: use batch_size=1")
        workers = resolve_workers(workers)
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed, self.views = batch_size, train, seed, views
        self.channels_last, self.dtype, self.prefetch = channels_last, dtype, prefetch
        self.scales, self.scale, self.crop, self.lighting = tuple(scales), scale, crop, lighting
        self.view_maker = ViewMaker(views, scale, crop, lighting, tuple(scales))
        self.epoch, self._start = 0, 0
        self.num_samples = len(samples)
        mean_t = torch.as_tensor(IMAGENET_MEAN if mean is None else mean, dtype=torch.float32)
        self.mean = (mean_t.view(3, 1, 1) if mean_t.dim() == 1 else mean_t).to(self.device)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1).to(self.device)
        self.batch_sampler = EpochBatchSampler(self.num_samples, batch_size, train, train, seed, sampler,
                                                rank, world_size)
        self.loader = DataLoader(
            _FileDataset(samples, self.view_maker), batch_sampler=self.batch_sampler, num_workers=workers,
            collate_fn=_as_list, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        )
        self.skipped = SkipLog()

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_epoch()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        self.batch_sampler.epoch, self.batch_sampler.start_batch = epoch, start
        if self.prefetch > 0:
            yield from _prefetched(self._produce, self.device, self.prefetch)
        else:
            yield from self._produce()
        self.epoch = epoch + 1

    # -- making a batch ---------------------------------------------------------------------
    def _produce(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for raw in self.loader:
            yield from self.make_batch(raw)

    def view_of(self, h: int, w: int, seed: int) -> list[View]:
        """The views of an ``h × w`` image whose augmentation seed is ``seed``."""
        return self.view_maker(h, w, seed)

    def _views(self, s: Sample, img: torch.Tensor) -> list[View]:
        """The views the worker drew, if the decoded image has the size they were drawn for."""
        size = (img.shape[-2], img.shape[-1])
        return s.views if s.views and s.size == size else self.view_of(*size, s.seed)

    def make_batch(self, raw: list[Sample | Unreadable]) -> Iterator[tuple[Any, torch.Tensor]]:
        """The finished batch (or, for ``scales``, each image's views) of the files ``raw``."""
        good = [s for s in raw if isinstance(s, Sample)]
        images, failed = decode_on(good, self.device)
        kept = [(s, img) for s, img in zip(good, images) if img is not None]
        self.skipped.check_batch([s for s in raw if isinstance(s, Unreadable)] + failed, len(kept))
        if not kept:
            return
        labels = to_device(torch.tensor([s.label for s, _ in kept]), self.device)
        if self.views == "scales":
            for (s, img), y in zip(kept, labels.split(1)):
                views = self._views(s, img)
                out = [self._finish(resample_views([img, img], views[i:i + 2]), views[i:i + 2])
                       for i in range(0, len(views), 2)]
                yield [v for pair in out for v in pair.split(1)], y
            return
        imgs, views = [], []
        for s, img in kept:
            vs = self._views(s, img)
            imgs += [img] * len(vs)
            views += vs
        x = self._finish(resample_views(imgs, views), views)
        if self.views == "ten":
            x = x.view(len(kept), 10, *x.shape[1:])
        yield x, labels

    def _finish(self, x: torch.Tensor, views: list[View]) -> torch.Tensor:
        """0…255 resampled views → [0, 1], plus lighting, minus the mean (÷ std), in the
        memory format and dtype asked for."""
        x = x.div_(255)
        if any(v.rgb != (0.0, 0.0, 0.0) for v in views):
            x += to_device(torch.tensor([v.rgb for v in views], dtype=torch.float32), self.device)[:, :, None, None]
        x = x.sub_(self.mean)
        if self.std is not None:
            x = x.div_(self.std)
        if self.channels_last and self.views != "ten":
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)


_END = object()


def _prefetched(produce: Callable[[], Iterator], device: torch.device, depth: int) -> Iterator:
    """``produce()``'s items, made ahead in a thread (on a side stream on CUDA); each is
    handed over once the consumer's stream has waited for it."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            with torch.cuda.device(device) if cuda else nullcontext(), \
                    torch.cuda.stream(stream) if cuda else nullcontext():
                for item in produce():
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                    if not put((item, event)):
                        return
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=work, name="imagenet-gpu-input", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, BaseException):
                raise got
            (x, y), event = got
            if cuda:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                for t in ([*x] if isinstance(x, list) else [x]) + [y]:
                    t.record_stream(current)
            yield x, y
    finally:  # the consumer stopped (or failed): stop the thread, unblocking its last put
        stop.set()
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass

