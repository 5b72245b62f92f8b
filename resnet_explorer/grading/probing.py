"""Helpers for probes: seeded inputs and weights, so the solution and a submission see the same.

A probe is a function ``probe(ns, seed) -> dict`` run inside the sandbox: ``ns`` is the
notebook's namespace after its cells ran, ``seed`` is chosen by the grader at grading time.
It calls the submission's functions on seeded inputs and returns their outputs (tensors,
numbers, strings, dicts of them). It judges nothing: the grader compares its outputs with
the same probe's outputs on the solution.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def get(ns: dict[str, Any], name: str) -> Any:
    """The submission's ``name``, or a clear error when the notebook does not define it."""
    if name not in ns:
        raise NameError(f"the notebook does not define {name}")
    return ns[name]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % 2**63)


def seeded(seed: int, *shape: int) -> torch.Tensor:
    """A standard-normal tensor of ``shape`` from ``seed``."""
    return torch.randn(*shape, generator=generator(seed))


@torch.no_grad()
def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every float parameter and buffer from ``seed``, in name order, and eval mode.

    Modules with the same parameter names and shapes get the same values; BN running
    variances stay positive, so eval-mode BN is a fixed per-channel affine map.
    """
    g = generator(seed)
    for name, t in sorted(module.state_dict().items()):
        if not t.dtype.is_floating_point:
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return module.eval()


def parameter_shapes(module: nn.Module) -> str:
    """``name:shape`` of every entry of the state dict, sorted, comma-separated."""
    return ",".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in sorted(module.state_dict().items()))
