"""How long the "why shortcuts help" studies take on the CPU demo's nets, and the landscape's
points per second against the naive loop.

    python benchmarks/why_speed.py [--demo runs/demo] [--points 5] [--repeat 2] [--skip-studies]

``--demo``: a finished ``resnet-explorer demo`` folder (plain-20, plain-56, resnet-20,
resnet-56). Prints, with wall and CPU seconds (CPU time is what another session's load
distorts least): reading the images once, `why.lesion` of each net and `why.landscape` of
plain-56 and ResNet-56 with the CLI's defaults, and `why.gradients` of the four
architectures at their own input size (``resnet-explorer why gradients --arch … --width 8``).

Then the landscape's evaluation alone on ResNet-56, ``--points`` steps along one
filter-normalised direction on the same 500 training images: `why.landscape.LossAt` (images
read once, one batched `functional_call` per point) against the naive loop a new user
writes (per point: copy the net, move its weights, and measure with
`experiments.train_subset_error`, which reads and preprocesses the dataset again), A B A B
for ``--repeat`` rounds, checking that both give the same errors. Goals: `why lesion` of
ResNet-56 and `why gradients` of the four nets at most 20 s each on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_explorer.run_analysis import train_subset_error  # noqa: E402
from resnet_explorer.why.gradients import gradients  # noqa: E402
from resnet_explorer.why.landscape import LossAt, filter_normalized, landscape  # noqa: E402
from resnet_explorer.why.lesion import lesion  # noqa: E402
from resnet_explorer.why.sources import eval_set, open_net  # noqa: E402

NETS = ("plain-20", "plain-56", "resnet-20", "resnet-56")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    t, c = time.perf_counter(), cpu()
    out = fn()
    return out, time.perf_counter() - t, cpu() - c


def row(what: str, net: str, wall: float, cpu_s: float, extra: str = "") -> None:
    print(f"{what:<28} {net:<10} {wall:8.1f} {cpu_s:8.1f}  {extra}", flush=True)


def studies(demo: Path) -> None:
    print(f"{'study':<28} {'net':<10} {'wall s':>8} {'CPU s':>8}")
    nets = {n: open_net(demo / n) for n in NETS}
    images, wall, c = timed(lambda: eval_set(nets["resnet-56"].data))
    row("images (read once)", "-", wall, c, f"{len(images.train_y)} training + {len(images.test_y)} test")
    for name, n in nets.items():
        r, wall, c = timed(lambda: lesion(n, images=images))
        row("lesion (CLI defaults)", name, wall, c, f"{len(r['deleted'])} single, "
            f"{sum(len(x['errors']) for x in r['random'])} random lesions")
    for name in ("plain-56", "resnet-56"):
        r, wall, c = timed(lambda: landscape(nets[name], images=images))
        row("landscape (CLI defaults)", name, wall, c, f"{r['points']} points, {r['points_per_s']:.1f} points/s")
    archs = [nets[n].spec for n in NETS]
    r, wall, c = timed(lambda: gradients(archs))
    row("gradients (4 archs, 3 seeds)", "all four", wall, c,
        ", ".join(f"{g['arch']} {g['correlation']:.2f}" for g in r) + f" ({r[0]['input_size']}² inputs)")


def naive_points(model: torch.nn.Module, d: dict, steps: list[float], data: str, n: int) -> list[float]:
    """The loop a new user writes: per point, copy the net, move it, re-read the data, evaluate."""
    errors = []
    for a in steps:
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in moved.named_parameters():
                p.add_(a * d[k])
        errors.append(train_subset_error(moved, data, n=n)["error"])
    return errors


def points_per_second(demo: Path, points: int, repeat: int) -> None:
    net = open_net(demo / "resnet-56")
    images = eval_set(net.data, images=500)
    at = LossAt(net.model, images.train_x, images.train_y)
    d = filter_normalized(at.params, torch.Generator().manual_seed(0))
    steps = [0.1 * (i + 1) for i in range(points)]
    print(f"\nlandscape evaluation, ResNet-56, {points} points on 500 training images (points/s, higher is better)")
    ours_rates, naive_rates = [], []
    for i in range(repeat):
        ours, wall, c = timed(lambda: [at([d], [a])[1] for a in steps])
        ours_rates.append(points / wall)
        print(f"  round {i + 1}  ours   {points / wall:7.2f} points/s  ({wall:.2f} s wall, {c:.2f} s CPU)", flush=True)
        naive, wall, c = timed(lambda: naive_points(net.model, d, steps, net.data, 500))
        naive_rates.append(points / wall)
        print(f"  round {i + 1}  naive  {points / wall:7.2f} points/s  ({wall:.2f} s wall, {c:.2f} s CPU)", flush=True)
        if ours != naive:
            raise SystemExit(f"the two loops disagree: {ours} vs {naive}")
    best = max(ours_rates) / max(naive_rates)
    print(f"  same errors at every point; ours / naive: {best:.1f}x (best rounds), "
          f"{sum(ours_rates) / sum(naive_rates):.1f}x (mean)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", default="runs/demo", help="a finished resnet-explorer demo folder")
    p.add_argument("--points", type=int, default=5, help="landscape points per loop and round")
    p.add_argument("--repeat", type=int, default=2, help="rounds of ours then naive")
    p.add_argument("--skip-studies", action="store_true", help="only the landscape's points/s")
    args = p.parse_args()
    demo = Path(args.demo)
    missing = [n for n in NETS if not (demo / n / "checkpoints" / "last.pt").is_file()]
    if missing:
        raise SystemExit(f"{demo} lacks trained {', '.join(missing)}: run resnet-explorer demo --out {demo} first")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.skip_studies:
        studies(demo)
    points_per_second(demo, args.points, args.repeat)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
