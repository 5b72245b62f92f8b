"""Shattered gradients (Balduzzi et al. 2017, "The shattered gradients problem: if resnets
are the answer, then what is the question?"): at initialisation, how alike are the input
gradients ∂f/∂x of neighbouring inputs?

Balduzzi et al. fed a line of inputs through nets at initialisation and found that the
gradients of a deep plain net with batch normalisation look like white noise (neighbouring
inputs' gradients are uncorrelated: "shattered"), while a residual net's stay correlated,
their correlation decaying only slowly with depth, which makes them usable for training.

Here: ``points`` inputs x_t = a + t·span·u on a line through input space (a and u random
N(0, 1) images, t in [-1, 1]), f(x) = the logits projected on a fixed random direction, and
the cosine similarity of ∂f/∂x at neighbouring points (lag 1, and further lags for the
figure). BN normalises with the statistics of the line's own points, as a training-mode
forward pass would, frozen so that each point's gradient is its own.
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch
from torch import nn

from ..errors import UsageError
from ..model import Net
from ..spec import ArchSpec
from ..zoo import get_spec
from .sources import initial_model

# The line: 128 inputs from a − u/2 to a + u/2, neighbours |u|/127 apart (Balduzzi et al.'s
# 1-D line had 256 points; the same step over half the length costs half the time and gives
# the same correlation at each step).
POINTS = 128
SPAN = 0.5
SEEDS = 3
LAGS = 16  # correlation at lags 1 … LAGS, for the figure
DEPTHS = (8, 14, 20, 32, 44, 56, 110)  # 6n+2: the depth figure's nets


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of batch ``x`` (one training-mode pass),
    then leave the model in evaluation mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one pass, exactly this batch's statistics
    counts: dict[nn.Module, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: counts.__setitem__(mod, inp[0].numel() // inp[0].shape[1]))
             for m in bns]
    model.train()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
        n = counts.get(m, 2)
        m.running_var.mul_((n - 1) / n)  # BN keeps the unbiased variance; it normalised with the batch's own
    model.eval()


def line_inputs(shape: Sequence[int], points: int, span: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``points`` images on the line a + t·span·u, t from -1 to 1 (a, u ~ N(0, 1), from
    ``seed``), and the line's direction u."""
    g = torch.Generator().manual_seed(seed)
    a, u = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    t = torch.linspace(-1, 1, points).view(-1, *[1] * len(shape))
    return a + span * t * u, u


def input_gradients(model: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    """∂f/∂x for each row of x (N × C·H·W), f = logits · v, v a fixed random unit vector;
    BN calibrated on x first (`calibrate_bn`)."""
    calibrate_bn(model, x)
    x = x.clone().requires_grad_(True)
    out = model(x)
    v = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(seed))
    (g,) = torch.autograd.grad(out @ (v / v.norm()), x, torch.ones(len(x)))
    return g.flatten(1)


def lag_correlations(g: torch.Tensor, lags: int = LAGS) -> list[float]:
    """Mean cosine similarity of rows k apart, for k = 1 … lags."""
    g = nn.functional.normalize(g, dim=1)
    return [float((g[:-k] * g[k:]).sum(1).mean()) for k in range(1, min(lags, len(g) - 1) + 1)]


def _check(points: int, span: float, seeds: int) -> None:
    if not isinstance(points, int) or points < 3:
        raise UsageError(f"points {points!r} is invalid: give 3 or more inputs on the line (default {POINTS})")
    if not (isinstance(span, (int, float)) and 0 < span < float("inf")):
        raise UsageError(f"span {span!r} is invalid: give a positive length (default {SPAN})")
    if not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"seeds {seeds!r} is invalid: give 1 or more")


def shattering(net: ArchSpec | str | Net, seeds: int = SEEDS, points: int = POINTS, span: float = SPAN,
               input_size: int | None = None, width: int | None = None) -> dict:
    """The gradient correlation of one net at initialisation, over ``seeds`` initialisations
    (a spec or name is built seed by seed; a built model is measured once, on a copy: its
    BN statistics are recalibrated).

    Returns ``{"arch", "depth", "residual", "correlation" (mean over seeds, lag 1),
    "per_seed", "lags" (mean over seeds, lags 1 …), "slope" (f's slope along the line,
    ∂f/∂x · u, seed 0, for the figure), "input_size", "seconds"}``."""
    _check(points, span, seeds)
    t0 = time.perf_counter()
    if isinstance(net, str):
        net = get_spec(net, **({"width": width} if width else {}))
    spec = net.spec if isinstance(net, nn.Module) else net
    side = input_size or spec.input_size
    shape = (spec.in_channels, side, side)
    per_seed, lags, slope = [], [], []
    for seed in range(seeds if not isinstance(net, nn.Module) else 1):
        model = copy.deepcopy(net) if isinstance(net, nn.Module) else initial_model(spec, seed)
        x, u = line_inputs(shape, points, span, 1000 + seed)
        g = input_gradients(model, x, 2000 + seed)
        seed_lags = lag_correlations(g)
        per_seed.append(seed_lags[0])
        lags.append(seed_lags)
        if seed == 0:
            slope = (g @ u.flatten()).tolist()
    return {"arch": spec.name, "depth": spec.depth, "residual": spec.residual, "correlation": sum(per_seed) / len(per_seed), "per_seed": per_seed,
            "lags": [sum(c) / len(c) for c in zip(*lags)], "slope": slope, "input_size": side,
            "points": points, "span": span, "seconds": time.perf_counter() - t0}


def gradients(archs: Sequence[ArchSpec | str], width: int | None = None, seeds: int = SEEDS,
              points: int = POINTS, span: float = SPAN, input_size: int | None = None) -> list[dict]:
    """`shattering` of each architecture (a name such as cifar-resnet56, or a spec)."""
    if not archs:
        raise UsageError("give at least one architecture, e.g. --arch cifar-plain56 --arch cifar-resnet56")
    return [shattering(a, seeds, points, span, input_size, width) for a in archs]


def sweep(depths: Sequence[int] = DEPTHS, width: int = 8, seeds: int = SEEDS, points: int = POINTS,
          span: float = SPAN, input_size: int | None = None) -> list[dict]:
    """`shattering` of the plain and the residual CIFAR net (6n+2) at each depth, plain first."""
    bad = [d for d in depths if not isinstance(d, int) or d < 8 or (d - 2) % 6]
    if bad:
        raise UsageError(f"depth(s) {bad} invalid: CIFAR nets have 6n+2 layers (8, 14, 20, 32, 44, 56, 110 …)")
    return [shattering(f"cifar-{kind}{d}", seeds, points, span, input_size, width)
            for kind in ("plain", "resnet") for d in depths]


def by_depth(depths: Sequence[int] = DEPTHS, width: int = 8, seeds: int = SEEDS, points: int = POINTS,
             span: float = SPAN, input_size: int | None = None) -> dict:
    """The gradient correlation of plain and residual CIFAR nets at each depth (`sweep`):
    ``{"depths", "plain": [...], "residual": [...], "per_seed": {arch: [...]}}``."""
    results = sweep(depths, width, seeds, points, span, input_size)
    return {"depths": list(depths), "plain": [r["correlation"] for r in results if not r["residual"]],
            "residual": [r["correlation"] for r in results if r["residual"]],
            "per_seed": {r["arch"]: r["per_seed"] for r in results}}


def gradients_table(results: Sequence[dict]) -> str:
    """A terminal table: each net's gradient correlation at initialisation, per seed."""
    lines = [f"gradient correlation at initialisation (cosine of ∂f/∂x at neighbouring inputs; "
             f"1 = smooth, 0 = shattered), {results[0]['points']} inputs on a line, "
             f"{results[0]['input_size']}² images" if results else ""]
    for r in results:
        seeds = ", ".join(f"{c:.3f}" for c in r["per_seed"])
        lines.append(f"  {r['arch']:<18} {'residual' if r['residual'] else 'plain':<8} depth {r['depth']:>4}  "
                     f"correlation {r['correlation']:6.3f}   seeds: {seeds}")
    return "\n".join(lines)
