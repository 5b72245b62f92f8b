"""Fig. 1 of the paper side by side: plain and residual nets of two depths, ``--jobs`` at once.

    python benchmarks/cifar_fig1.py --data folder:DIR [--depths 20,56] [--iters 64000] [--jobs 4]
        [--budget SECONDS] [--out DIR] [--device auto] [--compile reduce-overhead]

It runs the ``degradation`` experiment (`experiments.run_experiment` with ``jobs``: one
process per net on the same device) at the paper's recipe, ``cifar-paper`` (``--iters``
shortens it). ``--budget`` sends the experiment a SIGINT after that many seconds, as a
Ctrl-C would: every run checkpoints, and the same command later resumes them. It then
prints one table, also written to ``OUT/fig1.md`` and ``.json``: for each run its
iterations, wall time, iterations/s, the wall time the whole schedule would take at that
speed, its final training and test error and best test error beside Table 6's, and the
three orderings of Fig. 1 / 6 on training error (at the iterations reached). The runs share
the device, so each one's speed is its speed beside the others, not alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def summary(exp: Path, plans: list) -> list[dict]:
    """One row per run from its records (as far as it got)."""
    from resnet_explorer.runs import checkpoint_iteration, read_metrics
    from resnet_explorer.paper import CIFAR10, RESNET, exact_figure

    rows = []
    for p in plans:
        m = read_metrics(exp / p.name) if (exp / p.name).is_dir() else []
        train = [r for r in m if r["kind"] == "train"]
        evals = [r["test_error"] for r in m if r["kind"] == "eval"]
        it = checkpoint_iteration(exp / p.name)  # where it stands (a stopped run: its checkpoint)
        wall = max((r["wall_time"] for r in m if "wall_time" in r), default=None)
        rate = train[-1]["iter"] / train[-1]["wall_time"] if train and train[-1]["wall_time"] > 0 else None
        paper = exact_figure(p.spec, CIFAR10, RESNET)  # Table 6: only for exactly the paper's net
        rows.append({"name": p.name, "residual": p.spec.residual, "depth": p.spec.depth, "iters": it,
                     "planned_iters": p.recipe.max_iters, "wall_s": wall, "iters_per_s": rate,
                     "projected_s": p.recipe.max_iters / rate if rate else None,
                     "train_error": train[-1]["train_error"] if train else None,
                     "test_error": evals[-1] if evals else None, "best_test_error": min(evals) if evals else None,
                     "table6_error": paper.value if paper else None})
    return rows


def orderings(rows: list[dict]) -> list[str]:
    """Fig. 1 / 6 on training error: deeper plain is worse, ResNet beats plain at depth, deeper ResNet is better."""
    by = {(r["residual"], r["depth"]): r["train_error"] for r in rows}
    depths = sorted({r["depth"] for r in rows})
    lo, hi = depths[0], depths[-1]
    claims = [(f"plain-{hi} > plain-{lo}", (False, hi), (False, lo), lambda a, b: a > b),
              (f"resnet-{hi} < plain-{hi}", (True, hi), (False, hi), lambda a, b: a < b),
              (f"resnet-{hi} <= resnet-{lo}", (True, hi), (True, lo), lambda a, b: a <= b)]
    out = []
    for text, a, b, test in claims:
        va, vb = by.get(a), by.get(b)
        verdict = "n/a" if va is None or vb is None else ("holds" if test(va, vb) else "FAILS")
        values = "" if verdict == "n/a" else f" ({100 * va:.2f} vs {100 * vb:.2f} %)"
        out.append(f"- {text}: {verdict}{values}")
    return out


def table(rows: list[dict], head: str) -> str:
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [head, "", "| run | iters | wall s | it/s | full schedule s | train err % | test err % | best test % "
             "| Table 6 % |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        done = f"{r['iters']}" + ("" if r["iters"] >= r["planned_iters"] else f" of {r['planned_iters']}")
        lines.append(f"| {r['name']} | {done} | {f(r['wall_s'], '.1f')} | {f(r['iters_per_s'], '.1f')} | "
                     f"{f(r['projected_s'], '.0f')} | {pct(r['train_error'])} | {pct(r['test_error'])} | "
                     f"{pct(r['best_test_error'])} | {f(r['table6_error'], '.2f')} |")
    return "\n".join(lines + ["", "Orderings of Fig. 1 / 6 on training error (as far as each run got):"]
                     + orderings(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder:DIR (the CIFAR-10 JPEG copy), cifar10:DIR, synthetic")
    p.add_argument("--depths", default="20,56")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--iters", type=int, default=64_000)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--budget", type=float, help="seconds before the experiment is stopped (checkpointed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", help="default reduce-overhead on a GPU, off on a CPU")
    p.add_argument("--out", default="/tmp/cifar-fig1")
    p.add_argument("--tables", help="where fig1.md and .json go (default: --out)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    import torch

    from resnet_explorer.data import load_tensors, parse_data
    from resnet_explorer.errors import TrainingError
    from resnet_explorer.experiments import degradation, run_experiment
    from resnet_explorer.recipes import get_recipe

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    compile = args.compile or ("reduce-overhead" if cuda else "off")
    plans = degradation([int(d) for d in args.depths.split(",")], get_recipe("cifar-paper", iters=args.iters),
                        args.width)
    out = Path(args.out)
    load_tensors(parse_data(args.data))  # decode and cache a folder once, before the jobs share it
    timer = threading.Timer(args.budget or 0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    if args.budget is not None:
        timer.start()
    t = time.perf_counter()
    stopped = None
    try:
        run_experiment("degradation", plans, args.data, out, device=args.device, amp=args.amp, compile=compile,
                       progress=False, log=lambda m: print(m, flush=True), jobs=args.jobs)
    except TrainingError as e:
        stopped = str(e)
        print(f"stopped: {e}", flush=True)
    except KeyboardInterrupt:  # the budget's SIGINT before the jobs started
        stopped = "stopped before the runs started"
    finally:
        timer.cancel()
    rows = summary(out, plans)
    head = (f"Fig. 1 nets ({', '.join(p.name for p in plans)}), cifar-paper {args.iters} iterations, "
            f"--jobs {args.jobs}, {'cuda' if cuda else 'cpu'}, compile {compile}; experiment wall "
            f"{time.perf_counter() - t:.0f} s" + (f"; {stopped}" if stopped else ""))
    text = table(rows, head)
    tables = Path(args.tables or out)
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "fig1.md").write_text(text + "\n")
    (tables / "fig1.json").write_text(json.dumps({"head": head, "runs": rows}, indent=1))
    print("\n" + text)
    return 0 if stopped is None else 1


if __name__ == "__main__":
    sys.exit(main())
