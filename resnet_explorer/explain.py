"""Small views inside one residual block and one network, for the walkthrough notebooks.

- `block_steps`: a block's forward pass F(x) + x one step at a time (Sec. 3.2, Eq. 1–2),
  each intermediate tensor kept, so a notebook can print what the identity shortcut adds
  and what the ReLU after the addition removes (`steps_table`).
- `shortcut_rows`: options A, B and C (Sec. 3.3) for one block where the shape changes
  and one where it does not: the module, its parameters and what it does to a tensor.
- `activation_gradient_norms`: ‖∂E/∂x_l‖ at the input x_l of every block (Sec. 3.1's
  ∂E/∂x_l = ∂E/∂x_L · (1 + ∂/∂x_l Σ F)); `norms_figure` draws such per-layer series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import plotly.graph_objects as go
import torch
from torch import nn

from .analysis import as_in_training, conv_bn_pairs, training_loss
from .errors import UsageError
from .figures import norm_trace
from .model import BasicBlock, Bottleneck, make_shortcut


@dataclass
class Step:
    """One intermediate tensor of a block's forward pass."""

    name: str  # e.g. "F(x) + shortcut(x)"
    what: str  # one line: where the tensor comes from
    tensor: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def std(self) -> float:
        return self.tensor.float().std().item()

    @property
    def negative(self) -> float:
        """The fraction of entries below zero (the ReLU after the addition zeroes them)."""
        return (self.tensor < 0).float().mean().item()


@torch.no_grad()
def block_steps(block: BasicBlock | Bottleneck, x: torch.Tensor) -> list[Step]:
    """The forward pass of ``block`` on ``x`` step by step: x, each conv → BN (→ ReLU) of the
    residual branch F, the shortcut, F(x) + shortcut(x), and the ReLU after the addition.

    The last step equals ``block(x)``; plain blocks (no shortcut) skip the shortcut steps.
    The block's train/eval mode is used as it is (call ``block.eval()`` for running statistics).
    Post-activation blocks with identity shortcuts only (the paper's block).
    """
    if block.order != "post" or block.gate is not None:
        raise UsageError("block_steps follows the paper's block (post-activation, identity shortcut); "
                         "this block is pre-activation or gated: run it whole, block(x)")
    convs = [(conv, bn) for _, conv, bn in conv_bn_pairs(block, kernel=None)]
    steps = [Step("x", "the block's input (the previous block's output, after its ReLU)", x)]
    h = x
    for i, (conv, bn) in enumerate(convs, 1):
        h = bn(conv(h))
        k = conv.kernel_size[0]
        if i < len(convs):
            h = torch.relu(h)
            steps.append(Step(f"relu(bn{i}(conv{i}))", f"{k}x{k} conv, {conv.out_channels} filters, BN, ReLU", h))
        else:
            steps.append(Step("F(x)", f"{k}x{k} conv, {conv.out_channels} filters, BN: the residual branch", h))
    fx = h
    if block.shortcut is not None:
        sc = block.shortcut(x)
        kind = type(block.shortcut).__name__
        what = {"Identity": "the identity shortcut: x itself",
                "ShortcutA": "option A: every other pixel, extra channels zero",
                "Projection": "a projection W_s x (1x1 conv + BN)"}.get(kind, kind)
        steps.append(Step("shortcut(x)", what, sc))
        fx = fx + sc
        steps.append(Step("F(x) + shortcut(x)", "the addition, before the second ReLU", fx))
    steps.append(Step("y = relu(...)", "the block's output, after the ReLU that follows the addition",
                      torch.relu(fx)))
    return steps


def steps_table(steps: Sequence[Step]) -> str:
    """A text table of `block_steps`: shape, std and the fraction of negative entries."""
    width = max(len(s.name) for s in steps)
    lines = [f"{'step':<{width}}  {'shape':<16}{'std':>8}{'< 0':>8}  what"]
    for s in steps:
        lines.append(f"{s.name:<{width}}  {'x'.join(map(str, s.shape[1:])):<16}{s.std:>8.3f}"
                     f"{s.negative:>8.1%}  {s.what}")
    return "\n".join(lines)


def shortcut_rows(in_channels: int = 16, out_channels: int = 32, stride: int = 2,
                  x: torch.Tensor | None = None) -> list[dict]:
    """Options A, B and C for a block that changes shape (``in_channels`` → ``out_channels``,
    ``stride``) and for one that keeps it: the module each option uses, its parameters,
    and the output of the changing one on ``x`` (default: a fixed random 1×C×8×8 input)."""
    if x is None:
        x = torch.randn(1, in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    rows = []
    for option in "ABC":
        down = make_shortcut(option, in_channels, out_channels, stride)
        same = make_shortcut(option, out_channels, out_channels, 1)
        with torch.no_grad():
            y = down.eval()(x)
        rows.append({
            "option": option,
            "downsampling": type(down).__name__,
            "downsampling_params": sum(p.numel() for p in down.parameters()),
            "same_shape": type(same).__name__,
            "same_shape_params": sum(p.numel() for p in same.parameters()),
            "out_shape": tuple(y.shape),
            "zero_channels": int((y.flatten(2).abs().sum(-1) == 0).sum().item()),
        })
    return rows


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every residual or plain block (and each stage of a VGG-style net) in network order."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    return blocks or [(n, m) for n, m in model.named_children() if n.startswith("conv")]


def activation_gradient_norms(model: nn.Module, images: torch.Tensor,
                              labels: torch.Tensor) -> list[tuple[str, float]]:
    """‖∂E/∂x_l‖ at the input x_l of each block (input to output), E the cross-entropy loss.

    With shortcuts, ∂E/∂x_l = ∂E/∂x_L · (1 + ∂/∂x_l Σ F): the 1 carries the gradient back to
    every block undiminished. Plain nets have only the product of the layers' Jacobians.
    Computed in training mode (batch statistics); the model's weights, gradients and BN
    running statistics are left as they were.
    """
    blocks = _blocks(model)
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            inputs[name] = args[0]
        return hook

    handles = [m.register_forward_pre_hook(keep(n)) for n, m in blocks]
    try:
        with as_in_training(model):
            loss = training_loss(model, images, labels)
            names = [n for n, _ in blocks if n in inputs and inputs[n].requires_grad]
            grads = torch.autograd.grad(loss, [inputs[n] for n in names])
    finally:
        for h in handles:
            h.remove()
    return [(n, g.norm().item()) for n, g in zip(names, grads)]


def norms_figure(series: Mapping[str, Sequence[tuple[str, float]]], title: str,
                 yaxis_title: str = "norm", log: bool = True,
                 xaxis_title: str = "layer index (input → output)") -> go.Figure:
    """One line per entry of ``series`` ({label: [(layer name, value), ...]}), their index on x
    (``xaxis_title`` says what is counted: layers, or blocks for `activation_gradient_norms`).

    Labels starting with "plain" are dashed, as in the paper's figures.
    """
    fig = go.Figure()
    for label, pairs in series.items():
        fig.add_trace(norm_trace(label, pairs, "dash" if label.lower().startswith("plain") else "solid"))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title,
                      yaxis_type="log" if log else "linear", height=420)
    if log:
        fig.update_yaxes(exponentformat="power")
    return fig


def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, cols: int = 5,
               row_height: int = 200, title: str = "") -> go.Figure:
    """Images side by side (C×H×W tensors: float in [0, 1], clipped, or uint8), ``cols`` a row."""
    from plotly.subplots import make_subplots

    rows = max(1, -(-len(images) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles or []) or None,
                        horizontal_spacing=0.02, vertical_spacing=0.08)
    for i, img in enumerate(images):
        img = img.detach().cpu()
        if img.is_floating_point():
            img = (img.clamp(0, 1) * 255).round()
        fig.add_trace(go.Image(z=img.to(torch.uint8).permute(1, 2, 0).numpy()), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=row_height * rows + 60, title=title, margin=dict(l=10, r=10, t=60, b=10))
    return fig
