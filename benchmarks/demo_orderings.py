"""Does the CPU demo show Fig. 6's three orderings for every seed, and by how much?

    python benchmarks/demo_orderings.py --seeds 5 [--depths 20,56] [--iters N] [--out DIR] [--first-seed K]
        [--width W] [--data D] [--lr LR] [--batch B] [--milestones M1,M2]

Runs the demo's experiment (`resnet-explorer demo` on a CPU: `experiments.cpu_demo`, the
`cpu-demo` recipe on the `synthetic-demo` data) once per training seed 0..N-1 (the seed
sets the initial weights and the batch order; the dataset stays the same) and prints one
row per seed: each net's final training error (eval-mode pass over a fixed training
subset) and test error, and each ordering's verdict (`verdict`: holds, FAILS, or tie when the
margin is within the measurement's noise); then, per ordering, how many seeds gave each verdict,
its smallest margin across seeds, and the seed-to-seed spread (max - min) of the nets it compares. The same table follows on test error. Runs already in
``--out`` are reused (an experiment directory per seed), so an interrupted benchmark
continues where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


from resnet_explorer.verdict import FAILS, HOLDS, TIE, UNKNOWN

# a seed's verdict: within the measurement's noise (``verdict.decide``) is a tie, not a hold or a failure
SHORT = {HOLDS: "holds", FAILS: "FAILS", TIE: "tie", UNKNOWN: "n/a"}


def _pct(x: float | None) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def table(results: list[dict], key: str, title: str) -> list[str]:
    """The per-seed rows and the per-ordering summary lines for ``key`` (train or test)."""
    names = [r["name"] for r in results[0]["summary"]["runs"]]
    which = "orderings" if key == "final_train_error" else "test_orderings"
    claims = [o["claim"] for o in results[0]["summary"][which]]
    lines = [title, "seed  " + "  ".join(f"{n:>10}" for n in names) + "  " + "  ".join(
        f"ordering {i + 1}" for i in range(len(claims))) + "   time"]
    for r in results:
        by = {x["name"]: x for x in r["summary"]["runs"]}
        cells = [f"{_pct(by[n][key]):>10}" for n in names]
        verdicts = [SHORT[o.get("verdict")].rjust(10) for o in r["summary"][which]]
        lines.append(f"{r['seed']:>4}  " + "  ".join(cells) + "  " + "  ".join(verdicts) + f"  {r['seconds']:5.0f}s")
    for i, claim in enumerate(claims):
        items = [r["summary"][which][i] for r in results]
        margins = [o["margin"] for o in items if o["margin"] is not None]
        counts = {v: sum(o.get("verdict") == v for o in items) for v in (HOLDS, TIE, FAILS)}
        involved = sorted({n for o in items for n in o["values"]})
        spreads = []
        for n in involved:
            values = [o["values"][n] for o in items if n in o["values"]]
            spreads.append(max(values) - min(values))
        spread = max(spreads, default=0.0)
        tally = ", ".join(f"{SHORT[v]} {counts[v]}" for v in (HOLDS, TIE, FAILS))
        lines.append(f"ordering {i + 1}: {claim}: of {len(items)} seeds {tally}; smallest margin "
                     f"{_pct(min(margins) if margins else None).strip()} points; largest seed-to-seed spread "
                     f"of {' / '.join(involved)}: {_pct(spread).strip()} points")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="how many training seeds (default 5: seeds 0..4)")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0): to split the "
                   "seeds over two processes into one --out, then print them all with --seeds N alone")
    p.add_argument("--depths", default="20,56", help="depths of the plain and residual nets (default 20,56)")
    p.add_argument("--iters", type=int, default=None, help="iterations per net (default: the demo's)")
    p.add_argument("--width", type=int, default=None, help="net width (default: the demo's)")
    p.add_argument("--data", default=None, help="--data of the runs (default: the demo's)")
    p.add_argument("--lr", type=float, default=None, help="initial lr (default: the demo's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the demo's)")
    p.add_argument("--milestones", default=None, help="iterations where the lr is divided by 10, e.g. "
                   "1600,1800 (default: the demo's, scaled to --iters)")
    p.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    p.add_argument("--jobs", type=int, default=2, help="nets trained at once, one process each (default 2, "
                   "as the demo on a CPU)")
    args = p.parse_args(argv)

    import torch

    from resnet_explorer.cli_options import int_list
    from resnet_explorer.errors import UserError
    from resnet_explorer.experiments import experiment_runs, run_experiment
    from resnet_explorer.plans import CPU_DEMO_WIDTH, cpu_demo
    from resnet_explorer.report import degradation_summary

    try:
        given = {"lr": args.lr, "batch_size": args.batch,
                 "milestones": int_list(args.milestones, "--milestones", example="1600,1800")}
        overrides = {k: v for k, v in given.items() if v is not None}
        plans, data = cpu_demo(int_list(args.depths, "--depths") or [20, 56], iters=args.iters, width=args.width, **overrides)
    except UserError as e:
        print(f"demo_orderings.py: {e}", file=sys.stderr)
        return 2
    data = args.data or data
    recipe = plans[0].recipe
    print(f"demo experiment: {', '.join(p.name for p in plans)} on {data}, {recipe.max_iters} iterations of "
          f"batch {recipe.batch_size}, lr {recipe.lr} /10 at {recipe.milestones}, width {args.width or CPU_DEMO_WIDTH}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t = time.perf_counter()
            exp = run_experiment(f"demo-seed{seed}", plans, data, root / f"seed{seed}", device="cpu",
                                 seed=seed, progress=False, log=lambda m: None, jobs=args.jobs)
            results.append({"seed": seed, "seconds": time.perf_counter() - t,
                            "summary": degradation_summary(experiment_runs(exp))})
            print(f"seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    print()
    print("\n".join(table(results, "final_train_error", "Training error % (eval mode, fixed training subset):")))
    print()
    print("\n".join(table(results, "final_test_error", "Test error %:")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
