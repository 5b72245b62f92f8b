"""A trained run's analysis.json: what the report and the Fig. 7 view read besides the metrics.

`analyze_run` measures a run's last checkpoint on fixed images: its layer responses (Fig. 7),
gradient norms at initialisation (same seed) and at the end, its training error in eval mode
on a fixed training subset (`train_subset_error`), and for gated nets each block's mean
gate. The dataset is read once per call (`analyze_runs`: once for all its runs).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from .analysis import gate_means, gradient_norms, layer_responses
from .data import DataSource, GpuCifarLoader, as_source, load_tensors, make_loaders, pixel_mean, split_train_val
from .evaluate import evaluate, load_model
from .model import build
from .runs import RunDir

TRAIN_SUBSET = 2000  # training images of the eval-mode pass that measures training error
PROBE_IMAGES = 500  # test images the layer responses and gradient norms are measured on

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def source_tensors(source: DataSource) -> Tensors | None:
    """An in-memory source's ``(train_x, train_y, test_x, test_y)``; None for ImageNet."""
    return load_tensors(source) if source.in_memory else None


def probe_batch(source: DataSource, tensors: Tensors | None = None,
                n: int = PROBE_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images, preprocessed as in training (the training set's mean)."""
    if not source.in_memory:
        _, test, _ = make_loaders(source, n, "cpu", 0, augment=False, eval_batch_size=n)
        return next(iter(test))
    train_x, _, test_x, test_y = tensors if tensors is not None else load_tensors(source)
    return next(iter(GpuCifarLoader(test_x[:n], test_y[:n], n, "cpu", False, pixel_mean(train_x), 0, False)))


def train_subset_error(model: torch.nn.Module, source: str | DataSource, n: int = TRAIN_SUBSET,
                       val_split: int | None = None, seed: int = 0, tensors: Tensors | None = None) -> dict | None:
    """Training error measured as the paper's curves mean it, but without their noise: one
    pass in eval mode (BN running statistics, no augmentation) over the first ``n`` images
    the net was trained on, preprocessed as in training. Returns ``{"images", "error", "loss"}``;
    None for ImageNet, which is read lazily (its reports keep the training-window error)."""
    source = as_source(source)
    if not source.in_memory:
        return None
    train_x, train_y, _, _ = tensors if tensors is not None else load_tensors(source)
    if val_split:
        train_x, train_y, _, _ = split_train_val(train_x, train_y, val_split, seed)
    mean = pixel_mean(train_x)  # the training loader's mean: over all images trained on
    n = min(n, int(train_x.shape[0]))
    loader = GpuCifarLoader(train_x[:n], train_y[:n], 500, "cpu", False, mean, seed, False)
    result = evaluate(model, loader, torch.device("cpu"))
    return {"images": n, "error": result["error"], "loss": result["loss"]}


def analyze_run(run_dir: str | Path, data: str | DataSource, seed: int = 0, tensors: Tensors | None = None) -> dict:
    """Measure a run's last checkpoint (see the module's docstring) and write its analysis.json.
    ``seed``: the run's, when its records do not say; ``tensors``: ``data``'s, if already read."""
    run, source = RunDir(run_dir), as_source(data)
    tensors = tensors if tensors is not None else source_tensors(source)
    x, y = probe_batch(source, tensors)
    model = load_model(run.path).cpu()
    config = run.config() if run.is_run() else None
    seed = config.seed if config else seed
    torch.manual_seed(seed)
    init = build(model.spec)  # the run's initial weights: same seed, same build
    gates = {"init": gate_means(init, x), "final": gate_means(model, x)}  # before any training-mode pass
    result = {
        "iteration": run.iteration(),
        "images": int(y.numel()),
        "layer_responses": [{"name": r.name, "std": r.std} for r in layer_responses(model, x)],
        "gradient_norms": {"init": gradient_norms(init, x[:128], y[:128]),
                           "final": gradient_norms(model, x[:128], y[:128])},
    }
    subset = train_subset_error(model, source, val_split=config.recipe.val_split if config else None, seed=seed,
                                tensors=tensors)
    if subset is not None:
        result["train_subset"] = subset
    if gates["final"]:
        result["gate_means"] = {k: [asdict(g) for g in v] for k, v in gates.items()}
    run.write_analysis(result)
    return result


def analyze_runs(run_dirs: Sequence[str | Path], data: str | DataSource) -> list[Path]:
    """`analyze_run` for each run whose analysis is missing or older than its last
    checkpoint (a dashboard's runs, say), the data read once; returns the run directories."""
    out = [Path(d) for d in run_dirs]
    todo = [d for d in out if not RunDir(d).analysis_current()]
    if todo:
        source = as_source(data)
        tensors = source_tensors(source)
        for d in todo:
            analyze_run(d, source, tensors=tensors)
    return out
