"""Loss landscapes (Li, Xu, Taylor, Studer, Goldstein 2018, "Visualizing the loss landscape
of neural nets"): the training loss on slices through weight space around trained weights.

A direction d is random (N(0, 1)) and *filter-normalised*: each filter d_i of a conv (each
row of the classifier) is scaled to the norm of the weight filter w_i it perturbs, so a
step α moves every filter by the same fraction of its own size, whatever the scale BN lets
it have. BN parameters and biases are not perturbed (d = 0), and BN keeps its running
statistics: the net is evaluated in eval mode at w + α·d₁ (+ β·d₂). Li et al. found
ResNet-56's surface a smooth, nearly convex bowl and its plain twin's (no shortcuts) a
chaotic one, sharper the deeper the plain net.

Every point is one batched forward pass of the same images, held in memory, through
`torch.func.functional_call` (the model's weights are never written).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import UsageError
from .sources import EvalSet, NetLike, NetSource, check_fits, data_for, eval_set, open_net

SPAN = 0.5  # α, β from -SPAN to SPAN: ±1 (Li et al.'s span) saturates the loss of our short-trained nets
GRID = 11  # points per axis of the 2-D surface
DIRECTIONS = 4  # random directions of the 1-D slices (the first two are the surface's axes)
IMAGES = 500  # training images the loss is measured on
CHUNK = 500


def filter_normalized(params: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction in weight space, filter-normalised (see the module's docstring):
    for every weight of 2 or more dimensions, ‖d_i‖ = ‖w_i‖ for each output filter i; zero
    for BN parameters and biases."""
    out = {}
    for name, w in params.items():
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype)
        if w.dim() <= 1:
            out[name] = torch.zeros_like(w)
            continue
        dims = tuple(range(1, w.dim()))
        scale = torch.linalg.vector_norm(w, dim=dims, keepdim=True) / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12)
        out[name] = d * scale
    return out


class LossAt:
    """The training loss (and error) of a net at weights w + Σ αₖ·dₖ, its BN statistics and
    the images fixed: one batched forward pass per point, nothing re-read or copied."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        self.model = model.eval()
        self.x, self.y = x, y
        self.params = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}
        self.points = 0

    def __call__(self, directions: Sequence[dict[str, torch.Tensor]], steps: Sequence[float]) -> tuple[float, float]:
        weights = {}
        for k, w in self.params.items():
            moved = w
            for d, a in zip(directions, steps):
                if a:
                    moved = moved + a * d[k]
            weights[k] = moved
        loss, wrong = 0.0, 0
        with torch.inference_mode():
            for lo in range(0, len(self.y), CHUNK):
                out = functional_call(self.model, (weights, self.buffers), (self.x[lo:lo + CHUNK],))
                y = self.y[lo:lo + CHUNK]
                loss += float(nn.functional.cross_entropy(out.float(), y, reduction="sum"))
                wrong += int((out.argmax(1) != y).sum())
        self.points += 1
        return loss / len(self.y), wrong / len(self.y)


def check_span(span: float, grid: int, directions: int) -> None:
    """One line for a span, grid or number of directions that cannot make a slice."""
    if not isinstance(span, (int, float)) or isinstance(span, bool) or not (0 < span <= 10) or math.isnan(span):
        raise UsageError(f"span {span!r} is invalid: give the largest step α, a number in (0, 10] "
                         f"(a fraction of each filter's norm; default {SPAN})")
    if not isinstance(grid, int) or isinstance(grid, bool) or not 3 <= grid <= 101 or grid % 2 == 0:
        raise UsageError(f"grid {grid!r} is invalid: give an odd number of points per axis from 3 to 101, so "
                         f"that the trained weights are its middle point (default {GRID})")
    if not isinstance(directions, int) or isinstance(directions, bool) or not 0 <= directions <= 32:
        raise UsageError(f"directions {directions!r} is invalid: give 0 to 32 (default {DIRECTIONS})")


def landscape(net: NetLike | NetSource, data: str | None = None, images: EvalSet | None = None,
              span: float = SPAN, grid: int = GRID, directions: int = DIRECTIONS, surface: bool = True,
              seed: int = 0, n_images: int = IMAGES) -> dict:
    """1-D and 2-D filter-normalised slices of ``net``'s training loss around its weights.

    ``directions`` random directions d₁ … give 1-D slices loss(w + α·dₖ), α in [-span,
    span] on ``grid`` points; with ``surface`` the 2-D slice loss(w + α·d₁ + β·d₂) on a
    grid × grid lattice. Returns plain data: ``alphas``, ``base_loss``, ``slices`` (per
    direction: loss and error at each α), ``surface`` (rows over β, columns over α: loss),
    ``rise`` (the mean loss rise over the directions and both signs at each |α|),
    ``concave_share`` (see `concave_share`; over the slices and the surface's rows and
    columns), ``points``,
    ``points_per_s`` and ``seconds``."""
    check_span(span, grid, directions)
    if surface and directions < 2:
        raise UsageError("the 2-D surface needs 2 directions or more (its axes are the first two)")
    t0 = time.perf_counter()
    source = net if isinstance(net, NetSource) else open_net(net)
    if images is None:
        images = eval_set(data_for([source], data), images=n_images, val_split=source.val_split, seed=source.seed)
    check_fits(source, images)
    n = min(n_images, len(images.train_y))
    at = LossAt(source.model, images.train_x[:n], images.train_y[:n])
    g = torch.Generator().manual_seed(seed)
    dirs = [filter_normalized(at.params, g) for _ in range(directions)]
    alphas = torch.linspace(-span, span, grid).tolist()
    alphas[grid // 2] = 0.0  # the trained weights themselves, exactly
    base = at([], [])

    def point(ds: Sequence[dict], steps: Sequence[float]) -> tuple[float, float]:
        return at(ds, steps) if any(steps) else base

    lattice = [[point(dirs[:2], [a, b]) for a in alphas] for b in alphas] if surface else None
    slices = []
    for k, d in enumerate(dirs):
        if lattice is not None and k < 2:  # the surface's axes: its middle row (d1) and column (d2)
            points = lattice[grid // 2] if k == 0 else [row[grid // 2] for row in lattice]
        else:
            points = [point([d], [a]) for a in alphas]
        slices.append({"direction": k, "loss": [p[0] for p in points], "error": [p[1] for p in points]})
    base_loss, base_error = base
    seconds = time.perf_counter() - t0
    spec = source.spec
    mid = grid // 2
    return {
        "net": source.name, "arch": spec.name, "depth": spec.depth, "residual": spec.residual,
        "data": images.data, "images": n, "span": span, "grid": grid, "seed": seed,
        "alphas": alphas, "base_loss": base_loss, "base_error": base_error,
        "slices": slices, "surface": None if lattice is None else [[p[0] for p in row] for row in lattice],
        "rise": [{"alpha": alphas[mid + i], "mean": _mean([s["loss"][mid + j] - base_loss for s in slices
                                                           for j in (i, -i)]) if slices else None}
                 for i in range(1, mid + 1)],
        "concave_share": concave_share([s["loss"] for s in slices] + _off_axis(lattice, mid)),
        "points": at.points, "points_per_s": at.points / seconds, "seconds": seconds,
    }


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _off_axis(lattice: list[list[tuple[float, float]]] | None, mid: int) -> list[list[float]]:
    """The surface's rows and columns other than its axes (those are slices already)."""
    if lattice is None:
        return []
    rows = [[p[0] for p in row] for j, row in enumerate(lattice) if j != mid]
    return rows + [[row[i][0] for row in lattice] for i in range(len(lattice)) if i != mid]


def concave_share(curves: Sequence[Sequence[float]]) -> float | None:
    """The share of interior points of 1-D slices where the loss bends down (a negative
    second difference): 0 for a convex bowl. A cheap stand-in for Li et al.'s map of the
    Hessian's eigenvalue ratio, which they used to show the plain nets' non-convexity."""
    bends = [c[i - 1] + c[i + 1] - 2 * c[i] for c in curves for i in range(1, len(c) - 1)]
    return sum(b < 0 for b in bends) / len(bends) if bends else None


def landscape_table(result: dict) -> str:
    """A terminal table: the loss along each direction, and its mean rise at each step."""
    alphas = result["alphas"]
    head = "  α:        " + " ".join(f"{a:7.2f}" for a in alphas)
    lines = [f"{result['net']} ({result['arch']}): training loss on {result['images']} images of {result['data']}, "
             f"filter-normalised directions, α in ±{result['span']:g}", head]
    for s in result["slices"]:
        lines.append(f"  d{s['direction'] + 1} loss:   " + " ".join(f"{v:7.3g}" for v in s["loss"]))
    lines.append("  mean rise: " + "  ".join(f"|α|={r['alpha']:.2f}: {r['mean']:+.3g}" for r in result["rise"]))
    if result["concave_share"] is not None:
        lines.append(f"  the slices bend down (concave) at {100 * result['concave_share']:.0f} % of their inner points")
    lines.append(f"  {result['points']} points in {result['seconds']:.1f} s ({result['points_per_s']:.1f} points/s)")
    return "\n".join(lines)
