"""What the paper looks at inside a network: layer responses (Fig. 7) and gradient flow,
and, for gated (highway) nets, how open their gates are (`gate_means`).

All work on any model built from a spec, freshly initialised or loaded from a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .model import BasicBlock, Bottleneck, ConvUnit, Gate


@dataclass
class LayerResponse:
    name: str  # the module whose output is measured, e.g. conv3_x.0.bn2 (see `conv_bn_pairs`)
    std: float


def conv_bn_pairs(model: nn.Module, kernel: int | None = 3) -> list[tuple[str, nn.Conv2d, nn.Module]]:
    """(name of the BN, its conv, the BN) in network order, for convs of ``kernel`` size.

    The BN is the one that normalises the conv's output. In a pre-activation block
    (BN → ReLU → conv) that is the *next* conv's BN (conv1 → bn2), and the block's last conv
    has none inside the block: its pair is (its own name, the conv, the conv), so what is
    measured there is the raw residual F(x) before the addition — in a post-activation
    block the last BN's output is F(x) too, so both orders measure each conv's normalised
    output and the residual F(x) itself.
    """
    pairs = []
    for name, m in model.named_modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            n = 3 if isinstance(m, Bottleneck) else 2
            for i in range(1, n + 1):
                conv = getattr(m, f"conv{i}")
                if m.order == "post":
                    pairs.append((f"{name}.bn{i}", conv, getattr(m, f"bn{i}")))
                elif i < n:
                    pairs.append((f"{name}.bn{i + 1}", conv, getattr(m, f"bn{i + 1}")))
                else:
                    pairs.append((f"{name}.conv{i}", conv, conv))
        elif isinstance(m, ConvUnit) and hasattr(m, "bn"):
            pairs.append((f"{name}.bn", m.conv, m.bn))
    return [p for p in pairs if kernel is None or p[1].kernel_size == (kernel, kernel)]


def response_std(t: torch.Tensor) -> float:
    """The std of a layer's responses: each channel's std over the batch and positions,
    averaged over channels (BN normalises per channel, so this is what it scales)."""
    return t.detach().float().transpose(0, 1).flatten(1).std(1).mean().item()


@torch.no_grad()
def layer_responses(model: nn.Module, images: torch.Tensor) -> list[LayerResponse]:
    """Fig. 7: the std of each 3×3 layer's output after its BN, before the ReLU / addition
    (pre-activation blocks: see `conv_bn_pairs` for what is measured there).

    Measured inside a forward hook on the BN: the ReLU (in place) and the shortcut
    addition (``+=``) overwrite that tensor later in the forward pass.
    """
    pairs = conv_bn_pairs(model)
    found: dict[str, float] = {}
    handles = [
        bn.register_forward_hook(lambda mod, inp, out, name=name: found.__setitem__(name, response_std(out)))
        for name, _, bn in pairs
    ]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(images.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [LayerResponse(name, found[name]) for name, _, _ in pairs]


@dataclass
class GateMean:
    name: str  # the block, e.g. conv3_x.0
    mean: float  # the mean of T(x) over the batch, channels and positions
    std: float  # its spread over the same entries


@torch.no_grad()
def gate_means(model: nn.Module, images: torch.Tensor) -> list[GateMean]:
    """For a gated (highway) net, the mean of each block's gate T(x) on ``images``, input to
    output (eval mode). T near 1: the block passes F(x) and closes its shortcut (it acts as
    a plain layer); near 0: it carries S(x) and skips F. Empty for nets without gates."""
    gates = [(name.removesuffix(".gate"), m) for name, m in model.named_modules() if isinstance(m, Gate)]
    found: dict[str, GateMean] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            t = out.detach().float()
            found[name] = GateMean(name, t.mean().item(), t.std().item())
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in gates]
    was_training = model.training
    model.eval()
    try:
        if gates:
            model(images.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [found[n] for n, _ in gates]


def gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[tuple[str, float]]:
    """The L2 norm of the loss gradient for each conv and fc weight, input to output.

    In plain nets these shrink toward the input; the shortcuts carry gradient straight
    back (∂E/∂x_l = ∂E/∂x_L · (1 + ∂/∂x_l Σ F)). Computed in training mode (batch
    statistics), as during training; the model's gradients are left untouched.
    """
    named = [(n, p) for n, p in model.named_parameters()
             if n.endswith("weight") and p.dim() in (2, 4)]
    with as_in_training(model):
        grads = torch.autograd.grad(training_loss(model, images, labels), [p for _, p in named])
    return [(n.removesuffix(".weight"), g.norm().item()) for (n, _), g in zip(named, grads)]


@contextmanager
def as_in_training(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in training mode (batch statistics) for a measurement, then put back
    its mode and its BN running statistics, which the forward pass would have moved."""
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])


def training_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy loss of ``model`` on a batch, moved to the model's device."""
    device = next(model.parameters()).device
    return nn.functional.cross_entropy(model(images.to(device)), labels.to(device))
