"""Smoke-mode cost of the walkthrough notebooks: wall time and CPU time (kernel included), on a
CPU another process keeps busy, optionally beside another checkout (the same notebooks before a
change), alternating the two so both see the same conditions.

    python benchmarks/notebook_smoke_times.py [--other DIR] [--notebooks 00,01,02,03,04] [--reps 2] [--busy 1]

Each notebook runs headless in smoke mode (``python -m resnet_explorer.notebooks run --smoke``,
a fresh kernel, runs in a temporary folder) with the checkout's own ``resnet_explorer`` first on
PYTHONPATH. CPU time is the sum of user and system time of every process of the run (the
runner and the kernel), sampled with psutil until each exits. ``--busy N`` starts N processes
that spin (``while 1: pass``) for the whole measurement: the shared CPU a student's laptop or a
CI machine often is. Prints one row per run, then the medians, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def measure(root: Path, notebook: Path, work: Path) -> tuple[float, float, bool]:
    """(wall s, CPU s of every process of the run, ok) for one smoke run of ``notebook``."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(root), "RESNET_EXPLORER_SHARED_DATA": os.environ.get(
        "RESNET_EXPLORER_SHARED_DATA", "")}
    for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "RESNET_EXPLORER_SMOKE"):
        env.pop(key, None)  # what the checkout itself sets, nothing more
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "resnet_explorer.notebooks", "run", "--smoke", str(notebook),
                             "--runs", str(work / "runs")], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: dict[int, float] = {}
    root_proc = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root_proc, *root_proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            try:
                t = p.cpu_times()
                seen[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.2)
    wall = time.perf_counter() - start
    out = proc.stdout.read().decode(errors="replace")
    return wall, sum(seen.values()), proc.returncode == 0 and "FAILED" not in out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", type=Path, help="another checkout to measure beside this one (e.g. before a change)")
    p.add_argument("--notebooks", default="00,01,02,03,04", help="notebook numbers")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--busy", type=int, default=1, help="spinning processes kept running meanwhile")
    args = p.parse_args(argv)
    roots = {"this": HERE, **({"other": args.other.resolve()} if args.other else {})}
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
    rows = []
    try:
        print(f"{'notebook':<28}{'checkout':>9}{'wall s':>9}{'CPU s':>9}  ok", flush=True)
        for number in args.notebooks.split(","):
            for rep in range(args.reps):
                order = list(roots) if rep % 2 == 0 else list(reversed(roots))  # A B, then B A
                for which in order:
                    nb = next((roots[which] / "notebooks").glob(f"{number.strip()}_*.ipynb"))
                    with tempfile.TemporaryDirectory(prefix="smoke-times-") as work:
                        wall, cpu, ok = measure(roots[which], nb, Path(work))
                    rows.append((nb.stem, which, wall, cpu, ok))
                    print(f"{nb.stem:<28}{which:>9}{wall:>9.1f}{cpu:>9.1f}  {'ok' if ok else 'FAILED'}", flush=True)
    finally:
        for b in busy:
            b.kill()
    print("\nmedians")
    for name in dict.fromkeys(r[0] for r in rows):
        cells = []
        for which in roots:
            mine = [r for r in rows if r[0] == name and r[1] == which]
            cells.append(f"{which}: wall {statistics.median(r[2] for r in mine):.0f} s, "
                         f"CPU {statistics.median(r[3] for r in mine):.0f} s")
        print(f"  {name:<28}" + "   ".join(cells))
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; "
          f"{args.busy} spinning process(es) meanwhile")
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
