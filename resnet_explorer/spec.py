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

Two neighbours of the paper's block, one field each (the defaults are the paper's block, so
a spec, or a saved spec.json, without them is exactly the net it was):

``shortcut_kind`` — ``"identity"`` (the paper: y = F(x) + S(x), S the option A/B/C
shortcut) or ``"gated"``, a highway gate (Srivastava et al. 2015) on every block's shortcut:

    y = T(x)·F(x) + (1 − T(x))·S(x),   T(x) = σ(W_T·x + b_T)

The residual branch F plays the role of the highway paper's H. T is a 1×1 conv (with bias)
of the shortcut's input followed by a sigmoid, strided like the block, so it gives one gate
per output channel and position, of F's shape. Where the shape changes, S is the option A
(zero-padded subsampling) or B/C (projection) shortcut and the gate mixes F with it; on the
extra channels option A pads with zeros, so there y = T·F. b_T starts at `GATE_BIAS_INIT`
= −2 (the highway paper recommends a negative bias, e.g. −1 to −3, so that every block
starts close to carrying its input): σ(−2) ≈ 0.12, each block starts passing about 88 % of
S(x) and 12 % of F(x), while F's gradient (scaled by T) is not shut off as at −3 (0.05).
T → 1 closes the shortcut (the block turns plain), T → 0 skips F. Gated nets are residual
nets (``residual`` True); their zoo names are ``cifar-highwayD``.

``block_order`` — ``"post"`` (the paper: conv → BN → ReLU inside F, ReLU after the
addition) or ``"pre"``, the full pre-activation unit of He et al. 2016 ("Identity Mappings
in Deep Residual Networks", Fig. 4e): BN → ReLU → conv → BN → ReLU → conv (→ BN → ReLU → conv
for a bottleneck), the addition, and nothing after it. Following the 2016 paper and its code:
the first block after a stem that ends in BN → ReLU uses the stem's activation as its own
(`own_preactivation`); where a block changes shape, its BN → ReLU comes before the split, so
the shortcut (and a gate) sees the activated input, elsewhere the shortcut sees x itself;
projection shortcuts are a bare 1×1 conv (the next unit's BN normalises the sum); and a
final BN → ReLU (``final_act``) follows the last block stage, before the pool
(`has_final_activation`). Zoo names: ``cifar-preresnetD``, ``preresnet50`` ….
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError, one_line

BLOCKS = ("conv", "basic", "bottleneck")
SHORTCUTS = ("A", "B", "C")
STRIDE_AT = ("1x1", "3x3")
SHORTCUT_KINDS = ("identity", "gated")
BLOCK_ORDERS = ("post", "pre")
GATE_BIAS_INIT = -2.0  # b_T at initialisation: σ(−2) ≈ 0.12 (see the module docstring)
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
    shortcut_kind: str = "identity"  # identity (the paper) | gated (a highway gate, T·F + (1 − T)·S)
    block_order: str = "post"  # post (the paper) | pre (He et al. 2016's full pre-activation)

    # -- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Any) -> ArchSpec:
        """The spec a dict describes (`to_dict`'s form; fields left out take their defaults).

        A spec dict comes from files a user hands us (a spec.json, a checkpoint, an experiment
        file): anything else than that form (not an object, a missing or unknown field, a value
        of the wrong type, an integer beyond 32 bits, a NaN) is a `SpecError` of one line that
        names the field (``stages[2].layers[0].kernel``), never another exception. The values'
        ranges are `validate`'s."""
        return _parse(cls, d, "")

    @classmethod
    def from_json(cls, text: str | bytes) -> ArchSpec:
        """`from_dict` of a JSON text; text that is not JSON is a `SpecError` too."""
        try:
            d = json.loads(text)
        except (ValueError, TypeError, RecursionError) as e:  # (too deep, or an integer too long to read)
            raise SpecError(f"architecture spec is not valid JSON: {one_line(e, 120)}") from None
        return cls.from_dict(d)

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

    @property
    def has_blocks(self) -> bool:
        """Whether a stage is made of basic or bottleneck blocks (a ResNet or its plain twin;
        VGG and AlexNet have conv stages only)."""
        return any(not s.is_conv for s in self.stages)

    @property
    def has_shortcuts(self) -> bool:
        """Whether the blocks add a shortcut: a residual net with blocks (not its plain twin)."""
        return self.residual and self.has_blocks

    @property
    def is_gated(self) -> bool:
        """Whether the shortcuts are highway-gated (T·F + (1 − T)·S)."""
        return self.has_shortcuts and self.shortcut_kind == "gated"

    @property
    def is_preactivation(self) -> bool:
        """Whether the blocks are He et al. 2016's full pre-activation units."""
        return self.has_blocks and self.block_order == "pre"

    def describe(self) -> str:
        """What kind of net this is, in the paper's words: ``residual, shortcut B, stride at
        1x1 (paper v1)``, ``plain``, ``residual, shortcut A, highway-gated, pre-activation`` …"""
        words = ["residual" if self.has_shortcuts else "plain"]
        if self.has_shortcuts:
            words.append(f"shortcut {self.shortcut}")
        if self.is_gated:
            words.append("highway-gated")
        if self.is_preactivation:
            words.append("pre-activation")
        if any(s.block == "bottleneck" for s in self.stages):
            words.append(f"stride at {self.stride_at} ({'paper v1' if self.stride_at == '1x1' else 'v1.5'})")
        return ", ".join(words)

    def validate(self) -> ArchSpec:
        """Raise `SpecError` on the first invalid value; return the spec otherwise."""
        if not self.stages:
            raise SpecError("an architecture needs at least one stage")
        _one_of("shortcut", self.shortcut, SHORTCUTS)
        _one_of("stride_at", self.stride_at, STRIDE_AT)
        _one_of("head.kind", self.head.kind, HEADS)
        _one_of("shortcut_kind", self.shortcut_kind, SHORTCUT_KINDS)
        _one_of("block_order", self.block_order, BLOCK_ORDERS)
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
        if self.shortcut_kind == "gated" and not self.has_shortcuts:
            raise SpecError("shortcut_kind='gated' gates the shortcuts of basic or bottleneck blocks: "
                            "it needs residual=True and at least one block stage")
        if self.block_order == "pre" and not self.has_blocks:
            raise SpecError("block_order='pre' applies to basic and bottleneck blocks: "
                            "this net has none (use block_order='post')")
        return self


def needs_projection(shortcut: str, in_ch: int, out_ch: int, stride: int) -> bool:
    """Option B projects only where the shape changes, C everywhere, A never."""
    changes = stride != 1 or in_ch != out_ch
    return shortcut == "C" or (shortcut == "B" and changes)


def own_preactivation(spec: ArchSpec, stage_index: int, block_index: int) -> bool:
    """Whether a pre-activation block has its own BN → ReLU before its first conv.

    Every block has, except the first of a block stage that directly follows a conv stage
    ending in BN and ReLU (the stem): that activation is already its input, as in the 2016
    paper ("the first activation right after conv1"). Post-activation blocks: always False.
    """
    if spec.block_order != "pre":
        return False
    if block_index > 0 or stage_index == 0:
        return True
    before = spec.stages[stage_index - 1]
    return not (before.is_conv and before.layers[-1].bn and before.layers[-1].relu)


def has_final_activation(spec: ArchSpec) -> bool:
    """A pre-activation net ending in a block stage gets a BN → ReLU (``final_act``) before
    the pool: its last addition is otherwise never normalised nor rectified."""
    return spec.block_order == "pre" and not spec.stages[-1].is_conv


def hidden_fc_names(spec: ArchSpec) -> list[str]:
    """fc6, fc7 … after five conv stages, as VGG and AlexNet number them."""
    first = len(spec.stages) + 1
    return [f"fc{first + i}" for i in range(len(spec.head.hidden))]


MAX_INT = 2**31 - 1  # no size, count or stride of a net comes near


def _parse(tp: Any, value: Any, where: str) -> Any:
    """``value`` read as a ``tp`` (a field's type: a dataclass of this module, a list, ``X | None``,
    bool, int, float or str), else a `SpecError` naming ``where``."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):  # X | None
        if value is None:
            return None
        (tp,) = [t for t in typing.get_args(tp) if t is not type(None)]
    if dataclasses.is_dataclass(tp):
        return _parse_fields(tp, value, where)
    if typing.get_origin(tp) is list:
        if not isinstance(value, (list, tuple)):
            raise _malformed(where, value, "a list")
        (item,) = typing.get_args(tp)
        return [_parse(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool and isinstance(value, bool) or tp is str and isinstance(value, str):
        return value
    if tp in (int, float) and isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT:
        return tp(value)
    if tp is float and isinstance(value, float) and math.isfinite(value):
        return value
    want = {bool: "true or false", str: "a string", float: "a finite number"}.get(tp, f"an integer (at most {MAX_INT:,})")
    raise _malformed(where, value, want)


def _parse_fields(cls: type, d: Any, where: str) -> Any:
    hints = _field_types(cls)
    if not isinstance(d, dict):
        raise _malformed(where, d, f"an object with the fields of {cls.__name__}")
    unknown = [k for k in d if k not in hints]
    if unknown:
        raise SpecError(f"malformed architecture spec: {where or 'the spec'} has no field {_show(unknown[0])}: "
                        f"use {', '.join(hints)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in d
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"malformed architecture spec: {_at(where, missing[0])} is missing")
    return cls(**{k: _parse(hints[k], v, _at(where, k)) for k, v in d.items()})


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _malformed(where: str, value: Any, want: str) -> SpecError:
    what = f"{where}={_show(value)}" if where else f"a spec of {_show(value)}"
    return SpecError(f"malformed architecture spec: {what} is invalid: use {want}")


class _ShortRepr(reprlib.Repr):
    """reprlib's short reprs, safe for anything: a huge integer as its size, any other object
    as its type (its own repr might be anything)."""

    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if abs(x) < 10**12 else f"<an integer of {x.bit_length()} bits>"

    def repr_instance(self, x: Any, level: int) -> str:
        return repr(x) if type(x) in (bool, float, type(None)) else f"<{type(x).__name__}>"


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40


def _show(value: Any) -> str:
    return _SHORT.repr(value)


def _one_of(what: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise SpecError(f"{what}={value!r} is invalid: use one of {', '.join(map(str, valid))}")


def _positive(what: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{what}={value!r} is invalid: use a positive integer")
