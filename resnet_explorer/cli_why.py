"""``resnet-explorer why lesion | gradients | landscape``: why shortcuts help, measured on your
own nets (`cli.make_parser` registers them). The work is `resnet_explorer.why`; here are
the options. ``--json`` prints one JSON object per run or net, one a line; the default is a
table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import UsageError


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"{what} {text!r} is invalid: give whole numbers separated by commas, e.g. 1,2,4,8") from None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _arch(name: str, width: int | None):
    """A named net (``width`` applied) or a spec read from a JSON file."""
    from .spec import ArchSpec
    from .zoo import get_spec

    if not name.endswith(".json"):
        return get_spec(name, **({"width": width} if width else {}))
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"spec file {name} not found: give a name (cifar-resnet56 …) or a spec JSON file")
    if width:
        raise UsageError(f"--width applies to named nets; {name} sets its own stage widths")
    return ArchSpec.from_json(path.read_text()).validate()


def _emit(results: list[dict], as_json: bool, table) -> None:
    for r in results:
        print(json.dumps(r) if as_json else table(r), flush=True)
        if not as_json and len(results) > 1:
            print()


def cmd_lesion(args: argparse.Namespace) -> int:
    from .why.lesion import lesion, lesion_table
    from .why.sources import open_nets

    counts, blocks = _ints(args.counts, "--counts"), _names(args.blocks)
    nets, images = open_nets(args.runs, args.data, args.images)
    _emit([lesion(n, images=images, blocks=blocks, counts=counts, draws=args.draws, seed=args.seed) for n in nets],
          args.json, lesion_table)
    return 0


def cmd_gradients(args: argparse.Namespace) -> int:
    from .why.gradients import by_depth, gradients, gradients_table

    if args.depths:
        result = by_depth(_ints(args.depths, "--depths"), args.width or 8, args.seeds, args.points, args.span,
                          args.input)
        if args.json:
            print(json.dumps(result))
        else:
            print("depth   plain  residual   (gradient correlation at initialisation)")
            for d, p, r in zip(result["depths"], result["plain"], result["residual"]):
                print(f"{d:>5}  {p:6.3f}  {r:8.3f}")
        return 0
    if not args.arch:
        raise UsageError("give the nets with --arch (e.g. --arch cifar-plain56 --arch cifar-resnet56), or --depths")
    results = gradients([_arch(a, args.width) for a in args.arch], None, args.seeds, args.points, args.span, args.input)
    if args.json:
        _emit(results, True, None)
    else:
        print(gradients_table(results))
    return 0


def cmd_landscape(args: argparse.Namespace) -> int:
    from .why.landscape import check_span, landscape, landscape_table
    from .why.sources import open_nets

    check_span(args.span, args.grid, args.directions)  # before any net is loaded
    nets, images = open_nets(args.runs, args.data, args.images)
    _emit([landscape(n, images=images, span=args.span, grid=args.grid, directions=args.directions,
                     surface=not args.no_surface, seed=args.seed, n_images=args.images) for n in nets],
          args.json, landscape_table)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``why`` and its three studies on the main parser's subcommands."""
    from .why.gradients import POINTS, SEEDS, SPAN as LINE
    from .why.landscape import DIRECTIONS, GRID, IMAGES as LAND_IMAGES, SPAN
    from .why.lesion import DRAWS
    from .why.sources import IMAGES

    why = sub.add_parser("why", help="why shortcuts help: lesion, shattered gradients, loss landscapes")
    studies = why.add_subparsers(dest="study", required=True, parser_class=type(why))

    le = studies.add_parser("lesion", help="delete blocks of trained nets and measure their error (Veit et al. 2016)")
    le.add_argument("runs", nargs="+", metavar="RUN_OR_CKPT", help="run directories or .pt checkpoints")
    le.add_argument("--data", help="the dataset (default: the one the runs trained on; needed for a checkpoint)")
    le.add_argument("--images", type=int, default=IMAGES, help=f"training and test images measured (default {IMAGES})")
    le.add_argument("--blocks", help="only these blocks, e.g. conv2_x.1,conv3_x.0 (default: every deletable one)")
    le.add_argument("--counts", help="numbers of blocks deleted at random (default 1,2,3,4,6,8,10,12)")
    le.add_argument("--draws", type=int, default=DRAWS, help=f"random draws per number (default {DRAWS}; 0: none)")
    le.add_argument("--seed", type=int, default=0, help="the random draws' seed")
    le.add_argument("--json", action="store_true", help="one JSON object per run, one a line")
    le.set_defaults(func=cmd_lesion)

    gr = studies.add_parser("gradients", help="shattered gradients at initialisation (Balduzzi et al. 2017)")
    gr.add_argument("--arch", action="append", help="a net name (cifar-resnet56 …) or spec .json; repeat for more")
    gr.add_argument("--width", type=int, help="first stage's width (CIFAR: 16; the CPU demo: 8)")
    gr.add_argument("--input", type=int, help="input image side (default: the net's own)")
    gr.add_argument("--seeds", type=int, default=SEEDS, help=f"initialisations per net (default {SEEDS})")
    gr.add_argument("--points", type=int, default=POINTS, help=f"inputs on the line (default {POINTS})")
    gr.add_argument("--span", type=float, default=LINE, help=f"the line's half-length in units of u (default {LINE:g})")
    gr.add_argument("--depths", help="instead of --arch: plain and residual CIFAR nets of these depths, e.g. 20,56,110")
    gr.add_argument("--json", action="store_true", help="one JSON object per net, one a line")
    gr.set_defaults(func=cmd_gradients)

    la = studies.add_parser("landscape", help="filter-normalised loss slices around trained weights (Li et al. 2018)")
    la.add_argument("runs", nargs="+", metavar="RUN_OR_CKPT", help="run directories or .pt checkpoints")
    la.add_argument("--data", help="the dataset (default: the one the runs trained on; needed for a checkpoint)")
    la.add_argument("--span", type=float, default=SPAN, help=f"largest step α, a fraction of each filter's norm (default {SPAN:g})")
    la.add_argument("--grid", type=int, default=GRID, help=f"points per axis, odd (default {GRID})")
    la.add_argument("--directions", type=int, default=DIRECTIONS, help=f"random directions of the 1-D slices (default {DIRECTIONS})")
    la.add_argument("--no-surface", action="store_true", help="the 1-D slices only, no 2-D surface")
    la.add_argument("--images", type=int, default=LAND_IMAGES, help=f"training images the loss is measured on (default {LAND_IMAGES})")
    la.add_argument("--seed", type=int, default=0, help="the directions' seed")
    la.add_argument("--json", action="store_true", help="one JSON object per run, one a line")
    la.set_defaults(func=cmd_landscape)
