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
import sys
from pathlib import Path

from .count import count
from .errors import SpecError, UsageError, UserError
from .spec import ArchSpec
from .tables import beyond, format_info, table1, table6
from .zoo import FIG6_DEPTHS, get_spec


# -- what the options mean ------------------------------------------------------------------------
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
        path = Path(arch)
        if not path.is_file():
            raise SpecError(f"spec file {arch} not found: give a name (resnet50 …) or a spec JSON file")
        spec = ArchSpec.from_json(path.read_text())
        return spec.replace(**overrides).validate() if overrides else spec.validate()
    return get_spec(arch, **overrides)


def _parse_sets(pairs: list[str]) -> dict:
    """``--set lr=0.05 --set milestones=[100,150]``: recipe fields, values as JSON (or text)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set {pair!r} is invalid: use --set FIELD=VALUE (e.g. --set lr=0.05)")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _recipe_from_args(args: argparse.Namespace, default: str, **defaults):
    """``--recipe`` (or ``default``) with ``defaults``, then ``--set`` and ``--iters`` on top."""
    from .recipes import get_recipe

    overrides = {**defaults, **_parse_sets(args.set)}
    if args.iters is not None:
        overrides["iters"] = args.iters
    return get_recipe(args.recipe or default, **overrides)


def _ints(text: str | None, what: str, example: str = "20,56") -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} {text!r} is invalid: use numbers separated by commas, e.g. {example}") from None


def _device_kwargs(args: argparse.Namespace) -> dict:
    """The options every training command passes on to `train` / `run_experiment`."""
    return dict(device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
                seed=args.seed, progress=not args.quiet, workers=args.workers)


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


def _resumed_recipe(args: argparse.Namespace):
    """On ``--resume``: the recipe that ``--recipe``/``--iters``/``--set`` ask for, built on
    the run's own (so that `train` can say what differs); None when none of them is given."""
    import dataclasses

    from .recipes import RecipeError
    from .runs import is_run, load_run_config

    if not (args.recipe or args.iters is not None or args.set) or not is_run(args.out):
        return None
    saved = load_run_config(args.out)[1]
    if args.recipe and args.recipe != saved.name:
        return _recipe_from_args(args, args.recipe)
    sets = _parse_sets(args.set)
    iters = sets.pop("iters", args.iters)
    recipe = saved.with_iters(iters) if iters is not None else saved
    try:
        return dataclasses.replace(recipe, **sets).validate()
    except TypeError:
        fields = sorted(f.name for f in dataclasses.fields(recipe))
        raise RecipeError(f"recipe has no field(s) {', '.join(sorted(set(sets) - set(fields)))}: "
                          f"use {', '.join(fields)}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import launch_env
    from .train import train

    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        spec = spec_from_args(args.arch, args) if args.arch else None
        recipe = _resumed_recipe(args)
    else:
        if not args.arch or not args.data:
            raise UsageError("a new run needs --arch and --data (e.g. --arch cifar-resnet20 --data synthetic)")
        spec = spec_from_args(args.arch, args)
        recipe = _recipe_from_args(args, "cifar-paper")
    out = args.out or f"runs/{spec.name}-{recipe.name}"
    result = train(spec, args.data, recipe, out, resume=args.resume, sync_bn=args.sync_bn,
                   dist_backend=args.dist_backend, loader=args.loader, **_device_kwargs(args))
    if not launch_env().is_main:
        return 0  # under torchrun, rank 0 alone reports
    ev = result.last_eval or {}
    summary = f"{result.run_dir}: {result.iteration} iterations"
    if isinstance(ev.get("error"), float):  # (a resumed finished run's comes from its checkpoint)
        summary += f", test error {ev['error']:.2%}"
        if isinstance(ev.get("top5_error"), float):
            summary += f", top-5 {ev['top5_error']:.2%}"
    print(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_paths

    scales = _ints(args.scales, "--scales", example="224,256,384,480,640")
    result = evaluate_paths(args.runs, args.data, ten_crop=args.ten_crop, scales=scales,
                            device=args.device, batch_size=args.batch_size, workers=args.workers,
                            loader=args.loader)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['data']}: {result['images']} images, {result['views']}")
    rows = result["models"] + ([{"path": "ensemble (averaged softmax)", **result["ensemble"]}]
                               if "ensemble" in result else [])
    for r in rows:
        top5 = f"  top-5 error {r['top5_error']:.2%}" if "top5_error" in r else ""
        print(f"  {r['path']}: top-1 error {r['error']:.2%}{top5}  loss {r['loss']:.4f}")
    return 0


def _run_experiment_and_report(args: argparse.Namespace, name: str, plans: list, notes: list[str]) -> int:
    from .distributed import launch_env
    from .experiments import run_experiment
    from .report import degradation_summary, gates_text, summary_text, write_report
    from .runs import experiment_runs, load_runs

    if launch_env().enabled:
        raise UsageError(f"{name} runs in one process, not under torchrun: train one of its nets on "
                         "several processes with resnet-explorer train (see docs/distributed.md)")
    options = {**_device_kwargs(args), "seed": args.seed or 0, "jobs": getattr(args, "jobs", 1)}
    exp_dir = run_experiment(name, plans, args.data, args.out, log=lambda m: print(m, flush=True), **options)
    print()
    done = experiment_runs(exp_dir)
    print("\n\n".join(filter(None, [summary_text(degradation_summary(done)), gates_text(load_runs(done))])))
    report = write_report(exp_dir, notes=notes)
    print(f"\nreport: {report}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import EXPERIMENTS, degradation, load_plans, parse_kinds, preact, shortcuts

    if not args.data:
        raise UsageError("an experiment needs --data (synthetic, cifar10:DIR, folder:DIR)")
    recipe = _recipe_from_args(args, "cifar-paper")
    width = args.width or 16
    if args.name == "degradation":
        plans = degradation(_ints(args.depths, "--depths") or FIG6_DEPTHS, recipe, width)
    elif args.name == "shortcuts":
        plans = shortcuts(args.depth, recipe, width, parse_kinds(args.kinds))
    elif args.name == "preact":
        plans = preact(args.depth, recipe, width)
    elif args.name.endswith(".json"):
        plans = load_plans(args.name)
    else:
        raise UsageError(f"unknown experiment {args.name!r}: use {', '.join(EXPERIMENTS)} or a .json file")
    args.out = args.out or f"runs/{Path(args.name).stem}"
    notes = [f"recipe {recipe.name}: {recipe.max_iters} iterations, batch {recipe.batch_size}, width {width}"]
    return _run_experiment_and_report(args, Path(args.name).stem, plans, notes)


def cmd_demo(args: argparse.Namespace) -> int:
    from .devices import pick_device
    from .data.cpus import available_cpus as _cpu_count
    from .experiments import CPU_DEMO_DATA, CPU_DEMO_WIDTH, cpu_demo_note, data_notes, degradation

    gpu = pick_device(args.device).type == "cuda"
    depths = _ints(args.depths, "--depths") or [20, 56]
    if gpu:
        recipe = _recipe_from_args(args, "cifar-paper")
        width = args.width or 16
        args.data = args.data or "synthetic"
        args.jobs = args.jobs or 1
        notes = [f"the paper's recipe ({recipe.name}): {recipe.max_iters} iterations of batch "
                 f"{recipe.batch_size}, nets {width} wide"]
        args.compile = args.compile if args.compile != "off" else "reduce-overhead"
    else:
        recipe = _recipe_from_args(args, "cpu-demo")
        width = args.width or CPU_DEMO_WIDTH
        # the demo's nets are small enough that one core each beats two cores per net in turn
        args.jobs = args.jobs or (2 if _cpu_count() >= 2 else 1)
        args.data = args.data or CPU_DEMO_DATA
        notes = [cpu_demo_note(recipe, width)]
    notes += data_notes(args.data)
    args.out = args.out or "runs/demo"
    print(f"resnet-explorer demo: plain and residual nets of depth {', '.join(map(str, depths))} on "
          f"{args.data}, {recipe.max_iters} iterations each -> {args.out}", flush=True)
    return _run_experiment_and_report(args, "degradation", degradation(depths, recipe, width), notes)


# -- the parser -------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line, not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arch_options(p: argparse.ArgumentParser) -> None:
    """The options that change a named net: plain twin, shortcut, stride placement, width."""
    p.add_argument("--plain", action="store_true", help="the plain twin (no shortcuts)")
    p.add_argument("--shortcut", choices=["A", "B", "C"], help="shortcut option")
    p.add_argument("--stride-at", choices=["1x1", "3x3"], help="bottleneck stride placement")
    p.add_argument("--width", type=int, help="first stage's width (CIFAR: 16, ImageNet: 64); others scale")


def _recipe_options(p: argparse.ArgumentParser, default: str | None) -> None:
    """A recipe by name, shortened or lengthened, with fields overridden."""
    p.add_argument("--recipe", default=default,
                   help="cifar-paper (default), imagenet-paper, cifar-short, cpu-demo, cpu-short, test")
    p.add_argument("--iters", type=int, help="iterations (the lr milestones scale with it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a recipe field, e.g. --set lr=0.05 --set batch_size=64")


def _device_options(p: argparse.ArgumentParser) -> None:
    """Where and how to train: device, the GPU helpers, seed, progress, loader processes."""
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision (auto: bf16 on a GPU, off on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on; faster on GPUs and CPUs alike)")
    p.add_argument("--compile", nargs="?", const="default", default="off", metavar="MODE",
                   help="torch.compile the model; MODE: default, reduce-overhead (CUDA graphs), max-autotune")
    p.add_argument("--seed", type=int, help="the run's seed (default 0; on --resume, the run's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, help="ImageNet loader processes per GPU (default: the CPUs "
                   "shared among this node's processes, at most 8)")


def _loader_option(p: argparse.ArgumentParser) -> None:
    """ImageNet's input path (issue: decoding off the CPU)."""
    p.add_argument("--loader", default="auto", choices=["auto", "cpu", "gpu"],
                   help="ImageNet input: cpu (PIL in worker processes), gpu (JPEGs decoded and augmented "
                   "on the GPU), auto (gpu on CUDA)")


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="resnet-explorer",
        description="Build, count, train and see the deep residual networks of He et al. 2015.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = sub.add_parser("info", help="parameters and multiply-adds of a network")
    info.add_argument("arch", help="resnet18…152, plain18…152, cifar-resnetD, cifar-plainD, "
                      "vgg-a…vgg-e, vgg11…vgg19, alexnet, or a spec .json file")
    _arch_options(info)
    info.add_argument("--input", type=int, help="input size (default: the net's own)")
    info.add_argument("--classes", type=int, help="number of classes")
    info.add_argument("--layers", action="store_true", help="one row per layer")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--summary", action="store_true", help="torchinfo's summary of the built model instead")
    info.add_argument("--check", action="store_true", help="fvcore's traced multiply-adds beside ours (exit 1: differ)")
    info.set_defaults(func=cmd_info)

    tr = sub.add_parser(
        "train", help="train a network (a run directory, resumable)",
        description="Train a network into a run directory. The same command runs data-parallel on "
                    "several GPUs or machines under torchrun, e.g. torchrun --nproc_per_node=4 "
                    "--no-python resnet-explorer train ... (the recipe's batch is split across the "
                    "processes; see docs/distributed.md).")
    tr.add_argument("--arch", help="a net name (cifar-resnet56 …) or a spec .json file")
    _arch_options(tr)
    tr.add_argument("--data", help="synthetic | cifar10:DIR | folder:DIR | imagenet:DIR")
    _recipe_options(tr, None)
    tr.add_argument("--out", help="run directory (default runs/ARCH-RECIPE)")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out (its own recipe, data and seed: options given must match)")
    _device_options(tr)
    _loader_option(tr)
    tr.add_argument("--sync-bn", action="store_true",
                    help="under torchrun on GPUs: BatchNorm statistics over the whole global batch")
    tr.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                    help="under torchrun: the torch.distributed backend (auto: nccl on GPUs, gloo on CPUs)")
    tr.set_defaults(func=cmd_train, input=None, classes=None)

    ev = sub.add_parser("eval", help="test error of runs or checkpoints (several: an ensemble)")
    ev.add_argument("runs", nargs="+", metavar="RUN_OR_CKPT", help="run directories or .pt checkpoints")
    ev.add_argument("--data", help="the dataset (default: the one the first run trained on)")
    ev.add_argument("--ten-crop", action="store_true", help="ImageNet 10-crop testing")
    ev.add_argument("--scales", help="ImageNet multi-scale testing, e.g. 224,256,384,480,640")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--workers", type=int, help="ImageNet decoding processes (default: the CPUs, at most 8)")
    _loader_option(ev)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    def experiment_options(p: argparse.ArgumentParser) -> None:
        _recipe_options(p, None)
        p.add_argument("--width", type=int, help="first stage's width (the paper: 16)")
        p.add_argument("--depths", help="depths, e.g. 20,32,44,56")
        p.add_argument("--out", help="the experiment's directory")
        _device_options(p)

    exp = sub.add_parser("experiment", help="a named set of runs (degradation, shortcuts, preact, or a .json)")
    exp.add_argument("name", help="degradation, shortcuts (plain, A, B, C, gated), preact (post vs pre), or a .json")
    exp.add_argument("--data", help="synthetic | cifar10:DIR | folder:DIR")
    exp.add_argument("--depth", type=int, default=20, help="the depth of the shortcuts and preact experiments")
    exp.add_argument("--kinds", help="shortcuts: the residual nets beside plain, e.g. A,gated (default A,B,C,gated)")
    exp.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each, on the same "
                     "device (on a CPU they split its cores); each run's numbers are its solo run's")
    experiment_options(exp)
    exp.set_defaults(func=cmd_experiment)

    demo = sub.add_parser("demo", help="the degradation problem, trained and reported (the main job)")
    demo.add_argument("--data", default=None, help="synthetic-demo (the default on a CPU; synthetic on a GPU) | "
                      "synthetic | cifar10:DIR | folder:DIR")
    demo.add_argument("--jobs", type=int, default=None, help="nets trained at once, one process each (default: "
                      "2 on a CPU with 2 or more cores, each on its share of them; 1 on a GPU)")
    experiment_options(demo)
    demo.set_defaults(func=cmd_demo)

    tables = sub.add_parser("tables", help="Tables 1 and 6, highway and pre-activation nets: ours vs published")
    tables.set_defaults(func=cmd_tables)

    from . import cli_grading, cli_notebooks

    cli_grading.add_commands(sub)  # assign, grade
    cli_notebooks.add_commands(sub)  # notebooks, lab, assignment new (the packaged notebooks)
    return p


def _rank_prefix() -> str:
    """``"rank R: "`` in a process of a torchrun job with several processes, else ``""``."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return f"rank {rank}: " if world.isdigit() and int(world) > 1 else ""


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
