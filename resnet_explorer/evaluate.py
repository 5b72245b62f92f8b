"""Evaluation: top-1/top-5 error, the paper's 10-crop and multi-scale testing, ensembles.

Everything goes through `predict`, which returns softmax probabilities averaged over
the views of each image (one view, 10 crops, or several scales and their flips); an
ensemble (Table 5) averages the probabilities of several models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from . import distributed as D
from .checkpoint import Checkpoint, nonfinite
from .count import training_memory
from .data import (IMAGENET_MEAN, GpuImageNetLoader, SubtractMean, make_imagenet_loader, make_loaders,
                   multi_scale, as_source, resolve_loader, resolve_workers)
from .data.batches import SkipLog
from .data.imagenet import SeededDataset
from .data.jpeg import Unreadable, pil_loader
from .devices import Accel, device_memory, pick_device
from .errors import EvalError, TrainingError
from .model import Net, build
from .runs import RunDir


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, device: torch.device, accel=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N×K, on the CPU) and labels over a loader.

    A batch may be B×C×H×W (one view), B×V×C×H×W (V views: 10-crop), or a list of
    B×C×H×W tensors of different sizes (scales): views of an image are averaged.
    """
    accel = accel or Accel()
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        views = x if isinstance(x, (list, tuple)) else (x.unbind(1) if x.dim() == 5 else [x])
        total = None
        for v in views:
            v = v.to(device, non_blocking=True)
            if accel.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            with accel.autocast(device):
                p = model(v).float().softmax(1)
            total = p if total is None else total + p
        probs.append((total / len(views)).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    if not probs:
        raise EvalError("the evaluation set is empty")
    return torch.cat(probs), torch.cat(labels)


def errors(probs: torch.Tensor, labels: torch.Tensor, topk: int = 5) -> dict[str, float]:
    """Mean loss (of the averaged probabilities), top-1 error, and top-k error where K > 2k."""
    sums = error_sums(probs, labels, topk)
    n = sums.pop("count")
    return {k: v / n for k, v in sums.items()}


def error_sums(probs: torch.Tensor, labels: torch.Tensor, topk: int = 5) -> dict[str, float]:
    """What `errors` averages, as sums with the image ``count`` (to add up over shards)."""
    n = labels.numel()
    loss = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item() if n else 0.0
    top = probs.topk(min(topk, probs.shape[1]), dim=1).indices
    out = {"loss": loss, "error": float((top[:, 0] != labels).sum().item())}
    if probs.shape[1] > 2 * topk:
        out[f"top{topk}_error"] = float((~(top == labels[:, None]).any(1)).sum().item())
    return {**out, "count": float(n)}


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, accel=None) -> dict[str, float]:
    """Loss, top-1 (and top-5) error of one model over a loader."""
    return errors(*predict(model, loader, device, accel))


def evaluate_sharded(env: D.DistEnv, model: nn.Module, loader: Any, device: torch.device, accel: Accel,
                     num_classes: int) -> dict[str, float]:
    """`evaluate` over the ranks' shards of the evaluation set: sums all-reduced, then divided."""
    try:
        probs, labels = predict(model, loader, device, accel)
    except EvalError:  # this rank's shard is empty
        probs, labels = torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.long)
    sums = error_sums(probs, labels)
    keys = list(sums)
    total = D.all_reduce_sum(env, torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device))
    total = dict(zip(keys, total.tolist()))
    n = total.pop("count")
    return {k: v / n for k, v in total.items()}


# -- loading what was trained ------------------------------------------------------------------
def load_model(path: str | Path, device: str | torch.device = "cpu") -> Net:
    """The model of a run directory (its last checkpoint) or of a checkpoint file, read
    with the safe loader (`checkpoint.read_state`: tensors and plain data only)."""
    path = Path(path)
    ckpt = RunDir(path).checkpoint_path if path.is_dir() else path
    if not ckpt.is_file():
        raise EvalError(f"{path}: not a run directory or checkpoint (expected {ckpt})")
    try:
        saved = Checkpoint.load(ckpt, resume=False)
    except TrainingError as e:
        raise EvalError(str(e)) from None
    spec = saved.spec
    bad = nonfinite(saved.model)
    if bad:
        raise EvalError(f"{ckpt} holds {len(bad)} non-finite tensors ({bad[0]} …): a diverged net has no test "
                        "error to measure; evaluate a checkpoint from before it diverged")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    weights, have = training_memory(spec, 0) // 3, device_memory(dev)  # 4 bytes a parameter, at any depth
    if have is not None and weights > have:  # a spec.json far bigger than its tensors
        raise EvalError(f"{ckpt}: its architecture {spec.name} has {weights // 4:,} parameters, more than "
                        f"{dev} can hold: not a checkpoint to evaluate here")
    model = build(spec)
    try:
        model.load_state_dict(saved.model)
    except RuntimeError as e:
        raise EvalError(f"{ckpt}: not a resnet-explorer checkpoint (its weights do not fit its architecture "
                        f"{spec.name}: {str(e).splitlines()[0][:120]})") from None
    return model.to(dev).eval()


def multi_scale_loader(root: str, scales: Sequence[int], workers: int | None = None, loader: str = "cpu",
                       device: str | torch.device = "cpu"):
    """ImageNet val for fully-convolutional testing: each image at every scale, and flipped;
    ``loader="gpu"`` decodes and resizes on ``device`` (see `resolve_loader`)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    if resolve_loader(loader, device) == "gpu":
        return GpuImageNetLoader(ImageFolder(os.path.join(root, "val")).samples, 1, device, False, "scales",
                                 workers=workers, scales=scales)

    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), SubtractMean(IMAGENET_MEAN)])

    def views(img) -> list[torch.Tensor]:
        out = []
        for s in multi_scale(img, scales):
            s = norm(s)
            out += [s, s.flip(-1)]
        return out

    dataset = ImageFolder(os.path.join(root, "val"), loader=pil_loader)

    def collate(batch):  # batch size 1: scales differ in size
        (item,) = batch
        return item

    workers = resolve_workers(workers)
    keys = [[(i, 0)] for i in range(len(dataset))]  # SeededDataset's keys; the seed is unused
    batches = torch.utils.data.DataLoader(SeededDataset(dataset, views), batch_sampler=keys,
                                          num_workers=workers, collate_fn=collate)
    return _SkippingViews(batches)


class _SkippingViews:
    """The CPU multi-scale views, an unreadable file skipped with one warning line (as the
    batch loaders do)."""

    def __init__(self, batches: Iterable):
        self.batches, self.skipped = batches, SkipLog()

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self):
        for item in self.batches:
            if isinstance(item, Unreadable):
                self.skipped.report([item])
                continue
            imgs, label = item
            yield [i[None] for i in imgs], torch.tensor([label])


def evaluate_paths(
    paths: Sequence[str | Path],
    data: str | None = None,
    ten_crop: bool = False,
    scales: Sequence[int] | None = None,
    device: str = "auto",
    batch_size: int = 500,
    workers: int | None = None,
    loader: str = "auto",
) -> dict[str, Any]:
    """Evaluate one model, or an ensemble of several (averaged softmax), on ``data``'s
    test split (CIFAR-style) or val split (ImageNet, optionally 10-crop or multi-scale;
    ``loader``: its input path, see `resolve_loader`)."""
    if not paths:
        raise EvalError("give at least one run directory or checkpoint")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise EvalError(f"batch size {batch_size!r} is invalid: use a positive number of images (default 500)")
    dev = pick_device(device)
    models = [load_model(p, dev) for p in paths]
    data = data or RunDir(paths[0]).data_arg()
    if data is None:
        raise EvalError(f"{paths[0]}: say which data to evaluate on with --data")
    source = as_source(data)
    if (ten_crop or scales) and source.in_memory:
        raise EvalError("--ten-crop and --scales are ImageNet testing: use them with --data imagenet:DIR")
    if ten_crop and scales:
        raise EvalError("use either --ten-crop or --scales, not both")
    if scales:
        views = multi_scale_loader(source.path, scales, workers, loader, dev)
    elif not source.in_memory:
        views = make_imagenet_loader(source.path, "val", batch_size, dev, False, workers=workers,
                                     ten_crops=ten_crop, loader=loader)
    else:
        views = make_loaders(source, batch_size, dev, seed=0, augment=False, workers=workers)[1]
    total, labels, per_model = None, None, []
    for p, model in zip(paths, models):
        if model.spec.num_classes != source.num_classes:
            raise EvalError(f"{p} predicts {model.spec.num_classes} classes but {data} has "
                            f"{source.num_classes}")
        probs, labels = predict(model, views, dev)
        per_model.append({"path": str(p), **errors(probs, labels)})
        total = probs if total is None else total + probs
    if ten_crop:
        described = "10-crop"
    elif scales:
        described = f"scales {list(scales)} + flips"
    else:
        described = "1 view (the whole image)" if source.in_memory else "1 view (the 224 centre crop of the 256 resize)"
    result = {"data": data, "views": described, "images": labels.numel(), "models": per_model}
    if len(paths) > 1:
        result["ensemble"] = errors(total / len(paths), labels)
    return result
