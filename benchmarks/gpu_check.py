"""The parts of the prepared GPU check (``benchmarks/gpu_check.sh`` runs them; see its header).

    python benchmarks/gpu_check.py probe|cifar|fig1 --data folder:DIR --tables DIR --work DIR
        [--device cuda] [--budget SECONDS] [--compile MODE] [--tiny]

probe  ResNet-20 for ``--iters`` (2,000) iterations at the paper's recipe, once per step
       (eager, compiled model ``reduce-overhead``, whole step ``step``), side by side: they
       compile at once, and each times its steps holding a lock on the device, so no two
       timed loops overlap (eager last, once the others compiled: its launches need the CPU). Per mode: ms/step (median of the 100-iteration train windows
       after it held the lock: no compile, evaluation or start-up in it), the first window's
       wall time (compile and capture), dynamo's graph breaks, graphs compiled (1 for a
       whole step in one graph: no break, no recompile) and skipped CUDA graphs, the test
       error of its last checkpoint evaluated as training does and in fp32 eager with TF32
       off; and (a fourth job) the whole step's BatchNorm running statistics against
       the eager step's on identical batches. The fastest correct mode goes to ``WORK/probe.json``
       for the later parts.
cifar  `cifar_fidelity` rows (a) (the engine, probe's mode) and (c) (the torchvision
       reference) side by side at the full recipe; then more seeds of (a) while they fit.
fig1   The four Fig. 1 nets at the full recipe, side by side or one after another
       (whichever the estimate from the probe's ms/step says finishes), compared at the
       largest iteration all four reached.

Tables (``NAME.md`` and ``NAME.json``) are rewritten after every run and when a signal
stops the part. ``--tiny`` is a seconds-long CPU run that checks the plumbing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

MODES = ("off", "reduce-overhead", "step")
DEFAULT_MS = {"off": 5.6, "reduce-overhead": 2.5, "step": 1.2}  # ResNet-20 guesses, until a probe measures
PAPER_ITERS = 64_000


# -- probe: one job per mode ---------------------------------------------------------------------
def _counters() -> dict:
    from torch._dynamo.utils import counters

    return {"graph_breaks": sum(counters["graph_break"].values()),  # what broke them: TORCH_LOGS, the job's log
            "graphs": counters["stats"].get("unique_graphs", 0),  # 1 for a whole step without breaks or recompiles
            "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0)}


def ms_per_step(rows: list[dict], batch: int, after: int) -> float | None:
    """The median ms/step of the train windows that start after iteration ``after``."""
    train = [r for r in rows if r["kind"] == "train"]
    starts = [0] + [r["iter"] for r in train[:-1]]
    ms = [1000 * batch / r["images_per_s"] for s, r in zip(starts, train) if s > after and r["images_per_s"] > 0]
    return statistics.median(ms) if ms else None


def probe_run(mode: str, data: str, out: str, iters: int, device: str, lock: str, depth: int, width: int,
              deadline: float, log_every: int = 100) -> dict:
    """Train one mode for ``iters`` iterations (timed under the device lock), then check it."""
    import torch

    from resnet_explorer import get_spec
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.runs import read_metrics
    from resnet_explorer.train import train

    held: dict = {}
    ready = Path(lock).with_name(f"ready-{mode}")

    def stop(it: int) -> bool:
        if not held:  # after the first step (compile, capture): wait for the device, then time
            t = time.time()
            ready.touch()
            if mode == "off":  # eager is timed last, when no compile competes for the CPU that launches it
                others = [ready.with_name(f"ready-{m}") for m in MODES if m != "off"]
                while not all(o.exists() for o in others) and time.time() < deadline - 20:
                    time.sleep(0.2)
            held["fd"] = open(lock, "w")
            fcntl.flock(held["fd"], fcntl.LOCK_EX)
            held["at"], held["waited"] = it, time.time() - t
        return it >= iters or time.time() > deadline

    spec = get_spec(f"cifar-resnet{depth}", width=width)
    recipe = get_recipe("cifar-paper", log_every=min(log_every, iters), eval_every=iters, checkpoint_every=iters)
    t0 = time.perf_counter()
    result = train(spec, data, recipe, out, device=device, compile=mode, progress=False, should_stop=stop)
    wall = time.perf_counter() - t0
    if "fd" in held:
        held["fd"].close()  # the next mode may time its steps
    rows = read_metrics(Path(out))
    train_rows = [r for r in rows if r["kind"] == "train"]
    return {"mode": mode, "iters": result.iteration, "wall_s": wall, "counters": _counters(),
            "ms_per_step": ms_per_step(rows, recipe.batch_size, held.get("at", 0)),
            "first_window_s": train_rows[0]["wall_time"] - held.get("waited", 0) if train_rows else None,
            **checkpoint_errors(out, data, device)}


def checkpoint_errors(run: str, data: str, device: str) -> dict:
    """The test error of the run's last checkpoint evaluated eagerly as training evaluates
    (bf16 autocast on a GPU, channels_last), and in fp32, NCHW, with TF32 off."""
    import torch

    from resnet_explorer.data import make_loaders, parse_data
    from resnet_explorer.devices import Accel
    from resnet_explorer.evaluate import evaluate, load_model

    dev = torch.device(device)
    model = load_model(run, dev)
    test = make_loaders(parse_data(data), 1000, dev, 0, augment=False, channels_last=True)[1]
    as_trained = evaluate(model.to(memory_format=torch.channels_last), test, dev, Accel.resolve(dev, "auto", True))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    test = make_loaders(parse_data(data), 1000, dev, 0, augment=False)[1]
    fp32 = evaluate(model.to(memory_format=torch.contiguous_format), test, dev, Accel("off", False, "off", tf32=False))
    return {"test_error": as_trained["error"], "fp32_test_error": fp32["error"]}


def bn_job(data: str, device: str, depth: int, width: int, steps: int) -> dict:
    """`bn_check` of ResNet-``depth``, as a job of its own (it compiles beside the modes)."""
    from resnet_explorer import get_spec

    return bn_check(get_spec(f"cifar-resnet{depth}", width=width), data, device, steps)


def bn_check(spec, data: str, device: str, steps: int) -> dict:
    """The whole step against the eager step from one init on identical batches: the
    BatchNorm running statistics (max |diff| / max |eager|), their update counts, the weights."""
    import torch

    from resnet_explorer.data import make_loaders, parse_data
    from resnet_explorer.devices import Accel
    from resnet_explorer.model import build
    from resnet_explorer.step import Stepper

    dev = torch.device(device)
    train_loader = make_loaders(parse_data(data), 128, dev, 0, channels_last=True)[0]
    batches = [b for _, b in zip(range(steps), train_loader)]
    states = []
    for mode in ("off", "step"):
        accel = Accel.resolve(dev, "auto", True, mode)
        torch.manual_seed(0)
        model = accel.prepare(build(spec), dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        step = Stepper(model, opt, accel, dev)
        for x, y in batches:
            step(x, y, 0.1)
        states.append({k: v.detach().double().cpu() for k, v in model.state_dict().items()})
    eager, whole = states
    rel = lambda keys: max(((eager[k] - whole[k]).abs().max() / eager[k].abs().max().clamp_min(1e-12)).item()  # noqa: E731
                           for k in keys)
    return {"steps": steps, "running_mean": rel([k for k in eager if k.endswith("running_mean")]),
            "running_var": rel([k for k in eager if k.endswith("running_var")]),
            "weights": rel([k for k in eager if k.endswith("weight")]),
            "counts_equal": all(torch.equal(eager[k], whole[k]) for k in eager if k.endswith("num_batches_tracked"))}


def correct(r: dict, bn: dict | None = None, eager: dict | None = None) -> str | None:
    """Why a probe row cannot be trusted (None: it can); ``bn``: the whole step's BN check,
    ``eager``: the eager row (a compiled step must train as well at the same iteration)."""
    if "error" in r:
        return r["error"]
    if r.get("ms_per_step") is None:
        return f"not timed (stopped at {r['iters']})"
    if abs(r["fp32_test_error"] - r["test_error"]) > 0.02:
        return "its fp32 re-evaluation differs by > 2 pp"
    if (eager and r is not eager and "error" not in eager and eager["iters"] == r["iters"]
            and abs(eager["test_error"] - r["test_error"]) > 0.05):
        return "its test error is > 5 pp from the eager step's"
    if r["mode"] != "step" or bn is None:
        return None
    if "error" in bn:
        return f"its BN check failed: {bn['error']}"
    if (not bn["counts_equal"] or bn["running_var"] > 0.25 or bn["running_mean"] > 0.25):
        return "its BN statistics differ from the eager step's"
    return None


def probe_table(rows: list[dict], head: str, bn: dict | None = None) -> tuple[str, str | None]:
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    eager = next((r for r in rows if r["mode"] == "off"), None)
    lines = [head, "", "| mode | iters | ms/step | first window s | test err % | fp32 re-eval err % | graph breaks "
             "| graphs compiled | skipped CUDA graphs | correct |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("counters", {})
        why = correct(r, bn, eager)
        lines.append(f"| {r['mode']} | {r.get('iters', '-')} | {f(r.get('ms_per_step'), '.2f')} | "
                     f"{f(r.get('first_window_s'), '.1f')} | {f(r.get('test_error') and 100 * r['test_error'], '.2f')} | "
                     f"{f(r.get('fp32_test_error') and 100 * r['fp32_test_error'], '.2f')} | {c.get('graph_breaks', '-')} | "
                     f"{c.get('graphs', '-')} | {c.get('cudagraph_skips', '-')} | {why or 'yes'} |")
    if bn is not None:
        lines += ["", "BN check (the whole step against the eager step from one init, identical batches; "
                      "max |diff| / max |eager|): " + json.dumps(bn)]
    ok = [r for r in rows if correct(r, bn, eager) is None]
    best = min(ok, key=lambda r: r["ms_per_step"])["mode"] if ok else None
    lines += ["", f"Fastest correct step: {best or 'none'}"]
    return "\n".join(lines), best


# -- the parts ------------------------------------------------------------------------------------
def _write(tables: Path, name: str, text: str, data) -> None:
    (tables / f"{name}.md").write_text(text + "\n")
    (tables / f"{name}.json").write_text(json.dumps(data, indent=1))


def _fresh(folder: Path) -> Path:
    import shutil

    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _probe_choice(work: Path) -> dict:
    try:
        return json.loads((work / "probe.json").read_text())
    except (OSError, ValueError):
        return {}


def part_probe(a: argparse.Namespace) -> int:
    from resnet_explorer.jobs import Job, run_jobs

    runs = _fresh(a.work / "probe")
    deadline = time.time() + a.budget
    kw = dict(data=a.data, iters=a.iters, device=a.device, lock=str(runs / "device.lock"), depth=a.depth,
              width=a.width, deadline=deadline, log_every=a.log_every)
    jobs = [Job(m, "gpu_check:probe_run", dict(kw, mode=m, out=str(runs / m)), runs / "logs" / f"{m}.log")
            for m in MODES]
    jobs.append(Job("bn", "gpu_check:bn_job", dict(data=a.data, device=a.device, depth=a.depth, width=a.width,
                                                   steps=a.bn_steps), runs / "logs" / "bn.log"))
    results: dict[str, dict] = {}
    head = (f"Probe: cifar-resnet{a.depth} (width {a.width}), cifar-paper lr 0.1, {a.iters} iterations a mode, "
            f"{a.device}; modes compile side by side, timed one at a time (device lock)")

    def write() -> None:
        rows = [results[m] for m in MODES if m in results]
        bn = results.get("bn")
        text, best = probe_table(rows, head, bn)
        _write(a.tables, "probe", text, {"head": head, "rows": rows, "bn_check": bn, "best": best})
        ms = {r["mode"]: r.get("ms_per_step") for r in rows}
        first = {r["mode"]: r.get("first_window_s") for r in rows}
        (a.work / "probe.json").write_text(json.dumps({"best": best, "ms_per_step": ms, "first_window_s": first}))

    def done(o) -> None:
        if o.name == "bn":
            results["bn"] = o.value if o.status == "done" else {"error": o.error}
        else:
            results[o.name] = ({**o.value, "planned": a.iters} if o.status == "done"
                               else {"mode": o.name, "planned": a.iters, "error": o.error})
        write()

    _, stopped = run_jobs(jobs, len(jobs), log=lambda m: print(m, flush=True), on_done=done)
    write()
    print((a.tables / "probe.md").read_text(), flush=True)
    bn, eager = results.get("bn"), results.get("off")
    return 0 if not stopped and all(correct(results[m], bn, eager) is None for m in MODES if m in results) else 1


def part_cifar(a: argparse.Namespace) -> int:
    import cifar_fidelity

    choice = a.compile or _probe_choice(a.work).get("best") or "step"
    argv = ["--data", a.data, "--rows", "a,c", "--iters", str(a.iters), "--device", a.device, "--compile", choice,
            "--deadline", str(a.budget), "--jobs", "2", "--extra", f"a:{a.seeds}", "--out", str(a.work / "cifar"),
            "--tables", str(a.tables), "--table-name", "cifar", "--arch", f"cifar-resnet{a.depth}"]
    argv += ["--workers", "0" if a.tiny else "6"]
    print(f"cifar: (a) with --compile {choice} ({'the probe' if not a.compile else 'asked'}), beside (c); "
          f"up to {a.seeds} more seeds of (a) while they fit {a.budget:.0f} s", flush=True)
    return cifar_fidelity.main(argv)


def fig1_plan(a: argparse.Namespace) -> tuple[int, str]:
    """--jobs for the four nets, and the arithmetic that chose it: one after another when the
    estimate fits the budget (solo speeds), else side by side (their compiles overlap)."""
    probe = _probe_choice(a.work)
    mode = a.compile or probe.get("best") or "step"
    measured = (probe.get("ms_per_step") or {}).get(mode)
    ms20 = measured or DEFAULT_MS.get(mode, DEFAULT_MS["off"])
    compile_s = (probe.get("first_window_s") or {}).get(mode) or 60.0
    runs = [a.iters * ms20 * (d - 2) / 18 / 1000 for d in a.depths for _ in (0, 1)]
    seq, side = sum(runs) + len(runs) * compile_s, sum(runs) + compile_s
    jobs = 1 if seq <= a.budget else len(runs)
    why = (f"ResNet-20 {ms20:.2f} ms/step ({'probe' if measured else 'guess'}, {mode}), depth d "
           f"costs (d-2)/18 of it, {compile_s:.0f} s compile a run: one after another {seq:.0f} s, side by side "
           f"{side:.0f} s, budget {a.budget:.0f} s -> {'one after another' if jobs == 1 else 'side by side'}")
    return jobs, why


def part_fig1(a: argparse.Namespace) -> int:
    from resnet_explorer.jobs import Job, run_jobs

    runs = _fresh(a.work / "fig1")
    jobs_n, why = fig1_plan(a)
    mode = a.compile or _probe_choice(a.work).get("best") or "step"
    deadline = time.time() + a.budget
    nets = [(f"{kind}-{d}", f"cifar-{kind}{d}") for d in a.depths for kind in ("resnet", "plain")]
    jobs = [Job(name, "cifar_fidelity:row_engine", dict(
        row="a", arch=arch, data=a.data, iters=a.iters, out=str(runs / name), device=a.device, amp="auto",
        channels_last=True, compile=mode, budget=None, deadline=deadline, width=a.width, log_every=a.log_every),
        runs / "logs" / f"{name}.log") for name, arch in nets]
    head = f"Fig. 1 nets at cifar-paper ({a.iters} iterations), {a.device}, --compile {mode}; {why}"

    def write(*_) -> None:
        rows = fig1_rows(runs, [n for n, _ in nets], a.iters, a.width)
        _write(a.tables, "fig1", fig1_table(rows, head, a.log_every * 128), {"head": head, "runs": rows})

    _, stopped = run_jobs(jobs, jobs_n, log=lambda m: print(m, flush=True), on_done=write)
    write()
    print((a.tables / "fig1.md").read_text(), flush=True)
    rows = fig1_rows(runs, [n for n, _ in nets], a.iters, a.width)
    return 0 if not stopped and all(r["iters"] == a.iters for r in rows) else 1


def fig1_rows(runs: Path, names: list[str], planned: int, width: int | None = None) -> list[dict]:
    """Each net's records, compared at the largest iteration all of them logged (train error)
    and evaluated (test error); Table 6's error only for exactly the net trained (the paper's width)."""
    from resnet_explorer import paper
    from resnet_explorer.runs import read_metrics
    from resnet_explorer.zoo import get_spec

    metrics = {n: read_metrics(runs / n) if (runs / n / "metrics.jsonl").is_file() else [] for n in names}
    logged = [{r["iter"] for r in m if r["kind"] == "train"} for m in metrics.values()]
    evaled = [{r["iter"] for r in m if r["kind"] == "eval"} for m in metrics.values()]
    at_train = max(set.intersection(*logged), default=None) if all(logged) else None
    at_eval = max(set.intersection(*evaled), default=None) if all(evaled) else None
    rows = []
    for n, m in metrics.items():
        train = [r for r in m if r["kind"] == "train"]
        ms = ms_per_step(m, 128, train[1]["iter"] if len(train) > 2 else 0)
        first = train[0]["wall_time"] if train else None
        pick = lambda kind, it, key: next((r[key] for r in m if r["kind"] == kind and r["iter"] == it), None)  # noqa: E731
        kind, depth = n.split("-")
        table6 = paper.exact_figure(get_spec(f"cifar-{kind}{depth}", width=width), paper.CIFAR10)
        rows.append({"name": n, "residual": kind == "resnet", "depth": int(depth),
                     "iters": max((r["iter"] for r in m), default=0), "planned_iters": planned,
                     "wall_s": max((r["wall_time"] for r in m if "wall_time" in r), default=None),
                     "ms_per_step": ms, "first_window_s": first,
                     "projected_s": (first or 0) + planned * ms / 1000 if ms else None,
                     "at_train_iter": at_train, "train_error": pick("train", at_train, "train_error"),
                     "at_eval_iter": at_eval, "test_error": pick("eval", at_eval, "test_error"),
                     "final_test_error": next((r["test_error"] for r in reversed(m) if r["kind"] == "eval"), None),
                     "table6_error": table6.value if table6 else None,
                     "table6_source": table6.cite if table6 else None})
    return rows


def fig1_table(rows: list[dict], head: str, images: int | None = None) -> str:
    """The four nets' table; ``images``: how many images a logged training error is averaged over."""
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    it_t, it_e = (rows[0]["at_train_iter"], rows[0]["at_eval_iter"]) if rows else (None, None)
    lines = [head, "", f"| run | iters | wall s | ms/step | first window s | full schedule s | train err % at {it_t} "
             f"| test err % at {it_e} | last test err % | Table 6 % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        done = f"{r['iters']}" + ("" if r["iters"] >= r["planned_iters"] else f" of {r['planned_iters']}")
        lines.append(f"| {r['name']} | {done} | {f(r['wall_s'], '.1f')} | {f(r['ms_per_step'], '.2f')} | "
                     f"{f(r['first_window_s'], '.1f')} | {f(r['projected_s'], '.0f')} | {pct(r['train_error'])} | "
                     f"{pct(r['test_error'])} | {pct(r['final_test_error'])} | {f(r['table6_error'], '.2f')} |")
    cited = sorted({r["table6_source"] for r in rows if r.get("table6_source")})
    notes = [f"Table 6 %: the paper's test error of the same net (64k iterations; {c})." for c in cited]
    return "\n".join(lines + notes + ["", f"Orderings of Fig. 1 / 6 on training error at iteration {it_t} (all four):"]
                      + orderings(rows, images))


def orderings(rows: list[dict], images: int | None = None) -> list[str]:
    """Fig. 1 / 6 on training error, as the demo's report decides them (`report.orderings`): each
    holds, fails or is too close to call for the noise of errors averaged over ``images`` images
    each (unknown ``images``: by the sign alone)."""
    from resnet_explorer.report import orderings as decided, verdict_text
    from resnet_explorer.verdict import explain

    out = []
    for o in decided([{**r, "train_images": images} for r in rows], "train_error"):
        values = " vs ".join(f"{100 * x:.2f}" for x in o["values"].values())
        how = explain(o["verdict"], o["margin"], o["noise"])
        out.append(f"- {o['claim']}: {verdict_text(o)}" + (f" ({values} %; {how})" if values else ""))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("probe", "cifar", "fig1"))
    p.add_argument("--data", required=True, help="folder:DIR (the CIFAR-10 JPEG copy)")
    p.add_argument("--tables", type=Path, required=True, help="where NAME.md and NAME.json go ($OUT)")
    p.add_argument("--work", type=Path, required=True, help="run directories, logs, probe.json")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, required=True, help="seconds of training the part may take")
    p.add_argument("--compile", help="the step to use (default: the probe's fastest correct one, else step)")
    p.add_argument("--iters", type=int, help=f"default: 2000 (probe), {PAPER_ITERS} (cifar, fig1)")
    p.add_argument("--seeds", type=int, help="cifar: at most this many more seeds of (a) (default 4; tiny 1)")
    p.add_argument("--tiny", action="store_true", help="tiny nets and schedules: a CPU check of the plumbing")
    a = p.parse_args(argv)
    a.depth, a.width, a.depths, a.bn_steps, a.log_every = 20, 16, (20, 56), 5, 100
    if a.tiny:
        a.depth, a.width, a.depths, a.bn_steps, a.log_every = 8, 8, (8, 14), 2, 2
    a.iters = a.iters or (2000 if a.part == "probe" else PAPER_ITERS)
    a.seeds = a.seeds if a.seeds is not None else (1 if a.tiny else 4)
    a.tables.mkdir(parents=True, exist_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    paths = (str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in paths if x)  # the jobs import this file
    from resnet_explorer.data import load_tensors, parse_data

    load_tensors(parse_data(a.data))  # decode and cache the folder once, before the jobs share it
    return {"probe": part_probe, "cifar": part_cifar, "fig1": part_fig1}[a.part](a)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # outside the jobs: leave through the writers
    sys.exit(main())
