"""CIFAR fidelity: our engine against itself in fp32 and against an independent reference loop.

    python benchmarks/cifar_fidelity.py --data folder:DIR [--arch cifar-resnet20] [--iters 64000]
        [--rows a,b,c] [--seeds N] [--extra a:K] [--jobs J] [--device auto]
        [--compile reduce-overhead] [--budget SECONDS] [--deadline SECONDS] [--out DIR]

In one launch, side by side on one device (one process per row and seed, `resnet_explorer.jobs`):

  (a) our engine at the paper's recipe (``cifar-paper``) with today's helpers: bf16 autocast
      on a GPU, channels_last, ``--compile`` (default reduce-overhead on a GPU, off on a CPU);
  (b) the same engine and recipe in true fp32: no autocast, no compilation, NCHW, and TF32
      off (``RESNET_EXPLORER_TF32=0``; the table says what the run recorded);
  (c) a reference written here, sharing nothing with the engine but the folder of images:
      torchvision ImageFolder (PIL) decoded once, a DataLoader with torchvision v2 transforms
      (per-pixel mean subtracted, pad 4 and random 32x32 crop, horizontal flip), its own
      ResNet (6n+2, option A, He init), SGD 0.1 / momentum 0.9 / weight decay 1e-4, batch 128,
      lr /10 at 50 % and 75 % of the iterations, fp32 eager (PyTorch's default cuDNN TF32);
  (d) (on request, ``--rows a,b,c,d``) row (a) with ``bn_batch=64``: BatchNorm statistics over
      the 64 images each of the paper's two GPUs saw.

``--seeds N`` trains every row with seeds 0..N-1 (the run-to-run spread of ResNet-20 is about
0.2-0.3 pp, so one seed a row cannot settle a 0.5 pp question); ``--extra a:K`` queues K more
seeds of a row, each started only if the longest finished run of that row still fits before
``--deadline``. ``--jobs`` bounds the processes at once (default: all rows). ``--iters``
shortens the schedule (milestones move with it, as ``iters=`` does for a recipe);
``--budget`` stops each row after that many seconds of its own, ``--deadline`` stops every
row that many seconds after the launch. The table gives wall time, images/s, final and best
test error, each row's error at the largest iteration that every row evaluated (the fair
comparison when some were stopped), the mean and spread over seeds, and writes
``TABLES/fidelity.md`` and ``.json`` after every row. Running rows side by side shares the
device: each row's speed is not its solo speed.

On a CPU, ``--iters 4 --device cpu`` on a small image folder (160 images) takes about a minute
(measured on a shared 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
PAPER_ITERS = 64_000
ROWS = {"a": "engine, cifar-paper, bf16 + channels_last + compile", "b": "engine, cifar-paper, fp32 eager, TF32 off",
        "c": "reference loop (torchvision DataLoader), fp32 eager",
        "d": "engine as (a), BN over 64 images (bn_batch=64: the paper's two GPUs)"}


def _eval_every(iters: int) -> int:
    return min(1000, max(1, iters // 8))


def _stopper(budget: float | None, deadline: float | None):
    """should_stop for a row: its own ``budget`` seconds, or the launch's ``deadline`` (epoch seconds)."""
    t0 = time.perf_counter()
    return lambda *_: ((budget is not None and time.perf_counter() - t0 > budget)
                       or (deadline is not None and time.time() > deadline))


def fits_before(ledger: str | None, deadline: float | None) -> bool:
    """Whether another run of a row fits before ``deadline``, judged by the longest finished one."""
    if ledger is None or deadline is None or not os.path.exists(ledger):
        return True
    walls = [float(w) for w in Path(ledger).read_text().split()]
    return time.time() + max(walls, default=0.0) <= deadline


# -- rows (a) and (b): the engine -----------------------------------------------------------------
def row_engine(row: str, arch: str, data: str, iters: int, out: str, device: str, amp: str,
               channels_last: bool, compile: str, budget: float | None, bn_batch: int | None = None,
               seed: int = 0, deadline: float | None = None, ledger: str | None = None,
               tf32: bool = True, width: int | None = None, log_every: int = 100) -> dict:
    """Train ``arch`` with ``cifar-paper`` shortened to ``iters`` through `resnet_explorer.train`."""
    from resnet_explorer import get_spec
    from resnet_explorer.errors import TrainingError
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.runs import RunDir, read_metrics
    from resnet_explorer.train import train

    if not fits_before(ledger, deadline):
        return {"row": row, "seed": seed, "skipped": "would not finish before the deadline"}
    if deadline is not None and time.time() >= deadline:
        return {"row": row, "seed": seed, "skipped": "not started: the deadline had passed"}
    os.environ["RESNET_EXPLORER_TF32"] = "1" if tf32 else "0"
    every = _eval_every(iters)
    recipe = get_recipe("cifar-paper", iters=iters, eval_every=every, log_every=min(log_every, every),
                        checkpoint_every=iters, bn_batch=bn_batch)
    t0 = time.perf_counter()
    stopped = None
    try:
        spec = get_spec(arch, **({"width": width} if width else {}))
        done = train(spec, data, recipe, out, device=device, amp=amp, channels_last=channels_last, compile=compile,
                     progress=False, seed=seed, should_stop=_stopper(budget, deadline)).iteration
    except TrainingError as e:  # stopped by a signal: report as far as it got
        stopped, done = str(e).split(";")[0], None
    wall = time.perf_counter() - t0
    rows = read_metrics(Path(out))
    speeds = [r["images_per_s"] for r in rows if r["kind"] == "train"]
    evals = [(r["iter"], r["test_error"]) for r in rows if r["kind"] == "eval"]
    env = RunDir(out).env()
    what = f"engine, cifar-paper, amp {env['amp']}, {'channels_last' if env['channels_last'] else 'NCHW'}, " \
           f"compile {env['compile']}" + ("" if env.get("tf32") is None else f", TF32 {'on' if env['tf32'] else 'off'}") \
           + (f", bn_batch {bn_batch}" if bn_batch else "")
    if done is None:
        done = RunDir(out).iteration()
    if ledger is not None and done == iters:
        with open(ledger, "a") as f:
            f.write(f"{wall}\n")
    return {**_summary(row, done, iters, wall, speeds[1:] or speeds, evals), "what": what, "seed": seed,
            **({"stopped": stopped} if stopped else {})}


def _summary(row: str, done: int, iters: int, wall: float, speeds: list[float], evals: list) -> dict:
    errors = [e for _, e in evals]
    return {"row": row, "what": ROWS[row], "iters": done, "planned_iters": iters, "wall_s": wall,
            "images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "final_error": errors[-1] if errors else None, "best_error": min(errors) if errors else None,
            "evals": evals}


# -- row (c): the reference -----------------------------------------------------------------------
class RefBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU; option A: stride-2 subsampling and
    zero channels appended where the width doubles."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra))
        return F.relu(out + short)


class RefResNet(nn.Module):
    """The paper's CIFAR ResNet of depth 6n+2 (Sec. 4.2), written without the engine's builder."""

    def __init__(self, depth: int, classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(RefBlock(cin, cout, 2 if i and not j else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor):
        from torchvision.transforms import v2

        self.x, self.y, self.mean = x, y, mean
        self.tf = v2.Compose([v2.RandomCrop(32, padding=4, fill=0), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.tf(self.x[i].float() / 255 - self.mean), self.y[i]


def _decode(root: Path, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets
    from torchvision.transforms import v2

    ds = datasets.ImageFolder(str(root), transform=v2.Compose([v2.PILToTensor(), v2.Resize(32), v2.CenterCrop(32)]))
    xs, ys = [], []
    for x, y in torch.utils.data.DataLoader(ds, batch_size=500, num_workers=workers):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def row_reference(root: str, depth: int, iters: int, device: str, workers: int, budget: float | None,
                  seed: int = 0, deadline: float | None = None) -> dict:
    """(c): the paper's recipe in a plain loop over torchvision's DataLoader, fp32 eager."""
    t0 = time.perf_counter()
    over = _stopper(budget, deadline)
    signal.signal(signal.SIGINT, lambda *_: setattr(over, "signalled", True))  # stop, and report
    stop = lambda: over() or getattr(over, "signalled", False)  # noqa: E731
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    train_x, train_y = _decode(Path(root) / "train", workers)
    test_x, test_y = _decode(Path(root) / "test", workers)
    mean = (train_x.sum(0, dtype=torch.float64) / (255 * len(train_y))).float()
    loader = torch.utils.data.DataLoader(_Augmented(train_x, train_y, mean), batch_size=128, shuffle=True,
                                         drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=dev.type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"{root}/train has {len(train_y)} images, fewer than one batch of 128")
    test = ((test_x.float() / 255 - mean), test_y)
    model = RefResNet(depth).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    milestones = [max(1, round(m * iters / PAPER_ITERS)) for m in (32_000, 48_000)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    every, evals, speeds, it = _eval_every(iters), [], [], 0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    window, seen = time.perf_counter(), 0
    while it < iters and not stop():
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            it, seen = it + 1, seen + yb.numel()
            if it % every == 0 or it == iters:
                sync()
                speeds.append(seen / (time.perf_counter() - window))
                evals.append((it, _test_error(model, test, dev)))
                window, seen = time.perf_counter(), 0
            if it == iters or stop():
                break
    if seen:  # stopped by the budget between evaluations: evaluate where it stands
        sync()
        speeds.append(seen / (time.perf_counter() - window))
        evals.append((it, _test_error(model, test, dev)))
    return {**_summary("c", it, iters, time.perf_counter() - t0, speeds[1:] or speeds, evals), "seed": seed}


@torch.no_grad()
def _test_error(model: nn.Module, test: tuple[torch.Tensor, torch.Tensor], dev: torch.device) -> float:
    model.eval()
    wrong = 0
    for i in range(0, len(test[1]), 1000):
        wrong += (model(test[0][i:i + 1000].to(dev)).argmax(1).cpu() != test[1][i:i + 1000]).sum().item()
    model.train()
    return wrong / len(test[1])


# -- the launch and the table ---------------------------------------------------------------------
GOAL = 0.11  # the acceptance's test error for ResNet-20 at the full recipe (Table 6: 8.75 %)


def common_iteration(results: list[dict]) -> int | None:
    """The largest iteration that every run evaluated (None if there is none)."""
    sets = [{i for i, _ in r.get("evals", [])} for r in results]
    both = set.intersection(*sets) if sets else set()
    return max(both) if both else None


def _label(r: dict) -> str:
    return f"({r['row']})" + (f" seed {r['seed']}" if r.get("seed") else "")


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.2f}" if values else "-"
    return (f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} "
            f"({100 * min(values):.2f}-{100 * max(values):.2f}, {len(values)} seeds)")


def verdict(results: list[dict]) -> str:
    """Which part explains a gap to the goal: the engine, or the data (the reference shows it too)."""
    full = lambda row: [r["final_error"] for r in results  # noqa: E731
                        if r["row"] == row and r.get("iters") == r.get("planned_iters") and r.get("final_error") is not None]
    a, c = full("a"), full("c")
    if not a or not c:
        return "Verdict: not settled (row (a) or (c) did not finish its schedule)."
    ma, mc = statistics.mean(a), statistics.mean(c)
    noise = max(0.005, 2 * statistics.stdev(a)) if len(a) > 1 else 0.005
    if ma <= GOAL:
        return f"Verdict: (a) {100 * ma:.2f} % meets the goal (<= {100 * GOAL:.0f} %); (c) {100 * mc:.2f} %."
    if mc > GOAL and abs(ma - mc) <= noise:
        return (f"Verdict: (c) shows the gap too ({100 * mc:.2f} % vs (a) {100 * ma:.2f} %, within {100 * noise:.1f} pp): "
                "the data (the JPEG copy) explains it, not the engine.")
    if mc <= GOAL:
        return f"Verdict: (c) reaches {100 * mc:.2f} % but (a) {100 * ma:.2f} %: the engine explains the gap."
    return f"Verdict: (a) {100 * ma:.2f} % and (c) {100 * mc:.2f} % both miss the goal and differ: neither explains it alone."


def table(results: list[dict], arch: str, device: str) -> str:
    from resnet_explorer import get_spec
    from resnet_explorer.paper import CIFAR10, RESNET, exact_figure

    pct = lambda v: "-" if not isinstance(v, float) else f"{100 * v:.2f}"  # noqa: E731
    runs = [r for r in results if "error" not in r and "skipped" not in r]
    common = common_iteration(runs)
    at = {id(r): next((e for i, e in r.get("evals", []) if i == common), None) for r in runs}
    lines = [f"{arch} on {device}, side by side, one process per row and seed; Table 6: "
             f"{getattr(exact_figure(get_spec(arch), CIFAR10, RESNET), 'value', '-')} % (original CIFAR-10)", "",
             "| row | what | iters | wall s | images/s | final test err % | best test err % "
             f"| err % at iter {common} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r or "skipped" in r:
            why = f"FAILED: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            lines.append(f"| {_label(r)} | {ROWS[r['row']]} | {why} | | | | | |")
            continue
        done = f"{r['iters']}" + ("" if r["iters"] == r["planned_iters"] else f" of {r['planned_iters']} (stopped)")
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        lines.append(f"| {_label(r)} | {r['what']} | {done} | {r['wall_s']:.1f} | {ips} | {pct(r['final_error'])} "
                     f"| {pct(r['best_error'])} | {pct(at[id(r)])} |")
    letters = sorted({r["row"] for r in runs})
    mean_at = {x: [at[id(r)] for r in runs if r["row"] == x and isinstance(at[id(r)], float)] for x in letters}
    lines += ["", f"At iteration {common} (every run evaluated it), over seeds:"]
    lines += [f"- ({x}) {_spread(mean_at[x])} %" for x in letters]
    gaps = [f"- ({x}) - ({y}): {100 * (statistics.mean(mean_at[x]) - statistics.mean(mean_at[y])):+.2f} pp"
            for x, y in (("a", "b"), ("a", "c"), ("d", "a")) if mean_at.get(x) and mean_at.get(y)]
    finals = [f"- ({x}) final, finished runs: {_spread(v)} %" for x in letters
              if (v := [r["final_error"] for r in runs if r["row"] == x and r["iters"] == r["planned_iters"]])]
    return "\n".join(lines + gaps + finals + ["", verdict(runs)])


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder:DIR, an image folder DIR/train/<class>, DIR/test/<class>")
    p.add_argument("--arch", default="cifar-resnet20", help="a cifar-resnetD (6n+2)")
    p.add_argument("--iters", type=int, default=PAPER_ITERS, help="the schedule's length (the paper: 64000)")
    p.add_argument("--rows", default="a,b,c")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of every row")
    p.add_argument("--extra", default="", help="ROW:K, K more seeds of ROW, each started only if it fits the deadline")
    p.add_argument("--jobs", type=int, help="processes at once (default: every row and seed)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", help="row (a)'s --compile (default reduce-overhead on a GPU, off on a CPU)")
    p.add_argument("--budget", type=float, help="seconds each row may train (stopped there, reported as far as it got)")
    p.add_argument("--deadline", type=float, help="seconds after the launch when every row stops")
    p.add_argument("--workers", type=int, help="row (c)'s DataLoader processes (default 4; 0 on a CPU)")
    p.add_argument("--out", default="/tmp/cifar-fidelity", help="runs, logs and the table")
    p.add_argument("--tables", help="where the table goes (default: --out)")
    p.add_argument("--table-name", default="fidelity", help="the table's files: NAME.md and NAME.json")
    args = p.parse_args(argv)
    if not args.data.startswith("folder:"):
        p.error("--data must be folder:DIR (the reference reads the same image folder)")
    args.rows = [r for r in args.rows.split(",") if r]
    extra = args.extra.split(":") if args.extra else []
    if not args.rows or set(args.rows) - set(ROWS) or (extra and (len(extra) != 2 or extra[0] not in ROWS
                                                              or not extra[1].isdigit())):
        p.error(f"--rows: use some of {','.join(ROWS)}; --extra: ROW:K")
    if args.seeds < 1:
        p.error("--seeds: 1 or more")
    args.extra = (extra[0], int(extra[1])) if extra else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    root = args.data.split(":", 1)[1]
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    compile = args.compile or ("reduce-overhead" if cuda else "off")
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(r, s) for s in range(args.seeds) for r in args.rows]
    if args.extra:
        runs += [(args.extra[0], s) for s in range(args.seeds, args.seeds + args.extra[1])]
    names = {(r, s): r if s == 0 else f"{r}{s}" for r, s in runs}
    for name in names.values():  # this benchmark's own run directories from an earlier launch
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    sys.path.insert(0, str(HERE.parent))
    from resnet_explorer.data import load_tensors, parse_data
    from resnet_explorer.jobs import Job, run_jobs

    load_tensors(parse_data(args.data))  # decode and cache the folder once, before the rows share it
    paths = (str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)  # the jobs import this file's rows
    deadline = time.time() + args.deadline if args.deadline else None
    engine = dict(arch=args.arch, data=args.data, iters=args.iters, device=device, budget=args.budget,
                  deadline=deadline)
    row_kw = {"a": dict(amp="auto", channels_last=True, compile=compile),
              "b": dict(amp="off", channels_last=False, compile="off", tf32=False),
              "d": dict(amp="auto", channels_last=True, compile=compile, bn_batch=64)}

    def job(r: str, s: int) -> Job:
        name = names[r, s]
        if r == "c":
            kw = dict(root=root, depth=int(args.arch.removeprefix("cifar-resnet")), iters=args.iters, device=device,
                      workers=workers, budget=args.budget, seed=s, deadline=deadline)
            return Job(name, "cifar_fidelity:row_reference", kw, out / "logs" / f"{name}.log")
        ledger = str(out / f"walls-{r}.txt") if args.extra and r == args.extra[0] else None
        kw = dict(engine, row=r, out=str(out / name), seed=s, ledger=ledger, **row_kw[r])
        return Job(name, "cifar_fidelity:row_engine", kw, out / "logs" / f"{name}.log")

    for ledger in out.glob("walls-*.txt"):
        ledger.unlink()
    jobs = [job(r, s) for r, s in runs]
    results: dict[str, dict] = {}
    tables = Path(args.tables or out)
    tables.mkdir(parents=True, exist_ok=True)
    order = [names[k] for k in runs]

    def write() -> None:  # after every run, so a later failure or a signal loses nothing
        rs = [results[n] for n in order if n in results]
        (tables / f"{args.table_name}.md").write_text(table(rs, args.arch, device) + "\n")
        (tables / f"{args.table_name}.json").write_text(json.dumps(rs, indent=1))

    def done(o) -> None:
        r, s = next(k for k, n in names.items() if n == o.name)
        results[o.name] = o.value if o.status == "done" else {"row": r, "seed": s, "error": o.error}
        write()

    t = time.perf_counter()
    outcomes, stopped = run_jobs(jobs, args.jobs or len(jobs), log=lambda m: print(m, flush=True), on_done=done)
    write()
    print(f"\n{len(outcomes)} runs in {time.perf_counter() - t:.0f} s (one launch)\n")
    print(table([results[n] for n in order if n in results], args.arch, device))
    return 0 if not stopped and all(o.status == "done" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
