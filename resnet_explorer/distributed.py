"""Data-parallel training with PyTorch's own engine: torch.distributed, DistributedDataParallel,
launched by ``torchrun`` (as the paper trained: each batch split across GPUs, gradients averaged).

``resnet-explorer train ...`` started by ``torchrun --nproc_per_node=N`` (one node or many)
finds ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment and joins the process
group (``env://``; NCCL on GPUs, gloo on CPUs). Without them, or with ``WORLD_SIZE=1``,
nothing here does anything and a run is the plain single-process one.

The design, which makes N processes equal to one:

- every rank draws the same global batch order and augmentation as a single process
  would, and takes its contiguous slice of each global batch (``global / world_size``
  images; the recipe's batch size is the global batch);
- DDP averages the gradients of the per-rank mean losses, which (equal slices) is the
  gradient of the global batch's mean loss;
- the position in the data (epoch, batch in epoch, iteration) counts global batches, so
  a checkpoint resumes on any number of ranks that divides the batch;
- training sums (loss, errors) and evaluation sums are all-reduced; only rank 0 writes
  the run directory, and it saves the unwrapped model, so checkpoints are the same as a
  single process's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import DistributedError

BACKENDS = ("auto", "nccl", "gloo")
TIMEOUT_ENV = "RESNET_EXPLORER_DIST_TIMEOUT"  # seconds a collective may wait for a rank
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the job: its rank, its node-local rank, the world size."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # None: a single process, no process group
    owns_group: bool = False  # whether train() created the group (and so destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend,
                "nnodes": int(os.environ.get("GROUP_WORLD_SIZE", 1)) if self.enabled else 1}


def launch_env() -> DistEnv:
    """The rank, local rank and world size this process was launched with (torchrun's
    environment variables, or an already initialised process group); a single process
    otherwise. Joins nothing."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(),
                       dist.get_backend())
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DistributedError("WORLD_SIZE, RANK and LOCAL_RANK must be integers: start the job "
                               "with torchrun, which sets them") from None
    return DistEnv(rank, local, world) if world > 1 else DistEnv()


def check_launch(env: DistEnv, device: torch.device, backend: str = "auto",
                 sync_bn: bool = False, batch_size: int | None = None) -> str | None:
    """The backend to use (None for one process); a `DistributedError` naming the fix for a
    launch that cannot work. Checks only arguments and the machine: nothing is joined."""
    if backend not in BACKENDS:
        raise DistributedError(f"--dist-backend {backend!r} is invalid: use auto, nccl or gloo")
    if not env.enabled:
        return None
    if backend == "nccl" and device.type != "cuda":
        raise DistributedError("--dist-backend nccl needs GPUs (NCCL runs on CUDA devices only): "
                               "use --dist-backend gloo (or auto) with --device cpu")
    if sync_bn and device.type != "cuda":
        raise DistributedError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only): "
                               "leave it off on the CPU, where each process normalises its own slice")
    if device.type == "cuda" and env.local_rank >= torch.cuda.device_count():
        raise DistributedError(f"this process has LOCAL_RANK {env.local_rank} but the node has "
                               f"{torch.cuda.device_count()} GPU(s): start at most that many processes "
                               "per node (torchrun --nproc_per_node)")
    if batch_size is not None:
        check_divisible(batch_size, env.world_size)
    return backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")


def check_divisible(batch_size: int, world_size: int) -> None:
    """The global batch must split into equal per-rank slices."""
    if world_size > 1 and batch_size % world_size:
        raise DistributedError(
            f"the global batch of {batch_size} images does not split evenly across {world_size} "
            f"processes: use a number of processes that divides {batch_size}, or --set batch_size=N "
            f"with N a multiple of {world_size} (for a new run)")


def timeout() -> timedelta:
    """How long a collective waits for the other ranks before failing (``$RESNET_EXPLORER_DIST_TIMEOUT``)."""
    try:
        return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        raise DistributedError(f"{TIMEOUT_ENV} must be a number of seconds") from None


def setup(env: DistEnv, device: torch.device, backend: str | None) -> tuple[DistEnv, torch.device]:
    """Join the process group (``env://``, as torchrun sets it up) and pick this rank's GPU.
    A single process, or a group someone else created, is returned as it is."""
    if not env.enabled:
        return env, device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return env, device
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://", "timeout": timeout()}
    if backend == "nccl":
        kwargs["device_id"] = device  # binds the communicator to this rank's GPU
    dist.init_process_group(**kwargs)
    return DistEnv(env.rank, env.local_rank, env.world_size, backend, owns_group=True), device


def teardown(env: DistEnv, ok: bool) -> None:
    """Leave the process group train() created; after a barrier when all went well, so no
    rank leaves while rank 0 is still writing."""
    if env.owns_group and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around ``model`` (with SyncBatchNorm if asked)
    for several ranks, ``model`` itself for one. ``model`` stays the unwrapped module that
    checkpoints save."""
    if not env.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def convert_sync_bn(model: nn.Module, env: DistEnv, sync_bn: bool) -> nn.Module:
    """BatchNorm layers whose statistics span the whole global batch (several GPUs only)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn and env.enabled else model


def all_reduce_sum(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over all ranks (a copy; ``t`` itself for one process)."""
    if not env.enabled:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def any_rank(env: DistEnv, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on some rank (every rank gets the same answer)."""
    if not env.enabled:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``torch.distributed.broadcast_object_list``)."""
    if not env.enabled:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(env: DistEnv, model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running statistics), as evaluated and saved."""
    if env.enabled:
        for b in model.buffers():
            dist.broadcast(b.data, 0)


def shard(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous slice of the batch ``[start, stop)``: equal slices when the
    batch divides, the last ranks shorter (possibly empty) otherwise."""
    per = -(-(stop - start) // world_size)
    lo = min(stop, start + rank * per)
    return lo, min(stop, lo + per)


def is_comm_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because a peer died or hung."""
    text = str(e)
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and (
        "gloo" in text or "NCCL" in text or "Connection reset" in text or "timed out" in text.lower()))
