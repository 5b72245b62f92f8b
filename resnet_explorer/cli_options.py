"""The command line's shared options: what each means, and the argparse pieces that add them.

`cli` and `cli_train` (and the other command modules) build their parsers from these, so an
option is spelled, documented and turned into library objects (an `ArchSpec`, a `Recipe`, a
`RunOptions`) in one place.
"""

from __future__ import annotations

import argparse

from .errors import SpecError, UsageError
from .options import RunOptions
from .safeio import UnsafeFile, parse_json, read_record
from .spec import ArchSpec
from .zoo import get_spec


def spec_from_args(arch: str, args: argparse.Namespace) -> ArchSpec:
    """A named net with the command line's overrides, or a spec read from a JSON file."""
    overrides = {
        "residual": False if getattr(args, "plain", False) else None,
        "shortcut": getattr(args, "shortcut", None),
        "stride_at": getattr(args, "stride_at", None),
        "input_size": getattr(args, "input", None),
        "num_classes": getattr(args, "classes", None),
        "width": getattr(args, "width", None),
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if arch.endswith(".json"):
        try:
            spec = ArchSpec.from_dict(read_record(arch))
        except FileNotFoundError:
            raise SpecError(f"spec file {arch} not found: give a name (resnet50 …) or a spec JSON file") from None
        except (OSError, UnsafeFile) as e:
            raise SpecError(f"spec file {arch} cannot be used ({getattr(e, 'strerror', None) or e}): "
                            "give a spec JSON file (resnet-explorer info NAME --json writes one)") from None
        unknown = sorted(set(overrides) - {"residual", "shortcut", "stride_at", "input_size", "num_classes"})
        if unknown:
            raise SpecError(f"--{unknown[0]} applies to a named net, not a spec file: edit {arch} instead")
        return spec.replace(**overrides).validate() if overrides else spec.validate()
    return get_spec(arch, **overrides)


def parse_sets(pairs: list[str]) -> dict:
    """``--set lr=0.05 --set milestones=[100,150]``: recipe fields, values as JSON (or text)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set {pair!r} is invalid: use --set FIELD=VALUE (e.g. --set lr=0.05)")
        try:
            out[key.strip()] = parse_json(value, allow_nan=True)  # the recipe says why NaN is no lr
        except UnsafeFile:
            out[key.strip()] = value
    return out


def recipe_from_args(args: argparse.Namespace, default: str, **defaults):
    """``--recipe`` (or ``default``) with ``defaults``, then ``--set`` and ``--iters`` on top."""
    from .recipes import get_recipe

    overrides = {**defaults, **parse_sets(args.set)}
    if args.iters is not None:
        overrides["iters"] = args.iters
    return get_recipe(args.recipe or default, **overrides)


def int_list(text: str | None, what: str, example: str = "20,56") -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} {text!r} is invalid: use numbers separated by commas, e.g. {example}") from None


def run_options(args: argparse.Namespace) -> RunOptions:
    """How every training command runs (`options.RunOptions`), from its device options."""
    return RunOptions(device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                      workers=args.workers, progress=not args.quiet, loader=getattr(args, "loader", "auto"),
                      sync_bn=getattr(args, "sync_bn", False), dist_backend=getattr(args, "dist_backend", "auto"))


# -- the argparse pieces -------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_arch_options(p: argparse.ArgumentParser) -> None:
    """The options that change a named net: plain twin, shortcut, stride placement, width."""
    p.add_argument("--plain", action="store_true", help="the plain twin (no shortcuts)")
    p.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option")
    p.add_argument("--stride-at", choices=["1x1", "3x3"], help="bottleneck stride placement")
    p.add_argument("--width", type=int, help="first stage's width (CIFAR: 16, ImageNet: 64); others scale")


def add_recipe_options(p: argparse.ArgumentParser, default: str | None) -> None:
    """A recipe by name, shortened or lengthened, with fields overridden."""
    p.add_argument("--recipe", default=default,
                   help="cifar-paper (default), imagenet-paper, cifar-short, cpu-demo, cpu-short, test")
    p.add_argument("--iters", type=int, help="iterations (the lr milestones scale with it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a recipe field, e.g. --set lr=0.05 --set batch_size=64")


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where and how to train: device, the GPU helpers, seed, progress, loader processes."""
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision (auto: bf16 on a GPU, off on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on; faster on GPUs and CPUs alike)")
    p.add_argument("--compile", nargs="?", const="default", default="off", metavar="MODE",
                   help="torch.compile the model; MODE: default, reduce-overhead (CUDA graphs), max-autotune, "
                        "step (the whole SGD step in one graph: one CUDA graph an iteration on a GPU)")
    p.add_argument("--seed", type=int, help="the run's seed (default 0; on --resume, the run's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, help="ImageNet loader processes per GPU (default: the CPUs "
                   "shared among this node's processes, at most 8)")


def add_loader_option(p: argparse.ArgumentParser) -> None:
    """ImageNet's input path: decoded on the CPU or on the GPU."""
    p.add_argument("--loader", default="auto", choices=["auto", "cpu", "gpu"],
                   help="ImageNet input: cpu (PIL in worker processes), gpu (JPEGs decoded and augmented "
                   "on the GPU), auto (gpu on CUDA)")
