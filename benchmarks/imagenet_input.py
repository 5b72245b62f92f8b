"""ImageNet input: images/s of the input pipeline alone, and of training end to end from a
JPEG folder against the same model on synthetic in-memory input, in one table.

    python benchmarks/imagenet_input.py [--data DIR] [--images 12800] [--device auto]
        [--workers 8,16] [--gpu-workers 4] [--archs resnet18,resnet50] [--batch-size 256]
        [--warmup 8] [--iters 40] [--compile reduce-overhead] [--out PREFIX] [--tiny]

Rows (each measured in this run, one after the other, one failing row reported and the
others kept):

    input only   cpu (PIL, N workers)   `ImageNetLoader`: PIL decode + torchvision transforms in N processes
                 gpu (decode + ops …)   `GpuImageNetLoader`: files read in workers, nvJPEG decode and the
                                        augmentation as batched tensor ops on the device
    end to end   ARCH synthetic         the training step (bf16, channels_last, --compile) on batches
                                        already on the device: the ceiling
                 ARCH gpu / ARCH cpu    the same step fed by each input path

"cores" is the CPU time of this process and its workers over the timed wall time (Linux
/proc): how many of the host's cores the row kept busy. Without ``--data`` a folder of
ILSVRC-like JPEGs is generated once (``--images`` files of ``--size`` at quality 90, about
100 KB each like ILSVRC's average, 100 classes) under ``--cache`` and reused; it stays in
the page cache, so the rows measure decoding, not the disk. The CPU path's ready batches
(workers x prefetch x batch, float32) are held under ``--shm-budget`` GiB of shared memory,
and the pixel check runs after training's precision settings (TF32, cuDNN autotuning). ``--tiny`` is a seconds-long
run on the CPU that checks the script works (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))  # run from a clone without installing


# -- the JPEG folder ------------------------------------------------------------------------------
def _bank(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A photo-like texture: smooth structure at three scales plus sensor-like noise."""
    from PIL import Image

    out = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((8, 70), (40, 40), (200, 30)):
        small = rng.normal(0, 1, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        small = ((small - small.min()) / (np.ptp(small) + 1e-6) * 255).astype(np.uint8)
        out += (np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32) - 128) * amp / 128
    out += rng.normal(0, 20, out.shape).astype(np.float32)
    return np.clip(out + 128, 0, 255).astype(np.uint8)


def _write_chunk(job: tuple) -> int:
    from PIL import Image

    root, start, stop, (w, h), quality, classes, seed = job
    rng = np.random.default_rng([seed, start])
    banks = [_bank(rng, int(w * 1.4), int(h * 1.4)) for _ in range(4)]
    for i in range(start, stop):
        b = banks[i % len(banks)]
        y, x = rng.integers(0, b.shape[0] - h), rng.integers(0, b.shape[1] - w)
        mix = (np.eye(3) + rng.normal(0, 0.15, (3, 3))).astype(np.float32)
        img = np.clip(b[y:y + h, x:x + w].astype(np.float32) @ mix.T + rng.normal(0, 20, 3), 0, 255)
        img = img.astype(np.uint8)
        if i % 4 == 3:  # a quarter portrait, as in ILSVRC
            img = np.ascontiguousarray(img.transpose(1, 0, 2))
        split = "val" if i < classes else "train"
        folder = Path(root) / split / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{split}_{i:07d}.JPEG", quality=quality)
    return stop - start


def generate(root: Path, images: int, size: tuple[int, int], quality: int = 90, classes: int = 100,
             seed: int = 0, processes: int | None = None) -> tuple[Path, float]:
    """An ILSVRC-style folder of ``images`` training JPEGs (and one val image a class),
    made once: (root, seconds it took, 0 if it was there)."""
    stamp = root / "complete.json"
    params = dict(images=images, size=list(size), quality=quality, classes=classes, seed=seed)
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return root, 0.0
    t = time.perf_counter()
    total = images + classes
    step = max(16, -(-total // ((processes or os.cpu_count() or 1) * 4)))
    jobs = [(str(root), s, min(s + step, total), size, quality, classes, seed) for s in range(0, total, step)]
    with Pool(processes) as pool:
        sum(pool.imap_unordered(_write_chunk, jobs))
    stamp.write_text(json.dumps(params))
    return root, time.perf_counter() - t


# -- timing --------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its live descendants, and of the
    children it has waited for (Linux /proc)."""
    tick, total, todo, seen = os.sysconf("SC_CLK_TCK"), 0, [os.getpid()], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total / tick


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(loader):
    while True:
        yield from loader


def timed(batches, consume, warmup: int, iters: int, device: torch.device) -> dict:
    """images/s and cores busy over ``iters`` batches after ``warmup``."""
    it = iter(batches)
    for _ in range(warmup):
        consume(*next(it))
    _sync(device)
    t, c, n = time.perf_counter(), cpu_seconds(), 0
    for _ in range(iters):
        x, y = next(it)
        consume(x, y)
        n += y.shape[0]
    _sync(device)
    wall = time.perf_counter() - t
    return {"images_per_s": n / wall, "cores": (cpu_seconds() - c) / wall, "images": n}


def prefetch_factor(workers: int, batch: int, budget_gib: float) -> int:
    """Batches each CPU-path worker may hold ready (at most 4, at least 1) so that all of them
    together (float32 224² batches, in shared memory) stay under ``budget_gib``."""
    batch_bytes = batch * 3 * 224 * 224 * 4
    return max(1, min(4, int(budget_gib * 2**30 // (max(1, workers) * batch_bytes))))


def input_loader(root: str, path: str, workers: int, args, device: torch.device):
    from resnet_explorer.data import make_imagenet_loader

    # On a CPU "auto" is the CPU path: leaving ``loader`` out there lets the CPU rows run
    # against the code from before the GPU path too (PYTHONPATH=old-checkout), for before/after.
    kw = {} if path == "cpu" and device.type == "cpu" else {"loader": path}
    loader = make_imagenet_loader(root, "train", args.batch_size, device, True, workers=workers,
                                  channels_last=True, **kw)
    if path == "cpu" and workers > 0:  # workers x prefetch x batch: bounded, not 16 x 4 x 154 MB
        loader.loader.prefetch_factor = prefetch_factor(workers, args.batch_size, args.shm_budget)
    return loader


def stepper(arch: str, classes: int, device: torch.device, compile: str, width: int | None):
    from resnet_explorer import build, get_spec
    from resnet_explorer.devices import Accel
    from resnet_explorer.step import Stepper

    accel = Accel.resolve(device, "auto", True, compile)
    torch.manual_seed(0)
    model = accel.prepare(build(get_spec(arch, num_classes=classes, width=width)), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = Stepper(model, opt, accel, device)
    return lambda x, y: step(x, y, 0.1)


def pixel_check(root: str, device: torch.device) -> dict:
    """How far the GPU path's pixels are from the PIL path's, in levels (1/255), on the
    same images with the same draws (train views and val centre crops)."""
    from resnet_explorer.data import make_imagenet_loader

    out = {}
    for split, train in (("train", True), ("val", False)):
        a = next(iter(make_imagenet_loader(root, split, 32, "cpu", train, seed=1, workers=0, loader="cpu")))
        b = next(iter(make_imagenet_loader(root, split, 32, device, train, seed=1, workers=0, loader="gpu")))
        assert torch.equal(a[1], b[1].cpu())
        d = (a[0] - b[0].float().cpu()).abs().flatten() * 255
        out[split] = {"max": d.max().item(), "mean": d.mean().item(), "p99.9": d.kthvalue(int(d.numel() * 0.999)).values.item()}
    return out


def odd_check(device: torch.device) -> dict:
    """ILSVRC's odd files through the GPU path on ``device``: CMYK, greyscale, a PNG named
    .JPEG, a progressive JPEG and one smaller than 224 decode; a truncated file and a
    non-image are skipped with one warning line each."""
    import contextlib

    from PIL import Image

    from resnet_explorer.data import make_imagenet_loader

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(_bank(rng, 300, 240))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "train" / "n0"
        folder.mkdir(parents=True)
        (Path(tmp) / "val").mkdir()
        rgb.convert("CMYK").save(folder / "cmyk.JPEG", quality=90)
        rgb.convert("L").save(folder / "grey.JPEG", quality=90)
        rgb.save(folder / "png.JPEG", format="PNG")
        rgb.save(folder / "progressive.JPEG", quality=90, progressive=True)
        rgb.resize((150, 100)).save(folder / "small.JPEG", quality=90)
        good = (folder / "small.JPEG").read_bytes()
        (folder / "truncated.JPEG").write_bytes(good[: len(good) // 2])
        (folder / "garbage.JPEG").write_bytes(os.urandom(3000))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            batches = list(make_imagenet_loader(tmp, "train", 7, device, False, workers=0, loader="gpu"))
        with contextlib.redirect_stderr(io.StringIO()):
            ref = list(make_imagenet_loader(tmp, "train", 7, "cpu", False, workers=0, loader="cpu"))
        (x, y), = batches
        d = (x.float().cpu() - ref[0][0]).abs() * 255
        return {"decoded": int(y.numel()), "shape": list(x.shape), "skipped_lines": err.getvalue().count("skipped"),
                "max_level_diff_vs_pil": round(d.max().item(), 1), "mean_level_diff_vs_pil": round(d.mean().item(), 3)}


# -- the table -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="an ILSVRC-style folder (DIR/train/<wnid>/*.JPEG); default: generate one")
    p.add_argument("--images", type=int, default=12800, help="JPEGs to generate")
    p.add_argument("--size", default="500x375", help="generated JPEGs' width x height")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "resnet-explorer-imagenet-bench"))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", default="8,16", help="CPU path rows: loader processes, e.g. 8,16")
    p.add_argument("--gpu-workers", type=int, default=4, help="file-reading processes of the GPU path")
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--width", type=int, help="the nets' first width (default the paper's 64)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--compile", default="reduce-overhead", help="the training step's --compile (off: eager)")
    p.add_argument("--rows", default="input,train,pixels,odd", help="which parts: input, train, pixels, odd")
    p.add_argument("--budget", type=float, default=0, help="seconds; rows not started by then are skipped")
    p.add_argument("--shm-budget", type=float, default=4.0,
                   help="GiB the CPU path's ready batches may take in all (workers x prefetch x batch)")
    p.add_argument("--out", help="also write the table to PREFIX.md and PREFIX.json")
    p.add_argument("--tiny", action="store_true", help="a seconds-long CPU run that checks the script works")
    args = p.parse_args(argv)
    if args.tiny:
        args.images, args.size, args.batch_size, args.warmup, args.iters = 48, "200x150", 8, 1, 3
        args.workers, args.gpu_workers, args.width, args.compile = "1", 1, 8, "off"
        args.archs = "resnet18"

    from resnet_explorer.data.cpus import available_cpus
    from resnet_explorer.devices import Accel, pick_device

    device = pick_device(args.device)
    # the precision settings of training (TF32, cuDNN autotuning) before anything runs, so the
    # pixel check describes the pixels training sees
    accel = Accel.resolve(device, "auto", True, args.compile)
    accel.prepare(torch.nn.Identity(), device)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    gen_s = 0.0
    if args.data:
        root = Path(args.data)
    else:
        tag = f"{args.images}-{size[0]}x{size[1]}" + ("-tiny" if args.tiny else "")
        root, gen_s = generate(Path(args.cache) / tag, args.images, size, classes=4 if args.tiny else 100)
    classes = len([d for d in (root / "train").iterdir() if d.is_dir()])
    rows: list[dict] = []
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    head = {"device": f"{device} ({name})", "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cpu_cores": available_cpus(), "batch": args.batch_size, "warmup": args.warmup, "iters": args.iters,
            "compile": args.compile, "data": str(root), "generated_s": round(gen_s, 1),
            "tf32": accel.tf32 if device.type == "cuda" else None, "shm_budget_gib": args.shm_budget,
            "prefetch": {w: prefetch_factor(w, args.batch_size, args.shm_budget)
                         for w in (int(v) for v in args.workers.split(",") if v)}}
    print(" ".join(f"{k}={v}" for k, v in head.items()), flush=True)
    print(f"{'part':<12}{'row':<50}{'images/s':>10}{'vs ref':>9}{'cores':>7}", flush=True)

    start = time.perf_counter()
    extra: dict = {}
    parts = args.rows.split(",")

    def row(part: str, label: str, fn, ref: float | None = None) -> dict:
        try:
            if args.budget and time.perf_counter() - start > args.budget:
                raise TimeoutError(f"not started: past the {args.budget:.0f} s budget")
            r = fn()
            r["vs"] = r["images_per_s"] / ref if ref else 1.0
            print(f"{part:<12}{label:<50}{r['images_per_s']:>10.0f}{r['vs']:>8.2f}x{r['cores']:>7.1f}", flush=True)
        except Exception as e:  # one failing row is reported, the others kept
            r = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"}
            print(f"{part:<12}{label:<50}{'failed':>10}  {r['failed']}", flush=True)
        rows.append({"part": part, "row": label, **r})
        if args.out:  # after every row, so a run cut short keeps what it measured
            write_table(Path(args.out), head, rows, extra)
        return r

    for part, check in (("pixels", lambda: pixel_check(str(root), device)), ("odd", lambda: odd_check(device))):
        if part in parts:
            try:
                extra[part] = check()
            except Exception as e:  # noqa: BLE001
                extra[part] = {"failed": f"{type(e).__name__}: {e}"}
            print(f"{part}: {json.dumps(extra[part])}", flush=True)
    workers = [int(w) for w in args.workers.split(",") if w]
    gpu_label = f"gpu (decode + ops on {device.type}, {args.gpu_workers} workers)"
    if "input" in parts:
        ref = None
        for w in workers:
            r = row("input only", f"cpu (PIL, {w} workers)", lambda w=w: timed(
                forever(input_loader(str(root), "cpu", w, args, device)), lambda x, y: None,
                args.warmup, args.iters, device), ref)
            ref = ref or r.get("images_per_s")
        row("input only", gpu_label, lambda: timed(
            forever(input_loader(str(root), "gpu", args.gpu_workers, args, device)), lambda x, y: None,
            args.warmup, args.iters, device), ref)
    if "train" in parts:
        for arch in filter(None, args.archs.split(",")):
            compile = args.compile
            try:
                step = stepper(arch, classes, device, compile, args.width)
            except Exception as e:  # noqa: BLE001
                row("end to end", f"{arch} (build)", lambda e=e: _raise(e))
                continue
            g = torch.Generator(device="cpu").manual_seed(0)
            synth = [(torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device)
                      .contiguous(memory_format=torch.channels_last),
                      torch.randint(0, classes, (args.batch_size,), generator=g).to(device)) for _ in range(2)]
            r = row("end to end", f"{arch} synthetic ({compile})", lambda: timed(
                forever(synth), step, args.warmup, args.iters, device))
            if "failed" in r and compile != "off":  # the step itself: measure the rest eagerly
                compile = "off"
                step = stepper(arch, classes, device, compile, args.width)
                r = row("end to end", f"{arch} synthetic (off)", lambda: timed(
                    forever(synth), step, args.warmup, args.iters, device))
            ref = r.get("images_per_s")
            del synth
            row("end to end", f"{arch} {gpu_label}", lambda: timed(
                forever(input_loader(str(root), "gpu", args.gpu_workers, args, device)), step,
                args.warmup, args.iters, device), ref)
            w = max(workers)
            row("end to end", f"{arch} cpu (PIL, {w} workers)", lambda: timed(
                forever(input_loader(str(root), "cpu", w, args, device)), step, args.warmup, args.iters,
                device), ref)
    if args.out:
        write_table(Path(args.out), head, rows, extra)
    return 0


def _raise(e: BaseException):
    raise e


def write_table(prefix: Path, head: dict, rows: list[dict], extra: dict) -> None:
    """The table as markdown (PREFIX.md) and JSON (PREFIX.json)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# ImageNet input ({head['device']})", "",
             ", ".join(f"{k} {v}" for k, v in head.items() if k != "device"), "",
             "| part | row | images/s | vs ref | cores |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['part']} | {r['row']} | failed: {r['failed']} | | |")
        else:
            lines.append(f"| {r['part']} | {r['row']} | {r['images_per_s']:.0f} | {r['vs']:.2f}x | {r['cores']:.1f} |")
    notes = {"pixels": "GPU path vs PIL path on the same images and draws, |difference| in levels (1/255)",
             "odd": "ILSVRC's odd files (CMYK, grey, PNG as .JPEG, progressive, < 224; truncated, garbage) on the GPU path"}
    for k, v in extra.items():
        lines += ["", f"{notes.get(k, k)}: {json.dumps(v)}"]
    (prefix.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    (prefix.with_suffix(".json")).write_text(json.dumps({"head": head, "rows": rows, **extra}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
