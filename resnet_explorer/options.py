"""How to run a training job, as one object: where, with which helpers, how loud.

`RunOptions` is what the command line's device options, the dashboard's settings and a
notebook's keywords all become; `train`, `run_experiment` and the job processes take it
whole. What a run trains (architecture, data, recipe, seed) is not here: those are the
run's records, checked on a resume. These options may differ between a run and its resume
(except ``threads``, which a run records and a resume on the CPU keeps, for the same numbers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class RunOptions:
    """How to run: see each field. Plain data (JSON-ready with `to_dict`)."""

    device: str = "auto"  # auto (the GPU if any), cpu, cuda, cuda:N
    amp: str = "auto"  # mixed precision: auto (bf16 on a GPU, off on the CPU), bf16, fp16, off
    channels_last: bool | None = None  # NHWC memory format (None: on)
    compile: str | bool = "off"  # torch.compile mode (devices.COMPILE_MODES)
    workers: int | None = None  # ImageNet decoding processes per rank (None: the CPUs, at most 8)
    loader: str = "auto"  # ImageNet's input path: cpu, gpu, auto (gpu on CUDA)
    threads: int | None = None  # CPU threads of this process (None: as it has)
    progress: bool = True  # a progress bar
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch
    dist_backend: str = "auto"  # under torchrun: nccl, gloo, auto

    @classmethod
    def of(cls, options: RunOptions | None = None, **fields: Any) -> RunOptions:
        """``options`` (or the defaults) with ``fields`` changed; an unknown field is one line."""
        base = options if options is not None else cls()
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UsageError(f"unknown run option(s) {', '.join(unknown)}: use "
                             f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        return dataclasses.replace(base, **fields) if fields else base

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
