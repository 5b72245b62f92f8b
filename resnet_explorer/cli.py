"""The ``resnet-explorer`` command line: info, tables, train, eval, experiment, demo (and, from
`cli_grading`, assign and grade; from `cli_notebooks`, notebooks, lab, assignment new).

Each command is a small function over the library. Bad input raises a `UserError`, which
`main` prints as one line (exit 2). The library behind the training commands is imported
when a command needs it, so ``info`` and ``tables`` start without loading PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys

from .cli_options import OneLineParser, add_arch_options, spec_from_args
from .count import count
from .errors import UsageError, UserError
from .tables import beyond, format_info, table1, table6


# -- the commands ---------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    spec = spec_from_args(args.arch, args)
    c = count(spec)
    from . import crosscheck as X  # (imports PyTorch only when --check or --summary builds the model)

    checked = X.check_count(spec) if args.check else None
    if args.json:
        extra = {"fvcore_macs": checked.fvcore, "fvcore_agrees": checked.agrees} if checked else {}
        print(json.dumps({**c.to_dict(layers=args.layers), "spec": spec.to_dict(), **extra}, indent=2))
    else:
        print(X.summary(spec) if args.summary else format_info(c, spec, layers=args.layers))
        print(checked.line() if checked else "", end="\n" if checked else "")
    return 1 if checked and checked.agrees is False else 0


def cmd_tables(args: argparse.Namespace) -> int:
    print(table1())
    print()
    print(table6())
    print(f"\n{beyond()}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    """``info``: a net's parameters and multiply-adds."""
    info = sub.add_parser("info", help="parameters and multiply-adds of a network")
    info.add_argument("arch", help="resnet18…152, plain18…152, cifar-resnetD, cifar-plainD, "
                      "vgg-a…vgg-e, vgg11…vgg19, alexnet, or a spec .json file")
    add_arch_options(info)
    info.add_argument("--input", type=int, help="input size (default: the net's own)")
    info.add_argument("--classes", type=int, help="number of classes")
    info.add_argument("--layers", action="store_true", help="one row per layer")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--summary", action="store_true", help="torchinfo's summary of the built model instead")
    info.add_argument("--check", action="store_true", help="fvcore's traced multiply-adds beside ours (exit 1: differ)")
    info.set_defaults(func=cmd_info)


def make_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="resnet-explorer",
        description="Build, count, train and see the deep residual networks of He et al. 2015.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    from . import cli_grading, cli_notebooks, cli_train, cli_why

    _add_info(sub)
    cli_train.add_commands(sub)  # train, eval, experiment, demo
    tables = sub.add_parser("tables", help="Tables 1 and 6, highway and pre-activation nets: ours vs published")
    tables.set_defaults(func=cmd_tables)
    cli_grading.add_commands(sub)  # assign, grade
    cli_notebooks.add_commands(sub)  # notebooks, lab, assignment new (the packaged notebooks)
    cli_why.add_commands(sub)  # why lesion | gradients | landscape
    return p


def _rank_prefix() -> str:
    """``"rank R: "`` in a process of a torchrun job with several processes, else ``""``."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return f"rank {rank}: " if world.isdigit() and int(world) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if isinstance(getattr(args, "out", None), str) and not args.out.strip():
            raise UsageError("--out '' names no folder: give a path, or leave --out out for the default")
        return args.func(args)
    except UserError as e:
        print(f"resnet-explorer: error: {_rank_prefix()}{e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (``| head``): one line, not a traceback
        with contextlib.suppress(OSError):  # and no second complaint when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("resnet-explorer: error: the output was cut short (its reader, e.g. head, stopped reading); "
              "nothing else went wrong", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnet-explorer: interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The ``resnet-explorer`` command: `main`, then no more SIGINT while the process ends (a
    second Ctrl-C landing in an exit hook, torch's or Python's, would print a traceback under
    the one-line message)."""
    try:
        code = main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's line was being printed
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(console())
