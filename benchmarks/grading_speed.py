"""How long `resnet-explorer grade` takes on a class: N submissions, --jobs 2, this checkout vs a baseline.

    python benchmarks/grading_speed.py [--subs 30] [--jobs 2] [--baseline SRC] [--repeat 1]

Builds one folder of N submissions (copies of the solution, of the untouched student
notebook and of a few wrong answers), grades it with this checkout's grader and, with
``--baseline SRC`` (a folder holding another checkout's ``resnet_explorer`` package, e.g.
``git archive main resnet_explorer assignments | tar -x -C /tmp/base``; its own
``assignments/instructor`` is used when it has one), with that one too, side by side
in one run, alternating when ``--repeat`` > 1. The baseline runs in a throwaway virtual
environment whose path puts SRC first and borrows this interpreter's packages, so its
sandboxed children run the baseline's code as well. Prints the wall time of each run,
the seconds per submission, the CPU seconds of the run (the grader's own, and every
submission's as its sandbox measured it: less distorted by other load than wall time), the
load average, the ratios to the baseline, and checks both gave the same scores. Goal: no slower than the baseline by
more than 25 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTOR = ROOT / "assignments" / "instructor" / "resnet_basics"
STUDENT = ROOT / "assignments" / "student" / "resnet_basics" / "resnet_basics.ipynb"
WRONG = [  # (cell prefix, old, new): the planted mistakes of tests/test_grading.py
    ("class BasicBlock", "        return F.relu(out + self.shortcut(x))", "        return F.relu(out) + self.shortcut(x)"),
    ("class ShortcutA", "        x = x[:, :, :: self.stride, :: self.stride]", ""),
    ("def layer_responses", "                found[name] = response_std(output)", "                found[name] = 0.0"),
]


def build_folder(folder: Path, n: int) -> None:
    """``n`` submissions: a third solutions, a third untouched, the rest wrong answers."""
    solution = json.loads((INSTRUCTOR / "resnet_basics.ipynb").read_text())
    student = json.loads(STUDENT.read_text())
    folder.mkdir(parents=True)
    for i in range(n):
        kind = i % 3
        nb = json.loads(json.dumps(solution if kind != 1 else student))
        if kind == 2:
            prefix, old, new = WRONG[(i // 3) % len(WRONG)]
            cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(prefix))
            cell["source"] = "".join(cell["source"]).replace(old, new)
        (folder / f"s{i:02d}_{['solution', 'untouched', 'wrong'][kind]}.ipynb").write_text(json.dumps(nb))


def baseline_python(src: Path, where: Path) -> str:
    """An interpreter that imports ``resnet_explorer`` from ``src`` and everything else from this one."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_baseline.pth").write_text("\n".join([str(src.resolve()), *ours]) + "\n")
    return str(where / "bin" / "python")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def grade(python: str, folder: Path, out: Path, jobs: int, instructor: Path) -> tuple[float, float, dict[str, float], str]:
    """(wall seconds, CPU seconds of the grader and of every submission's sandbox, scores, isolation line)."""
    cmd = [python, "-m", "resnet_explorer.cli", "grade", str(folder), "--assignment", str(instructor),
           "--out", str(out), "--jobs", str(jobs), "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    t, cpu = time.perf_counter(), _children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=folder.parent)
    wall, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if r.returncode != 0:
        raise SystemExit(f"grading failed ({python}):\n{r.stderr[-2000:]}")
    data = json.loads(out.with_suffix(".json").read_text())
    isolation = next((l for l in r.stdout.splitlines() if l.startswith("isolation:")), data.get("isolation", ""))
    cpu += sum(s["cpu_seconds"] for s in data["submissions"])
    return wall, cpu, {s["submission"]: s["points"] for s in data["submissions"]}, isolation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subs", "--n", dest="n", type=int, default=30, help="submissions")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--baseline", type=Path, help="a folder holding another checkout's resnet_explorer package")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "submissions"
        build_folder(folder, args.n)
        variants = {"this checkout": (sys.executable, INSTRUCTOR)}
        if args.baseline:
            if not (args.baseline / "resnet_explorer" / "grading").is_dir():
                raise SystemExit(f"{args.baseline} holds no resnet_explorer/grading package")
            theirs = args.baseline / "assignments" / "instructor" / "resnet_basics"
            variants = {"baseline": (baseline_python(args.baseline, tmp / "venv"),
                                     theirs if theirs.is_dir() else INSTRUCTOR), **variants}
        times: dict[str, list[float]] = {k: [] for k in variants}
        cpus: dict[str, list[float]] = {k: [] for k in variants}
        loads: list[float] = []
        scores: dict[str, dict] = {}
        levels: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, (python, instructor) in variants.items():
                out = tmp / f"out-{name.replace(' ', '-')}-{len(times[name])}" / "s.csv"
                wall, cpu, scores[name], levels[name] = grade(python, folder, out, args.jobs, instructor)
                times[name].append(wall)
                cpus[name].append(cpu)
                loads.append(os.getloadavg()[0])
    print(f"grading {args.n} submissions with --jobs {args.jobs} ({os.cpu_count()} CPUs; timings are noisy; "
          f"1-minute load average after each run: {', '.join(f'{x:.1f}' for x in loads)})")
    print(f"{'grader':<16} {'wall s':>8} {'s/submission':>13} {'CPU s':>8} {'vs baseline':>12} {'CPU vs':>7}  isolation")
    base = statistics.median(times["baseline"]) if "baseline" in times else None
    base_cpu = statistics.median(cpus["baseline"]) if "baseline" in cpus else None
    for name, ts in times.items():
        med, cpu = statistics.median(ts), statistics.median(cpus[name])
        ratio = f"{med / base:.2f}x" if base else "-"
        cpu_ratio = f"{cpu / base_cpu:.2f}x" if base_cpu else "-"
        print(f"{name:<16} {med:8.1f} {med / args.n:13.2f} {cpu:8.1f} {ratio:>12} {cpu_ratio:>7}  {levels[name][:80]}")
        if len(ts) > 1:
            print(f"{'':<16} runs: {', '.join(f'{t:.1f} s ({c:.1f} s CPU)' for t, c in zip(ts, cpus[name]))}")
    if "baseline" in scores:
        same = scores["baseline"] == scores["this checkout"]
        print(f"same scores: {'yes' if same else 'NO'} (total {sum(scores['this checkout'].values()):g} points)")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
