"""Data-parallel training images/s: 1 process vs N processes (torchrun), and DDP's overhead.

    python benchmarks/ddp_throughput.py [--procs 1,2] [--arch cifar-resnet20] [--batch 128]
                                        [--iters 30] [--warmup 5] [--device cpu]
    python benchmarks/ddp_throughput.py --device cuda          # + ResNet-50: DDP vs no DDP

Each row of N > 1 starts ``torchrun --standalone --nproc_per_node=N`` on this script in
worker mode (the row of 1 runs in this process): the engine's own pieces (the resident loader, each rank its slice of the global batch, and
`train.Stepper` around DDP; one process runs without DDP, as `train()` does), timed after a
warm-up. The global batch is the same in every row. On the CPU the cores are shared out:
each process gets ``--threads / N`` threads (default: all cores), so the rows compare the
same machine used by one process or split between N; ``--threads-per-proc 1`` gives each
process one core instead (1 core vs N cores). On a loaded machine, several OpenMP threads
in one process can be much slower than one: the ``threads`` column says which was measured.

With ``--device cuda`` the script also measures, in this process, ResNet-50 at 224x224
(synthetic tensors already on the GPU, bf16, channels-last) with and without a DDP wrapper
on a one-process NCCL group: the overhead of the wrapper alone (gradient bucketing and the
all-reduce hooks) on a single GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import torch

from train_throughput import cycle, timed_steps  # the sibling benchmark's timing loop

RESULT = "RESULT "


def worker(args: argparse.Namespace) -> dict:
    """One rank of a row: the engine's step on this rank's slices, timed (the result is rank 0's)."""
    import torch.distributed as dist

    from resnet_explorer import build, get_spec
    from resnet_explorer import distributed as D
    from resnet_explorer.data import GpuCifarLoader, pixel_mean, synthetic_cifar
    from resnet_explorer.devices import Accel, pick_device
    from resnet_explorer.step import Stepper

    launch = D.launch_env()
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads_per_proc or max(1, args.threads // launch.world_size))
    env, device = D.setup(launch, device, D.check_launch(launch, device, "auto", False, args.batch))
    accel = Accel.resolve(device)
    torch.manual_seed(0)
    model = accel.prepare(build(get_spec(args.arch, **({"width": args.width} if args.width else {}))), device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = Stepper(model, opt, accel, device, forward=D.wrap(model, env, device))
    x, y, _, _ = synthetic_cifar(args.images, 10, seed=0)
    loader = GpuCifarLoader(x, y, args.batch, device, True, pixel_mean(x), channels_last=accel.channels_last,
                            rank=env.rank, world_size=env.world_size)
    seconds, _ = timed_steps(cycle(loader), lambda xb, yb: step(xb, yb, 0.1), args.warmup, args.iters, device)
    slowest = seconds
    if env.enabled:  # the job is as fast as its slowest rank
        t = torch.tensor([seconds], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        slowest = t.item()
    D.teardown(env, ok=True)
    return {"procs": env.world_size, "threads": torch.get_num_threads(),
            "images_per_s": args.iters * args.batch / slowest}


def run_row(args: argparse.Namespace, procs: int) -> dict:
    """One row: torchrun with ``procs`` processes on this script in worker mode (one process:
    here, without torchrun or DDP, as a plain ``train`` runs)."""
    if procs == 1:
        return worker(args)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
           os.path.abspath(__file__), "--worker", "--arch", args.arch, "--batch", str(args.batch),
           "--iters", str(args.iters), "--warmup", str(args.warmup), "--images", str(args.images),
           "--threads", str(args.threads), "--device", args.device]
    if args.width:
        cmd += ["--width", str(args.width)]
    if args.threads_per_proc:
        cmd += ["--threads-per-proc", str(args.threads_per_proc)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in r.stdout.splitlines() if line.startswith(RESULT)]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"{procs} processes failed:\n{r.stderr[-2000:]}")
    return json.loads(lines[0][len(RESULT):])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_overhead(args: argparse.Namespace) -> list[tuple[str, float]]:
    """ResNet-50 images/s on one GPU: the bare model, then the same in DDP on a 1-rank NCCL group."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resnet_explorer import build, get_spec
    from resnet_explorer.devices import Accel
    from resnet_explorer.step import Stepper

    device = torch.device("cuda", 0)
    accel = Accel.resolve(device)
    x = torch.randn(args.gpu_batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.gpu_batch,), device=device)
    batches = iter(lambda: (x, y), None)
    rows = []
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("nccl", world_size=1, rank=0, device_id=device)
    try:
        for label, wrap in (("resnet50, no DDP", False), ("resnet50, DDP (1 GPU)", True)):
            torch.manual_seed(0)
            model = accel.prepare(build(get_spec("resnet50")), device)
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            forward = DistributedDataParallel(model, device_ids=[0]) if wrap else None
            step = Stepper(model, opt, accel, device, forward=forward)
            s, _ = timed_steps(batches, lambda xb, yb: step(xb, yb, 0.1), args.warmup, args.iters, device)
            rows.append((label, args.iters * args.gpu_batch / s))
            del model, opt, forward, step
            torch.cuda.empty_cache()
    finally:
        dist.destroy_process_group()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2", help="process counts, one row each")
    p.add_argument("--arch", default="cifar-resnet20")
    p.add_argument("--width", type=int, help="the net's first width (default: its own)")
    p.add_argument("--batch", type=int, default=128, help="the global batch (split across processes)")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--images", type=int, default=5000, help="synthetic training images")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the processes")
    p.add_argument("--threads-per-proc", type=int,
                   help="CPU threads of each process instead (e.g. 1: one core per process)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process, + the DDP overhead rows)")
    p.add_argument("--gpu-batch", type=int, default=128, help="the ResNet-50 batch of the overhead rows")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(RESULT + json.dumps(result), flush=True)
        return 0

    procs = [int(n) for n in args.procs.split(",")]
    if args.device.startswith("cuda"):
        procs = [n for n in procs if n <= torch.cuda.device_count()]
        where = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        where = f"cpu, {args.threads} threads in all"
    print(f"{args.arch}, global batch {args.batch}, {args.iters} timed iterations after {args.warmup}; {where}")
    print(f"{'procs':<7}{'threads':>8}{'batch/proc':>11}{'images/s':>10}{'vs 1 proc':>11}")
    base = None
    for n in procs:
        r = run_row(args, n)
        base = base or r["images_per_s"]
        print(f"{n:<7}{r['threads']:>8}{args.batch // n:>11}{r['images_per_s']:>10.0f}"
              f"{r['images_per_s'] / base:>10.2f}x", flush=True)
    if args.device.startswith("cuda"):
        rows = ddp_overhead(args)
        print(f"\nDDP wrapper overhead on one GPU (batch {args.gpu_batch}, 224x224, bf16, channels-last)")
        for label, v in rows:
            print(f"  {label:<24}{v:>10.0f} images/s{v / rows[0][1]:>8.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
