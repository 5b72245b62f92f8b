"""The architecture spec: one declarative, JSON-serialisable description of a network.

Every network of the paper (ResNets, plain nets, VGG, AlexNet) is an `ArchSpec`.
`build(spec)` turns it into a `torch.nn.Module`, `count(spec)` counts it analytically,
the builder widget edits it and the trainer records it in every run. Nothing else
describes a net.

A net is a list of stages run one after the other, then a head:

- a ``conv`` stage is a list of `ConvLayer` (conv → BN → ReLU → LRN → max-pool, each
  optional); it describes the ResNet stem ``conv1`` and every VGG / AlexNet stage;
- a ``basic`` stage is ``num_blocks`` blocks of two 3×3 convs (ResNet-18/34, CIFAR nets);
- a ``bottleneck`` stage is ``num_blocks`` blocks 1×1 → 3×3 → 1×1 (×4) (ResNet-50/101/152).

``residual`` decides between a ResNet and its plain twin (same layers, no shortcuts);
``shortcut`` is the paper's option A (zero-pad identity), B (projection where the shape
changes) or C (projection everywhere); ``stride_at`` puts a bottleneck's stride on its
first 1×1 conv (the paper, "v1") or on its 3×3 conv (torchvision, "v1.5").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError

BLOCKS = ("conv", "basic", "bottleneck")
SHORTCUTS = ("A", "B", "C")
STRIDE_AT = ("1x1", "3x3")
HEADS = ("avgpool-fc", "flatten-fc")
BOTTLENECK_EXPANSION = 4


@dataclass
class Pool:
    """A max-pool window applied after a layer."""

    kernel: int = 2
    stride: int = 2
    padding: int = 0


@dataclass
class ConvLayer:
    """One conv layer with what follows it: BN, ReLU, LRN (AlexNet/VGG A-LRN), max-pool."""

    out_channels: int
    kernel: int = 3
    stride: int = 1
    padding: int | None = None  # None: kernel // 2 ("same" for odd kernels)
    groups: int = 1
    bias: bool = False
    bn: bool = True
    relu: bool = True
    lrn: bool = False
    pool: Pool | None = None

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding


@dataclass
class Stage:
    """A named stage (``conv1``, ``conv2_x`` …): conv layers, or blocks of one type."""

    name: str
    block: str = "basic"
    num_blocks: int = 0  # basic / bottleneck only
    width: int = 0  # basic: output channels; bottleneck: inner width (output = 4 × width)
    stride: int = 1  # stride of the stage's first block
    layers: list[ConvLayer] = field(default_factory=list)  # conv stages only

    @property
    def is_conv(self) -> bool:
        """A stage of plain conv layers (the stem, VGG, AlexNet) rather than of blocks."""
        return self.block == "conv"

    @property
    def out_channels(self) -> int:
        if self.is_conv:
            return self.layers[-1].out_channels
        if self.block == "bottleneck":
            return self.width * BOTTLENECK_EXPANSION
        return self.width


@dataclass
class Head:
    """Classifier: global average pool + fc (ResNets) or flatten + FC stack (VGG, AlexNet)."""

    kind: str = "avgpool-fc"
    hidden: list[int] = field(default_factory=list)  # widths of the hidden FC layers
    dropout: float = 0.0  # after each hidden FC layer


@dataclass
class ArchSpec:
    """A whole network. JSON round-trips exactly: ``ArchSpec.from_json(s.to_json()) == s``."""

    name: str
    stages: list[Stage]
    head: Head = field(default_factory=Head)
    residual: bool = True
    shortcut: str = "B"
    stride_at: str = "1x1"
    input_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    zero_init_residual: bool = False  # zero the last BN γ of every block

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        try:
            stages = [_stage_from_dict(s) for s in d["stages"]]
            head = Head(**d.get("head", {}))
            rest = {k: v for k, v in d.items() if k not in ("stages", "head")}
            return cls(stages=stages, head=head, **rest)
        except (KeyError, TypeError) as e:
            raise SpecError(f"malformed architecture spec: {e}; see ArchSpec's fields") from None

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"architecture spec is not valid JSON: {e}") from None

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some top-level fields changed (``spec.replace(residual=False)``)."""
        return dataclasses.replace(self, **changes)

    # -- the paper's vocabulary ----------------------------------------------------------
    @property
    def depth(self) -> int:
        """Weighted layers as the paper counts them: convs on the main path plus fc layers."""
        per_block = {"basic": 2, "bottleneck": 3}
        convs = sum(
            len(s.layers) if s.is_conv else s.num_blocks * per_block[s.block]
            for s in self.stages
        )
        return convs + len(self.head.hidden) + 1

    def validate(self) -> ArchSpec:
        """Raise `SpecError` on the first invalid value; return the spec otherwise."""
        if not self.stages:
            raise SpecError("an architecture needs at least one stage")
        _one_of("shortcut", self.shortcut, SHORTCUTS)
        _one_of("stride_at", self.stride_at, STRIDE_AT)
        _one_of("head.kind", self.head.kind, HEADS)
        _positive("num_classes", self.num_classes)
        _positive("in_channels", self.in_channels)
        _positive("input_size", self.input_size)
        for w in self.head.hidden:
            _positive("head.hidden width", w)
        if not 0.0 <= self.head.dropout < 1.0:
            raise SpecError(f"head.dropout={self.head.dropout} is invalid: use 0 <= p < 1")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise SpecError(f"stage names must be unique, got {names}")
        for s in self.stages:
            _one_of(f"{s.name}.block", s.block, BLOCKS)
            if not s.name.isidentifier():
                raise SpecError(f"stage name {s.name!r} must be a Python identifier (e.g. conv2_x)")
            if s.is_conv:
                if not s.layers:
                    raise SpecError(f"{s.name}: a conv stage needs at least one layer")
                for i, layer in enumerate(s.layers):
                    where = f"{s.name}[{i}]"
                    _positive(f"{where} width", layer.out_channels)
                    _positive(f"{where} kernel", layer.kernel)
                    _positive(f"{where} stride", layer.stride)
                    _positive(f"{where} groups", layer.groups)
                    if layer.pad < 0:
                        raise SpecError(f"{where} padding={layer.pad} is invalid: use >= 0")
            else:
                _positive(f"{s.name} width", s.width)
                _positive(f"{s.name} num_blocks", s.num_blocks)
                _positive(f"{s.name} stride", s.stride)
        return self


def needs_projection(shortcut: str, in_ch: int, out_ch: int, stride: int) -> bool:
    """Option B projects only where the shape changes, C everywhere, A never."""
    changes = stride != 1 or in_ch != out_ch
    return shortcut == "C" or (shortcut == "B" and changes)


def hidden_fc_names(spec: ArchSpec) -> list[str]:
    """fc6, fc7 … after five conv stages, as VGG and AlexNet number them."""
    first = len(spec.stages) + 1
    return [f"fc{first + i}" for i in range(len(spec.head.hidden))]


def _stage_from_dict(d: dict[str, Any]) -> Stage:
    layers = []
    for layer in d.get("layers", []):
        pool = layer.get("pool")
        layers.append(ConvLayer(**{**layer, "pool": Pool(**pool) if pool else None}))
    return Stage(**{**d, "layers": layers})


def _one_of(what: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise SpecError(f"{what}={value!r} is invalid: use one of {', '.join(map(str, valid))}")


def _positive(what: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{what}={value!r} is invalid: use a positive integer")
