"""``resnet-explorer train | eval | experiment | demo``: training commands (`cli.make_parser`
registers them). The work is `train.train`, `evaluate.evaluate_paths` and
`experiments.run_experiment`; here are the options, turned into library objects by `cli_options`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .cli_options import (
    add_arch_options,
    add_device_options,
    add_loader_option,
    add_recipe_options,
    int_list,
    parse_sets,
    recipe_from_args,
    run_options,
    spec_from_args,
)
from .errors import UsageError
from .zoo import FIG6_DEPTHS


def _resumed_recipe(args: argparse.Namespace):
    """On ``--resume``: the recipe that ``--recipe``/``--iters``/``--set`` ask for, built on
    the run's own (so that `train` can say what differs); None when none of them is given."""
    from .runs import RunDir

    run = RunDir(args.out)
    if not (args.recipe or args.iters is not None or args.set) or not run.is_run():
        return None
    saved = run.config().recipe
    if args.recipe and args.recipe != saved.name:
        return recipe_from_args(args, args.recipe)
    sets = parse_sets(args.set)
    return saved.override(**{"iters": args.iters, **sets})


def _check_resumed_arch(args: argparse.Namespace) -> None:
    """On ``--resume`` without ``--arch``: the architecture options given must be the run's own
    (the run continues its recorded net; an option that differs is one line, not ignored)."""
    from .runs import RunDir

    asked = {"--plain": args.plain or None, "--shortcut": args.shortcut, "--stride-at": args.stride_at,
             "--width": args.width}
    if all(v is None for v in asked.values()) or not RunDir(args.out).is_run():
        return None
    saved = RunDir(args.out).config().spec
    own = {"--plain": True if not saved.residual else None, "--shortcut": saved.shortcut,
           "--stride-at": saved.stride_at, "--width": saved.stages[0].out_channels}
    differs = [f"{k} {'' if v is True else v}".strip() + f" (the run's: {own[k] if own[k] is not None else 'residual'})"
               for k, v in asked.items() if v is not None and v != own[k]]
    if differs:
        raise UsageError(f"{args.out} trains {saved.name}, not what {', '.join(differs)} asks: resume with the "
                         "run's own settings (leave those options out), or start a new run in another --out")
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import launch_env
    from .train import train

    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        spec = spec_from_args(args.arch, args) if args.arch else _check_resumed_arch(args)
        recipe = _resumed_recipe(args)
    else:
        if not args.arch or not args.data:
            raise UsageError("a new run needs --arch and --data (e.g. --arch cifar-resnet20 --data synthetic)")
        spec = spec_from_args(args.arch, args)
        recipe = recipe_from_args(args, "cifar-paper")
    out = args.out or f"runs/{spec.name}-{recipe.name}"
    result = train(spec, args.data, recipe, out, options=run_options(args), resume=args.resume, seed=args.seed)
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

    scales = int_list(args.scales, "--scales", example="224,256,384,480,640")
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


def _run_experiment_and_report(args: argparse.Namespace, name: str, plans: list, notes: list[str],
                               why: bool = False) -> int:
    from .distributed import launch_env
    from .experiments import experiment_runs, run_experiment
    from .report import degradation_summary, gates_text, summary_text, write_report
    from .runs import load_runs

    if launch_env().enabled:
        raise UsageError(f"{name} runs in one process, not under torchrun: train one of its nets on "
                         "several processes with resnet-explorer train (see docs/distributed.md)")
    exp_dir = run_experiment(name, plans, args.data, args.out, run_options(args), seed=args.seed or 0,
                             jobs=getattr(args, "jobs", 1), log=lambda m: print(m, flush=True))
    print()
    done = experiment_runs(exp_dir)
    print("\n\n".join(filter(None, [summary_text(degradation_summary(done)), gates_text(load_runs(done))])))
    report = write_report(exp_dir, notes=notes, why=why)
    print(f"\nreport: {report}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from .plans import EXPERIMENTS, degradation, load_plans, parse_kinds, preact, shortcuts

    if not args.data:
        raise UsageError("an experiment needs --data (synthetic, cifar10:DIR, folder:DIR)")
    recipe = recipe_from_args(args, "cifar-paper")
    width = args.width or 16
    if args.name == "degradation":
        plans = degradation(int_list(args.depths, "--depths") or FIG6_DEPTHS, recipe, width)
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
    from .data.cpus import available_cpus
    from .plans import CPU_DEMO_DATA, CPU_DEMO_WIDTH, degradation
    from .report import cpu_demo_note, data_notes

    gpu = pick_device(args.device).type == "cuda"
    depths = int_list(args.depths, "--depths") or [20, 56]
    if gpu:
        recipe = recipe_from_args(args, "cifar-paper")
        width = args.width or 16
        args.data = args.data or "synthetic"
        args.jobs = args.jobs or 1
        notes = [f"the paper's recipe ({recipe.name}): {recipe.max_iters} iterations of batch "
                 f"{recipe.batch_size}, nets {width} wide"]
        args.compile = args.compile if args.compile != "off" else "reduce-overhead"
    else:
        recipe = recipe_from_args(args, "cpu-demo")
        width = args.width or CPU_DEMO_WIDTH
        # the demo's nets are small enough that one core each beats two cores per net in turn
        args.jobs = args.jobs or (2 if available_cpus() >= 2 else 1)
        args.data = args.data or CPU_DEMO_DATA
        notes = [cpu_demo_note(recipe, width)]
    notes += data_notes(args.data)
    args.out = args.out or "runs/demo"
    print(f"resnet-explorer demo: plain and residual nets of depth {', '.join(map(str, depths))} on "
          f"{args.data}, {recipe.max_iters} iterations each -> {args.out}", flush=True)
    return _run_experiment_and_report(args, "degradation", degradation(depths, recipe, width), notes, why=True)


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``train``: one run into a run directory (alone or under torchrun)."""
    tr = sub.add_parser(
        "train", help="train a network (a run directory, resumable)",
        description="Train a network into a run directory. The same command runs data-parallel on "
                    "several GPUs or machines under torchrun, e.g. torchrun --nproc_per_node=4 "
                    "--no-python resnet-explorer train ... (the recipe's batch is split across the "
                    "processes; see docs/distributed.md).")
    tr.add_argument("--arch", help="a net name (cifar-resnet56 …) or a spec .json file")
    add_arch_options(tr)
    tr.add_argument("--data", help="synthetic | cifar10:DIR | folder:DIR | imagenet:DIR")
    add_recipe_options(tr, None)
    tr.add_argument("--out", help="run directory (default runs/ARCH-RECIPE)")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in --out (its own recipe, data and seed: options given must match)")
    add_device_options(tr)
    add_loader_option(tr)
    tr.add_argument("--sync-bn", action="store_true",
                    help="under torchrun on GPUs: BatchNorm statistics over the whole global batch")
    tr.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                    help="under torchrun: the torch.distributed backend (auto: nccl on GPUs, gloo on CPUs)")
    tr.set_defaults(func=cmd_train, input=None, classes=None)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    """``eval``: runs or checkpoints on a test set (several: an ensemble)."""
    ev = sub.add_parser("eval", help="test error of runs or checkpoints (several: an ensemble)")
    ev.add_argument("runs", nargs="+", metavar="RUN_OR_CKPT", help="run directories or .pt checkpoints")
    ev.add_argument("--data", help="the dataset (default: the one the first run trained on)")
    ev.add_argument("--ten-crop", action="store_true", help="ImageNet 10-crop testing")
    ev.add_argument("--scales", help="ImageNet multi-scale testing, e.g. 224,256,384,480,640")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--batch-size", type=int, default=500)
    ev.add_argument("--workers", type=int, help="ImageNet decoding processes (default: the CPUs, at most 8)")
    add_loader_option(ev)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)


def _add_experiments(sub: argparse._SubParsersAction) -> None:
    """``experiment`` and ``demo``: sets of runs, trained and reported."""
    def experiment_options(p: argparse.ArgumentParser) -> None:
        add_recipe_options(p, None)
        p.add_argument("--width", type=int, help="first stage's width (the paper: 16)")
        p.add_argument("--depths", help="depths, e.g. 20,32,44,56")
        p.add_argument("--out", help="the experiment's directory")
        add_device_options(p)

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register train, eval, experiment and demo."""
    _add_train(sub)
    _add_eval(sub)
    _add_experiments(sub)
