"""How many processes a loader may use on this machine (its CPUs, shared among the node's ranks)."""

from __future__ import annotations

import os

from ..errors import DataError


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """Loader processes for one training process: ``workers`` if given, else the CPUs it may
    use, shared among the node's ranks under torchrun (``LOCAL_WORLD_SIZE``), at most 8."""
    if workers is None:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return max(1, min(8, available_cpus() // ranks))
    if not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers={workers!r} is invalid: use 0 (load in the training process) or more")
    return workers
