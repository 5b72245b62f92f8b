"""Analytic parameter and multiply-add counting, straight from an `ArchSpec`.

No forward pass, no module: the spec is walked once, shapes are propagated, and every
layer gets a row named like its module in the built model (``conv3_x.0.conv1``).

Convention (the paper's): one multiply-add = one FLOP, and only conv and fc layers are
counted (biases not). ``other_ops`` is a separate, optional column for the rest:
BN one multiply-add per element (scale and shift folded), the shortcut addition one
op per element, max-pool k² comparisons and global average pool one add per input
element; ReLU, LRN and dropout are not counted.

Gated blocks add the gate's 1×1 conv (``…gate.conv``, with its bias) to the parameters and
multiply-adds; their gated addition S + T·(F − S) costs 3 other ops per element (the
sigmoid, like the ReLU, is not counted). Pre-activation blocks move the BNs before the
convs (``…bn1`` on the block's input), drop a first block's own BN where the stem's is its
pre-activation, use bare 1×1 projections, and add ``final_act.bn`` before the pool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .spec import (ArchSpec, ConvLayer, SpecError, Stage, has_final_activation, hidden_fc_names,
                   needs_projection, own_preactivation)

Shape = tuple[int, int, int]  # (channels, height, width)
CONVENTION = "1 multiply-add = 1 FLOP; conv and fc layers counted (the paper's convention)"


def si(n: float) -> str:
    """A count in SI units, three significant digits or so: 1234567 -> '1.23 M', 3.6e9 -> '3.60 G'."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


@dataclass
class LayerCount:
    """One layer: its shapes, parameters, multiply-adds and (separately) other ops."""

    name: str
    kind: str  # conv | bn | fc | pool | avgpool | add | shortcut
    in_shape: Shape
    out_shape: Shape
    params: int = 0
    macs: int = 0
    other_ops: int = 0

    @property
    def stage(self) -> str:
        return self.name.split(".")[0]


@dataclass
class Count:
    """Per-layer counts of one spec, with totals and per-stage sums."""

    arch: str
    input_size: int
    rows: list[LayerCount] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def other_ops(self) -> int:
        return sum(r.other_ops for r in self.rows)

    def row(self, name: str) -> LayerCount:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def by_stage(self) -> dict[str, dict[str, int]]:
        """{stage: {"params", "macs", "other_ops", "out": output shape}} in network order."""
        out: dict[str, dict] = {}
        for r in self.rows:
            s = out.setdefault(r.stage, {"params": 0, "macs": 0, "other_ops": 0})
            s["params"] += r.params
            s["macs"] += r.macs
            s["other_ops"] += r.other_ops
            s["out"] = r.out_shape
        return out

    def to_dict(self, layers: bool = False) -> dict:
        d = {
            "arch": self.arch,
            "input_size": self.input_size,
            "params": self.params,
            "macs": self.macs,
            "other_ops": self.other_ops,
            "convention": CONVENTION,
            "stages": self.by_stage(),
        }
        if layers:
            d["layers"] = [asdict(r) for r in self.rows]
        return d


def _out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class _Walker:
    """Propagates (C, H, W) through the spec, appending one row per layer."""

    def __init__(self, spec: ArchSpec):
        self.spec = spec
        self.result = Count(spec.name, spec.input_size)
        self.shape: Shape = (spec.in_channels, spec.input_size, spec.input_size)

    def _add(self, name: str, kind: str, out: Shape, params: int = 0, macs: int = 0,
             other: int = 0, shape_in: Shape | None = None) -> None:
        if out[1] < 1 or out[2] < 1:
            raise _TooSmall(name)
        self.result.rows.append(
            LayerCount(name, kind, shape_in or self.shape, out, params, macs, other)
        )

    def conv(self, name: str, x: Shape, out_ch: int, k: int, stride: int, pad: int,
             groups: int = 1, bias: bool = False) -> Shape:
        c, h, w = x
        if c % groups or out_ch % groups:
            raise SpecError(
                f"{name}: groups={groups} must divide both {c} input and {out_ch} output channels"
            )
        out = (out_ch, _out(h, k, stride, pad), _out(w, k, stride, pad))
        per_out = (c // groups) * k * k
        params = out_ch * per_out + (out_ch if bias else 0)
        self._add(name, "conv", out, params, out[0] * out[1] * out[2] * per_out, shape_in=x)
        return out

    def bn(self, name: str, x: Shape) -> Shape:
        self._add(name, "bn", x, 2 * x[0], 0, x[0] * x[1] * x[2], shape_in=x)
        return x

    def pool(self, name: str, x: Shape, k: int, stride: int, pad: int) -> Shape:
        out = (x[0], _out(x[1], k, stride, pad), _out(x[2], k, stride, pad))
        self._add(name, "pool", out, other=out[0] * out[1] * out[2] * k * k, shape_in=x)
        return out

    def conv_layer(self, prefix: str, layer: ConvLayer) -> None:
        x = self.conv(f"{prefix}.conv", self.shape, layer.out_channels, layer.kernel,
                      layer.stride, layer.pad, layer.groups, layer.bias)
        if layer.bn:
            x = self.bn(f"{prefix}.bn", x)
        if layer.pool:
            p = layer.pool
            x = self.pool(f"{prefix}.pool", x, p.kernel, p.stride, p.padding)
        self.shape = x

    def block(self, prefix: str, stage: Stage, stride: int, preact: bool = False) -> None:
        spec, x = self.spec, self.shape
        width, out_ch = stage.width, stage.out_channels
        if stage.block == "basic":
            convs = [(f"{prefix}.conv1", width, 3, stride, 1), (f"{prefix}.conv2", width, 3, 1, 1)]
        else:
            s1, s3 = (stride, 1) if spec.stride_at == "1x1" else (1, stride)
            convs = [(f"{prefix}.conv1", width, 1, s1, 0), (f"{prefix}.conv2", width, 3, s3, 1),
                     (f"{prefix}.conv3", out_ch, 1, 1, 0)]
        y = x
        for i, (name, ch, k, st, pad) in enumerate(convs, 1):
            if spec.block_order == "post":
                y = self.bn(f"{prefix}.bn{i}", self.conv(name, y, ch, k, st, pad))
            else:
                if i > 1 or preact:
                    y = self.bn(f"{prefix}.bn{i}", y)
                y = self.conv(name, y, ch, k, st, pad)
        if spec.residual:
            if needs_projection(spec.shortcut, x[0], out_ch, stride):
                s = self.conv(f"{prefix}.shortcut.conv", x, out_ch, 1, stride, 0)
                if spec.block_order == "post":
                    self.bn(f"{prefix}.shortcut.bn", s)
            elif stride != 1 or x[0] != out_ch:
                sub = (out_ch, -(-x[1] // stride), -(-x[2] // stride))
                self._add(f"{prefix}.shortcut", "shortcut", sub, shape_in=x)
            gated = spec.shortcut_kind == "gated"
            if gated:
                self.conv(f"{prefix}.gate.conv", x, out_ch, 1, stride, 0, bias=True)
            self._add(f"{prefix}.add", "add", y, other=(3 if gated else 1) * y[0] * y[1] * y[2], shape_in=y)
        self.shape = y

    def walk(self) -> Count:
        spec = self.spec
        for stage in spec.stages:
            if stage.is_conv:
                for i, layer in enumerate(stage.layers):
                    self.conv_layer(f"{stage.name}.{i}", layer)
            else:
                index = spec.stages.index(stage)
                for i in range(stage.num_blocks):
                    self.block(f"{stage.name}.{i}", stage, stage.stride if i == 0 else 1,
                               own_preactivation(spec, index, i))
        if has_final_activation(spec):
            self.shape = self.bn("final_act.bn", self.shape)
        c, h, w = self.shape
        if spec.head.kind == "avgpool-fc":
            self._add("avgpool", "avgpool", (c, 1, 1), other=c * h * w)
            width = c
        else:
            self._add("avgpool", "flatten", (c * h * w, 1, 1))
            width = c * h * w
        for name, hidden in zip(hidden_fc_names(spec), spec.head.hidden):
            self._add(name, "fc", (hidden, 1, 1), width * hidden + hidden, width * hidden,
                      shape_in=(width, 1, 1))
            width = hidden
        n = spec.num_classes
        self._add("fc", "fc", (n, 1, 1), width * n + n, width * n, shape_in=(width, 1, 1))
        return self.result


class _TooSmall(Exception):
    def __init__(self, layer: str):
        self.layer = layer


def _fits(spec: ArchSpec, size: int) -> bool:
    try:
        _Walker(spec.replace(input_size=size)).walk()
        return True
    except _TooSmall:
        return False


def count(spec: ArchSpec) -> Count:
    """Count parameters and multiply-adds of every layer of ``spec`` at its input size.

    Raises `SpecError` for an invalid spec, or an input too small for the net (the message
    names the smallest input size that works).
    """
    spec.validate()
    try:
        return _Walker(spec).walk()
    except _TooSmall as e:
        lo, hi = spec.input_size, max(2 * spec.input_size, 8)
        while not _fits(spec, hi):
            lo, hi = hi, hi * 2
            if hi > 1 << 16:
                raise SpecError(f"{spec.name}: no input size fits this net") from None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _fits(spec, mid) else (mid, hi)
        raise SpecError(
            f"input size {spec.input_size} is too small for {spec.name}: {e.layer} would "
            f"output an empty map; use input_size >= {hi}"
        ) from None


def training_memory(spec: ArchSpec, batch_size: int, bytes_per_value: int = 4) -> int:
    """A lower bound on the bytes one training step of ``spec`` needs: every layer's output
    for ``batch_size`` images (kept for the backward pass) at ``bytes_per_value`` (4: fp32;
    2: bf16/fp16 autocast), plus the fp32 weights, their gradients and SGD's momentum.

    Real use is higher (cuDNN workspaces, the allocator's cache, the data), so a run this
    says cannot fit never would. Quick at any depth: the blocks after a stage's second have
    the second's shapes, so they are counted once and multiplied.
    """
    short = spec.replace(stages=[s if s.is_conv or s.num_blocks <= 2 else replace(s, num_blocks=2)
                                 for s in spec.stages])
    repeats = {s.name: s.num_blocks - 1 for s in spec.stages if not s.is_conv and s.num_blocks > 2}
    values = params = 0
    for r in count(short).rows:
        stage, _, rest = r.name.partition(".")
        times = repeats.get(stage, 1) if rest.startswith("1.") else 1
        values += times * r.out_shape[0] * r.out_shape[1] * r.out_shape[2]
        params += times * r.params
    return values * batch_size * bytes_per_value + 3 * 4 * params
