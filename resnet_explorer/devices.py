"""Where a net runs and with which helpers: the device, mixed precision, memory format, compile.

`pick_device` turns ``--device`` into a `torch.device`; `Accel` holds the GPU helpers
(``--amp``, ``--channels-last``, ``--compile``) resolved for that device, and applies them
(autocast, the model's memory format, cuDNN autotuning). Training and evaluation both ask
this module, so a choice made once means the same everywhere.
"""

from __future__ import annotations

import os
import platform
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .count import training_memory
from .errors import TrainingError
from .spec import ArchSpec

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "step")
AMP_MODES = ("off", "bf16", "fp16")


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU if there is one, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` by name
    (a device PyTorch knows but we cannot train on, like ``meta``, is one line)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrainingError(f"device {device!r} is invalid: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "mps" and torch.backends.mps.is_available():
        return dev
    if dev.type not in ("cpu", "cuda"):
        raise TrainingError(f"device {device!r} cannot train or evaluate a net: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda asked for, but PyTorch sees no GPU: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), "
                                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def device_memory(device: torch.device) -> int | None:
    """The bytes a run may use on ``device``: a GPU's total memory, or the RAM now available
    on the CPU (``MemAvailable``); None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(spec: ArchSpec, batch: int, device: torch.device, amp: str = "off") -> None:
    """Refuse at once a net whose training step cannot fit ``device`` (`count.training_memory`
    is a lower bound), rather than fail after minutes of allocating."""
    need = training_memory(spec, batch, 2 if amp != "off" else 4)
    have = device_memory(device)
    if have is not None and need > have:
        where = f"the GPU has {have / 2**30:.1f} GiB" if device.type == "cuda" else f"{have / 2**30:.1f} GiB of RAM is free"
        raise TrainingError(f"{spec.name} at batch {batch} needs at least {need / 2**30:,.1f} GiB to train but "
                            f"{where}: use a narrower (--width) or shallower net, or --set batch_size=N")


@dataclass
class Accel:
    """The GPU helpers: mixed precision, memory format, compilation."""

    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False
    compile: str = "off"  # off | default | reduce-overhead (CUDA graphs) | max-autotune | step (`step.WholeStep`)
    tf32: bool = True  # GPU float32 convs and matmuls in TF32 (RESNET_EXPLORER_TF32=0: true fp32)

    @classmethod
    def resolve(cls, device: torch.device, amp: str = "auto", channels_last: bool | None = None,
                compile: str | bool = "off", tf32: bool | None = None) -> Accel:
        compile = {True: "default", False: "off", None: "off"}.get(compile, compile)
        if compile not in COMPILE_MODES:
            raise TrainingError(f"--compile {compile!r} is invalid: use one of {', '.join(COMPILE_MODES)}")
        if amp == "auto":
            amp = "bf16" if device.type == "cuda" else "off"
        if amp not in AMP_MODES:
            raise TrainingError(f"--amp {amp!r} is invalid: use bf16, fp16 or off")
        if amp == "fp16" and device.type != "cuda":
            raise TrainingError("--amp fp16 needs a GPU: use bf16 or off on the CPU")
        if channels_last is None:
            channels_last = True  # faster on GPUs and, measured, on the CPU too (benchmarks/)
        if tf32 is None:
            tf32 = os.environ.get("RESNET_EXPLORER_TF32", "1") != "0"
        return cls(amp, channels_last, compile, tf32)

    def autocast(self, device: torch.device):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to the device in the chosen memory format; cuDNN autotuning and the
        TF32 choice (for the whole process) on GPUs."""
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
        return model


def environment(device: torch.device, accel: Accel) -> dict:
    """Versions, the device and the helpers in use: what a run records in env.json."""
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "amp": accel.amp,
        "channels_last": accel.channels_last,
        "compile": accel.compile,
        "tf32": accel.tf32 if device.type == "cuda" else None,
        "argv": sys.argv,
    }
