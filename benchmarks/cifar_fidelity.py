"""CIFAR fidelity: our engine against itself in fp32 and against an independent reference loop.

    python benchmarks/cifar_fidelity.py --data folder:DIR [--arch cifar-resnet20] [--iters 64000]
        [--rows a,b,c] [--device auto] [--compile reduce-overhead] [--budget SECONDS] [--out DIR]

In one launch, side by side on one device (one process per row, `resnet_explorer.jobs`):

  (a) our engine at the paper's recipe (``cifar-paper``) with today's helpers: bf16 autocast
      on a GPU, channels_last, ``--compile`` (default reduce-overhead on a GPU, off on a CPU);
  (b) the same engine and recipe in fp32, eager, NCHW: no autocast, no compilation, no capture;
  (c) a reference written here, sharing nothing with the engine but the folder of images:
      torchvision ImageFolder (PIL) decoded once, a DataLoader with torchvision v2 transforms
      (per-pixel mean subtracted, pad 4 and random 32x32 crop, horizontal flip), its own
      ResNet (6n+2, option A, He init), SGD 0.1 / momentum 0.9 / weight decay 1e-4, batch 128,
      lr /10 at 50 % and 75 % of the iterations, fp32 eager;
  (d) (on request, ``--rows a,b,c,d``) row (a) with ``bn_batch=64``: BatchNorm statistics over
      the 64 images each of the paper's two GPUs saw.

``--iters`` shortens the schedule for all three (milestones move with it, as ``iters=`` does
for a recipe); ``--budget`` stops every row after that many seconds of its own (the table
then says how far each got). It prints one table: wall time, images/s, final and best test
error, and the error of each row at the last evaluation all rows reached (the fair
comparison when some were stopped), and writes it to ``OUT/fidelity.md`` and ``.json``.
Running the rows side by side shares the device: each row's speed is not its solo speed.

On a CPU, ``--iters 4 --device cpu`` on a small image folder (160 images) takes about a minute
(measured on a shared 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
PAPER_ITERS = 64_000
ROWS = {"a": "engine, cifar-paper, bf16 + channels_last + compile", "b": "engine, cifar-paper, fp32 eager",
        "c": "reference loop (torchvision DataLoader), fp32 eager",
        "d": "engine as (a), BN over 64 images (bn_batch=64: the paper's two GPUs)"}


def _eval_every(iters: int) -> int:
    return min(1000, max(1, iters // 8))


# -- rows (a) and (b): the engine -----------------------------------------------------------------
def row_engine(row: str, arch: str, data: str, iters: int, out: str, device: str, amp: str,
               channels_last: bool, compile: str, budget: float | None, bn_batch: int | None = None) -> dict:
    """Train ``arch`` with ``cifar-paper`` shortened to ``iters`` through `resnet_explorer.train`."""
    from resnet_explorer import get_spec
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.runs import read_env, read_metrics
    from resnet_explorer.train import train

    every = _eval_every(iters)
    recipe = get_recipe("cifar-paper", iters=iters, eval_every=every, log_every=min(100, every),
                        checkpoint_every=iters, bn_batch=bn_batch)
    t0 = time.perf_counter()
    result = train(get_spec(arch), data, recipe, out, device=device, amp=amp, channels_last=channels_last,
                   compile=compile, progress=False,
                   should_stop=None if budget is None else lambda it: time.perf_counter() - t0 > budget)
    wall = time.perf_counter() - t0
    rows = read_metrics(result.run_dir)
    speeds = [r["images_per_s"] for r in rows if r["kind"] == "train"]
    evals = [(r["iter"], r["test_error"]) for r in rows if r["kind"] == "eval"]
    env = read_env(result.run_dir)
    what = f"engine, cifar-paper, amp {env['amp']}, {'channels_last' if env['channels_last'] else 'NCHW'}, " \
           f"compile {env['compile']}" + (f", bn_batch {bn_batch}" if bn_batch else "")
    return {**_summary(row, result.iteration, iters, wall, speeds[1:] or speeds, evals), "what": what}


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
                  seed: int = 0) -> dict:
    """(c): the paper's recipe in a plain loop over torchvision's DataLoader, fp32 eager."""
    t0 = time.perf_counter()
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
    while it < iters and not (budget is not None and time.perf_counter() - t0 > budget):
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
            if it == iters or (budget is not None and time.perf_counter() - t0 > budget):
                break
    if seen:  # stopped by the budget between evaluations: evaluate where it stands
        sync()
        speeds.append(seen / (time.perf_counter() - window))
        evals.append((it, _test_error(model, test, dev)))
    return _summary("c", it, iters, time.perf_counter() - t0, speeds[1:] or speeds, evals)


@torch.no_grad()
def _test_error(model: nn.Module, test: tuple[torch.Tensor, torch.Tensor], dev: torch.device) -> float:
    model.eval()
    wrong = 0
    for i in range(0, len(test[1]), 1000):
        wrong += (model(test[0][i:i + 1000].to(dev)).argmax(1).cpu() != test[1][i:i + 1000]).sum().item()
    model.train()
    return wrong / len(test[1])


# -- the launch and the table ---------------------------------------------------------------------
def table(results: list[dict], arch: str, device: str) -> str:
    from resnet_explorer import get_spec
    from resnet_explorer.paper import CIFAR10, RESNET, exact_figure

    pct = lambda v: "-" if not isinstance(v, float) else f"{100 * v:.2f}"  # noqa: E731
    common = min((r["evals"][-1][0] for r in results if r.get("evals")), default=None)
    at = {r["row"]: next((e for i, e in r.get("evals", []) if i == common), None) for r in results}
    lines = [f"{arch} on {device}, side by side, one process per row; Table 6: "
             f"{getattr(exact_figure(get_spec(arch), CIFAR10, RESNET), 'value', '-')} % (original CIFAR-10)", "",
             "| row | what | iters | wall s | images/s | final test err % | best test err % "
             f"| err % at iter {common} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| ({r['row']}) | {ROWS[r['row']]} | FAILED: {r['error']} | | | | | |")
            continue
        done = f"{r['iters']}" + ("" if r["iters"] == r["planned_iters"] else f" of {r['planned_iters']} (budget)")
        ips = "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"
        lines.append(f"| ({r['row']}) | {r['what']} | {done} | {r['wall_s']:.1f} | {ips} | {pct(r['final_error'])} "
                     f"| {pct(r['best_error'])} | {pct(at[r['row']])} |")
    gaps = [f"({x}) - ({y}) at iteration {common}: {100 * (at[x] - at[y]):+.2f} pp"
            for x, y in (("a", "b"), ("a", "c"), ("d", "a"))
            if isinstance(at.get(x), float) and isinstance(at.get(y), float)]
    lines += [""] + gaps if gaps else []
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder:DIR, an image folder DIR/train/<class>, DIR/test/<class>")
    p.add_argument("--arch", default="cifar-resnet20", help="a cifar-resnetD (6n+2)")
    p.add_argument("--iters", type=int, default=PAPER_ITERS, help="the schedule's length (the paper: 64000)")
    p.add_argument("--rows", default="a,b,c")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", help="row (a)'s --compile (default reduce-overhead on a GPU, off on a CPU)")
    p.add_argument("--budget", type=float, help="seconds each row may train (stopped there, reported as far as it got)")
    p.add_argument("--workers", type=int, help="row (c)'s DataLoader processes (default 4; 0 on a CPU)")
    p.add_argument("--out", default="/tmp/cifar-fidelity", help="runs, logs and the table")
    p.add_argument("--tables", help="where fidelity.md and .json go (default: --out)")
    args = p.parse_args(argv)
    if not args.data.startswith("folder:"):
        p.error("--data must be folder:DIR (the reference reads the same image folder)")
    root = args.data.split(":", 1)[1]
    rows = [r for r in args.rows.split(",") if r]
    if not rows or set(rows) - set(ROWS):
        p.error(f"--rows: use some of {','.join(ROWS)}")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    compile = args.compile or ("reduce-overhead" if cuda else "off")
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    depth = int(args.arch.removeprefix("cifar-resnet"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:  # this benchmark's own run directories from an earlier launch
        if r != "c" and (out / r).is_dir() and not (out / r).is_symlink():
            shutil.rmtree(out / r)
    sys.path.insert(0, str(HERE.parent))
    from resnet_explorer.data import load_tensors, parse_data
    from resnet_explorer.jobs import Job, run_jobs

    load_tensors(parse_data(args.data))  # decode and cache the folder once, before the rows share it
    paths = (str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)  # the jobs import this file's rows
    engine = dict(arch=args.arch, data=args.data, iters=args.iters, device=device, budget=args.budget)
    kwargs = {"a": dict(engine, row="a", out=str(out / "a"), amp="auto", channels_last=True, compile=compile),
              "b": dict(engine, row="b", out=str(out / "b"), amp="off", channels_last=False, compile="off"),
              "d": dict(engine, row="d", out=str(out / "d"), amp="auto", channels_last=True, compile=compile,
                        bn_batch=64),
              "c": dict(root=root, depth=depth, iters=args.iters, device=device, workers=workers, budget=args.budget)}
    jobs = [Job(r, f"cifar_fidelity:{'row_reference' if r == 'c' else 'row_engine'}", kwargs[r],
                out / "logs" / f"{r}.log") for r in rows]
    results: dict[str, dict] = {}
    tables = Path(args.tables or out)
    tables.mkdir(parents=True, exist_ok=True)

    def done(o) -> None:  # the table is rewritten as each row ends, so a later failure loses nothing
        results[o.name] = o.value if o.status == "done" else {"row": o.name, "error": o.error}
        write([results[r] for r in rows if r in results])

    def write(rs: list[dict]) -> None:
        text = table(rs, args.arch, device)
        (tables / "fidelity.md").write_text(text + "\n")
        (tables / "fidelity.json").write_text(json.dumps(rs, indent=1))

    t = time.perf_counter()
    outcomes, stopped = run_jobs(jobs, len(jobs), log=lambda m: print(m, flush=True), on_done=done)
    print(f"\n{len(rows)} rows in {time.perf_counter() - t:.0f} s (one launch)\n")
    print(table([results[r] for r in rows if r in results], args.arch, device))
    return 0 if not stopped and all(o.status == "done" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
