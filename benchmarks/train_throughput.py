"""Training images/s: a plain reference loop vs our engine with each GPU helper on or off.

    python benchmarks/train_throughput.py [--archs cifar-resnet20,cifar-resnet56,cifar-resnet110]
                                          [--iters 30] [--warmup 10] [--device auto]

The reference is what a tutorial writes: a torch DataLoader over the images with
torchvision transforms (pad-4 crop, flip, normalise) in worker processes, an fp32 eager
model, batch 128. Ours is the engine's own pieces: the device-resident loader
(`data.GpuCifarLoader`) and the `train.Stepper` with the helpers of each row. On a GPU,
resnet50 at 224x224 on synthetic data is added. All rows are measured in one run and
printed as one table with ratios to the reference.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(batches, step, warmup: int, iters: int, device: torch.device) -> tuple[float, int]:
    """(seconds, images) of ``iters`` steps of ``step`` after ``warmup`` steps."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    _sync(device)
    t = time.perf_counter()
    n = 0
    for _ in range(iters):
        x, y = next(it)
        step(x, y)
        n += y.shape[0]
    _sync(device)
    return time.perf_counter() - t, n


def _time_loop(batches, step, warmup: int, iters: int, device: torch.device) -> float:
    """images/s of ``step`` over ``iters`` batches after ``warmup`` batches."""
    seconds, images = timed_steps(batches, step, warmup, iters, device)
    return images / seconds


def cycle(loader):
    while True:
        yield from loader


class _UInt8Images(torch.utils.data.Dataset):
    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def reference(spec, x, y, device, batch_size, warmup, iters, workers, crop):
    """DataLoader + torchvision transforms + fp32 eager model + SGD."""
    from torchvision.transforms import v2

    from resnet_explorer import build

    mean = (x.float().mean((0, 2, 3)) / 255).tolist()
    aug = [v2.RandomCrop(crop, padding=4)] if crop == x.shape[-1] else [v2.RandomCrop(crop)]
    tf = v2.Compose([*aug, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(mean, [1.0, 1.0, 1.0])])
    loader = torch.utils.data.DataLoader(
        _UInt8Images(x, y, tf), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    model = build(spec).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    crit = nn.CrossEntropyLoss()

    def step(xb, yb):
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = crit(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _time_loop(cycle(loader), step, warmup, iters, device)


def ours(spec, x, y, device, batch_size, warmup, iters, amp, channels_last, compile):
    from resnet_explorer import build
    from resnet_explorer.data import GpuCifarLoader, pixel_mean
    from resnet_explorer.devices import Accel
    from resnet_explorer.step import Stepper

    accel = Accel.resolve(device, amp, channels_last, compile)
    torch.manual_seed(0)
    model = accel.prepare(build(spec), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = Stepper(model, opt, accel, device)
    loader = GpuCifarLoader(x, y, batch_size, device, True, pixel_mean(x), channels_last=channels_last)
    return _time_loop(cycle(loader), lambda xb, yb: step(xb, yb, 0.1), warmup, iters, device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="cifar-resnet20,cifar-resnet56,cifar-resnet110")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=5000, help="synthetic images per arch")
    p.add_argument("--configs", help="only these rows of ours, e.g. fp32,bf16+channels_last")
    p.add_argument("--imagenet", default="resnet50",
                   help="ImageNet nets measured at 224x224 on a GPU (empty: none)")
    args = p.parse_args(argv)

    from resnet_explorer import get_spec
    from resnet_explorer.data import synthetic_cifar
    from resnet_explorer.devices import pick_device

    device = pick_device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    gpu = device.type == "cuda"
    configs = [("fp32", "off", False, "off")]
    if gpu:
        configs += [("bf16", "bf16", False, "off"), ("bf16+channels_last", "bf16", True, "off"),
                    ("bf16+cl+compile", "bf16", True, "default"),
                    ("bf16+cl+compile(cudagraphs)", "bf16", True, "reduce-overhead")]
    else:
        configs += [("fp32+channels_last", "off", True, "off")]
    if args.configs:
        configs = [c for c in configs if c[0] in args.configs.split(",")]
    x, y, _, _ = synthetic_cifar(args.images, 10, seed=0)
    jobs = [(a, x, y, 32) for a in args.archs.split(",") if a]
    if gpu:
        big = torch.randint(0, 256, (args.batch_size * 8, 3, 256, 256), dtype=torch.uint8)
        for arch in filter(None, args.imagenet.split(",")):
            jobs.append((arch, big, torch.randint(0, 1000, (big.shape[0],)), 224))

    print(f"device: {torch.cuda.get_device_name(device) if gpu else 'cpu'} "
          f"({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{args.iters} timed iterations after {args.warmup}")
    print(f"{'arch':<18}{'loop':<30}{'images/s':>10}{'vs reference':>14}")
    for arch, xs, ys, crop in jobs:
        spec = get_spec(arch)
        ref = reference(spec, xs, ys, device, args.batch_size, args.warmup, args.iters, args.workers, crop)
        print(f"{arch:<18}{'reference (DataLoader, fp32)':<30}{ref:>10.0f}{1.0:>13.2f}x", flush=True)
        if crop != xs.shape[-1]:  # ImageNet-size: the resident loader takes pre-cropped images
            xs = xs[:, :, :crop, :crop].contiguous()
        for label, amp, cl, comp in configs:
            try:
                v = ours(spec, xs, ys, device, args.batch_size, args.warmup, args.iters, amp, cl, comp)
                print(f"{'':<18}{'ours ' + label:<30}{v:>10.0f}{v / ref:>13.2f}x", flush=True)
            except Exception as e:  # a helper that fails here is reported, not hidden
                print(f"{'':<18}{'ours ' + label:<30}{'failed':>10}  {type(e).__name__}: {str(e)[:60]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
