"""Where a net runs and with which helpers: the device, mixed precision, memory format, compile.

`pick_device` turns ``--device`` into a `torch.device`; `Accel` holds the GPU helpers
(``--amp``, ``--channels-last``, ``--compile``) resolved for that device, and applies them
(autocast, the model's memory format, cuDNN autotuning). Training and evaluation both ask
this module, so a choice made once means the same everywhere.
"""

from __future__ import annotations

import platform
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from .errors import TrainingError

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AMP_MODES = ("off", "bf16", "fp16")


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but PyTorch sees no GPU: use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise TrainingError(f"device {device!r} is invalid: use auto, cpu or cuda") from None


@dataclass
class Accel:
    """The GPU helpers: mixed precision, memory format, compilation."""

    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False
    compile: str = "off"  # off | default | reduce-overhead (CUDA graphs) | max-autotune

    @classmethod
    def resolve(cls, device: torch.device, amp: str = "auto", channels_last: bool | None = None,
                compile: str | bool = "off") -> Accel:
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
        return cls(amp, channels_last, compile)

    def autocast(self, device: torch.device):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to the device in the chosen memory format; cuDNN autotuning on GPUs."""
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
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
        "argv": sys.argv,
    }
