"""Build a `torch.nn.Module` from an `ArchSpec`.

The module is an `nn.Sequential` whose children carry the paper's names, so
``model.conv3_x[0]`` is the first block of conv3_x (the paper's ``conv3_1``)::

    conv1      the stem (a conv stage: conv → bn → relu [→ pool])
    conv2_x …  stages of blocks (basic or bottleneck), each an nn.Sequential of blocks
    avgpool    global average pool + flatten (ResNets)   | flatten (VGG, AlexNet)
    fc6, fc7   hidden FC layers, each followed by relu6/drop6 … (VGG, AlexNet only)
    fc         the classifier

CIFAR nets use the same names: conv1 (3×3, 16), then conv2_x / conv3_x / conv4_x on
32² / 16² / 8² maps. Inside a block: conv1, bn1, conv2, bn2 (, conv3, bn3) and
``shortcut`` (absent in plain nets); ``gate`` (its ``conv``) in gated blocks.

In a post-activation block (the paper) bnK follows convK; in a pre-activation block
(``block_order="pre"``, He et al. 2016) bnK comes *before* convK (BN → ReLU → conv), a
block without its own pre-activation (the first after the stem) has no bn1, and the net
has ``final_act`` (bn, relu) between the last stage and ``avgpool``. See `spec` for the
design of both, and of the highway gate.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .count import count
from .spec import (BOTTLENECK_EXPANSION, GATE_BIAS_INIT, ArchSpec, ConvLayer, Stage, has_final_activation,
                   hidden_fc_names, needs_projection, own_preactivation)

# AlexNet's LRN (k=2, n=5, α=1e-4, β=0.75). PyTorch divides α by n, the paper does not.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


class ShortcutA(nn.Module):
    """Option A: identity, subsampled by taking every ``stride``-th pixel, extra channels zero."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class Conv1x1(nn.Conv2d):
    """A strided 1×1 conv that, on the CPU, takes its stride by subsampling first: the same
    W·x on every ``stride``-th pixel, and the same module (weights, ``stride``, hooks) as
    ``nn.Conv2d``. On a GPU it is the strided conv.

    Why: in torch 2.14.1 on AVX-512 CPUs, oneDNN's weight gradient of a strided 1×1 conv in
    channels_last with 4 or 8 input channels on 56² maps or larger corrupts the heap
    (``double free``, then SIGABRT): ResNet-18 at width 8 on 224² images.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        sh, sw = self.stride
        return nn.functional.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return Conv1x1(in_ch, out_ch, 1, stride, bias=bias) if stride > 1 else nn.Conv2d(in_ch, out_ch, 1, bias=bias)


class Projection(nn.Sequential):
    """Options B/C: W_s·x as a 1×1 conv (strided where the map shrinks) + BN (a bare conv in
    pre-activation blocks, ``bn=False``, as in the 2016 paper's code)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, bn: bool = True):
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv=conv1x1(in_channels, out_channels, stride))
        if bn:
            parts["bn"] = nn.BatchNorm2d(out_channels)
        super().__init__(parts)


def make_shortcut(shortcut: str, in_ch: int, out_ch: int, stride: int, bn: bool = True) -> nn.Module:
    if needs_projection(shortcut, in_ch, out_ch, stride):
        return Projection(in_ch, out_ch, stride, bn)
    if stride != 1 or in_ch != out_ch:
        return ShortcutA(in_ch, out_ch, stride)
    return nn.Identity()


class Gate(nn.Module):
    """The highway transform gate T(x) = σ(W_T·x + b_T): a 1×1 conv (strided like the block)
    and a sigmoid, one gate per output channel and position; b_T starts at `GATE_BIAS_INIT`."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv = conv1x1(in_ch, out_ch, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class _Block(nn.Module):
    """What basic and bottleneck blocks share: the shortcut, the gate, and adding them.

    post (the paper): y = relu(F(x) + S(x)), F ending in its last BN.
    pre (He et al. 2016): y = F(a) + S(a or x), F = [BN → ReLU → conv] × 2 (or 3), a the
    activated input; nothing after the addition. gated: F(x) + S(x) becomes
    T·F + (1 − T)·S = S + T·(F − S), T computed from the shortcut's input.

    ``shortcut`` is None in a plain block, ``gate`` None unless gated, and ``bn1`` None in a
    pre-activation block whose input is already activated (the first after the stem).
    """

    def _setup(self, in_ch: int, out_ch: int, stride: int, residual: bool, shortcut: str,
               order: str, gated: bool) -> None:
        self.order, self.changes = order, stride != 1 or in_ch != out_ch
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = make_shortcut(shortcut, in_ch, out_ch, stride, bn=order == "post") if residual else None
        self.gate = Gate(in_ch, out_ch, stride) if residual and gated else None

    def _preactivate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pre: (the first conv's input BN → ReLU(x), the shortcut's input): where the shape
        changes the shortcut sees the activated input, elsewhere x itself."""
        out = self.relu(self.bn1(x)) if self.bn1 is not None else x
        return out, out if self.changes else x

    def _add_shortcut(self, out: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
        """F + S(into), or the gated S + T·(F − S); F alone in a plain block."""
        if self.shortcut is None:
            return out
        s = self.shortcut(into)
        if self.gate is not None:
            return s + self.gate(into) * (out - s)
        out += s
        return out


class BasicBlock(_Block):
    """Two 3×3 convs: y = relu(F(x) + shortcut(x)); plain when ``residual`` is False.
    ``order="pre"``: BN → ReLU → conv twice, no ReLU after the addition; ``gated``: a highway gate."""

    def __init__(self, in_ch: int, width: int, stride: int, residual: bool, shortcut: str,
                 order: str = "post", gated: bool = False, preact: bool = True):
        super().__init__()
        if order == "post":
            self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
        else:
            self.bn1 = nn.BatchNorm2d(in_ch) if preact else None
            self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self._setup(in_ch, width, stride, residual, shortcut, order, gated)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose γ = 0 makes F(x) = 0 (after the last conv; pre: before it)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "post":
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(self._add_shortcut(out, x))
        out, into = self._preactivate(x)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return self._add_shortcut(out, into)


class Bottleneck(_Block):
    """1×1 reduce → 3×3 → 1×1 expand (×4, `BOTTLENECK_EXPANSION`); the stride sits on the 1×1 ("v1") or the 3×3 ("v1.5").
    ``order="pre"``: each conv preceded by BN → ReLU; ``gated``: a highway gate."""

    def __init__(
        self, in_ch: int, width: int, stride: int, residual: bool, shortcut: str, stride_at: str,
        order: str = "post", gated: bool = False, preact: bool = True,
    ):
        super().__init__()
        out_ch = width * BOTTLENECK_EXPANSION
        s1, s3 = (stride, 1) if stride_at == "1x1" else (1, stride)
        if order == "post":
            self.conv1 = conv1x1(in_ch, width, s1)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, s3, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_ch)
        else:
            self.bn1 = nn.BatchNorm2d(in_ch) if preact else None
            self.conv1 = conv1x1(in_ch, width, s1)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, s3, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self._setup(in_ch, out_ch, stride, residual, shortcut, order, gated)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose γ = 0 makes F(x) = 0 (after the last conv; pre: before it)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "post":
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(self._add_shortcut(out, x))
        out, into = self._preactivate(x)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return self._add_shortcut(out, into)


class ConvUnit(nn.Sequential):
    """One `ConvLayer`: conv [→ bn] [→ relu] [→ lrn] [→ pool]."""

    def __init__(self, in_ch: int, layer: ConvLayer):
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        parts["conv"] = nn.Conv2d(
            in_ch, layer.out_channels, layer.kernel, layer.stride, layer.pad,
            groups=layer.groups, bias=layer.bias,
        )
        if layer.bn:
            parts["bn"] = nn.BatchNorm2d(layer.out_channels)
        if layer.relu:
            parts["relu"] = nn.ReLU(inplace=True)
        if layer.lrn:
            parts["lrn"] = nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA * LRN_SIZE, LRN_BETA, LRN_K)
        if layer.pool:
            parts["pool"] = nn.MaxPool2d(layer.pool.kernel, layer.pool.stride, layer.pool.padding)
        super().__init__(parts)


def build_stage(stage: Stage, in_ch: int, spec: ArchSpec) -> nn.Sequential:
    if stage.is_conv:
        units = []
        for layer in stage.layers:
            units.append(ConvUnit(in_ch, layer))
            in_ch = layer.out_channels
        return nn.Sequential(*units)
    blocks = []
    index = spec.stages.index(stage)
    gated = spec.shortcut_kind == "gated"
    for i in range(stage.num_blocks):
        stride = stage.stride if i == 0 else 1
        kinds = dict(order=spec.block_order, gated=gated, preact=own_preactivation(spec, index, i))
        if stage.block == "basic":
            block = BasicBlock(in_ch, stage.width, stride, spec.residual, spec.shortcut, **kinds)
        else:
            block = Bottleneck(
                in_ch, stage.width, stride, spec.residual, spec.shortcut, spec.stride_at, **kinds
            )
        blocks.append(block)
        in_ch = stage.out_channels
    return nn.Sequential(*blocks)


class Net(nn.Sequential):
    """A network built from an `ArchSpec`; ``net.spec`` is the spec it was built from."""

    def __init__(self, spec: ArchSpec):
        counted = count(spec)  # validates the spec and walks the shapes once
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = spec.in_channels
        for stage in spec.stages:
            parts[stage.name] = build_stage(stage, in_ch, spec)
            in_ch = stage.out_channels
        if has_final_activation(spec):
            parts["final_act"] = nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(in_ch), relu=nn.ReLU(inplace=True)))
        features = counted.row("avgpool").in_shape
        if spec.head.kind == "avgpool-fc":
            parts["avgpool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            width = features[0]
        else:
            parts["avgpool"] = nn.Flatten()
            width = features[0] * features[1] * features[2]
        for name, hidden in zip(hidden_fc_names(spec), spec.head.hidden):
            n = name[2:]
            parts[name] = nn.Linear(width, hidden)
            parts[f"relu{n}"] = nn.ReLU(inplace=True)
            if spec.head.dropout:
                parts[f"drop{n}"] = nn.Dropout(spec.head.dropout)
            width = hidden
        parts["fc"] = nn.Linear(width, spec.num_classes)
        super().__init__(parts)
        self.spec = spec
        init_weights(self, spec)


def init_weights(model: nn.Module, spec: ArchSpec) -> None:
    """He initialisation (He et al. 2015, [13] in the paper) for convs, BN γ=1 β=0.

    With ``zero_init_residual`` the last BN of each residual block starts at γ=0, so
    every residual block starts as the identity (gated: as (1 − T)·S). Gate biases start
    at `GATE_BIAS_INIT`.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if spec.zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)) and m.shortcut is not None:
                nn.init.zeros_(m.last_bn().weight)
    for m in model.modules():
        if isinstance(m, Gate):
            nn.init.constant_(m.conv.bias, GATE_BIAS_INIT)


def build(spec: ArchSpec | str, **overrides) -> Net:
    """Build the module of a spec, or of a named net (``build("resnet50", shortcut="A")``)."""
    if isinstance(spec, str):
        from .zoo import get_spec

        spec = get_spec(spec, **overrides)
    elif overrides:
        spec = spec.replace(**overrides)
    return Net(spec)
