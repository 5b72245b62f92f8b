"""The numbers the papers print, as data: each with its net, the variant measured, its table
and its source, looked up exactly.

A `PaperFigure` belongs to one net: a zoo name and the `get_spec` options of the variant the
paper measured (ResNet-34's top-1 error is 25.03 % with option A, 24.52 % with option B, and
no paper prints its parameter count). `figures_for(spec)` gives the figures of exactly the
net ``spec`` is (its zoo net with its options; a net is compared whole, so a width, an input
size or a shortcut option of its own makes it another net), and, for each quantity the papers
give only for another variant of the same zoo net, that variant's figure as a reference
(`Shown.exact` False; `Shown.differs` says how this net differs from it). `figure` is the exact
lookup the tables use. Counts measured on torchvision (printed by no paper) are
`TORCHVISION_PARAMS` and `TABLE1_MACS`, named as such wherever they are shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from .spec import ArchSpec
from .zoo import get_spec, identify

RESNET = "He et al. 2015, Deep Residual Learning (arXiv 1512.03385)"
PREACT = "He et al. 2016, Identity Mappings (arXiv 1603.05027)"
VGG = "Simonyan & Zisserman 2015, VGG (arXiv 1409.1556)"
ALEXNET = "Krizhevsky et al. 2012, ImageNet Classification (AlexNet, NIPS)"
MACS, PARAMS, TOP1, TOP5, CIFAR10 = "multiply-adds", "params", "top-1 error", "top-5 error", "CIFAR-10 test error"


@dataclass(frozen=True)
class PaperFigure:
    """One number a paper prints, for one net in one variant."""

    name: str  # the paper's name for the net: "ResNet-34"
    net: str  # the zoo name of the net measured: "resnet34"
    variant: tuple[tuple[str, Any], ...]  # the get_spec options of the variant measured
    quantity: str  # MACS, PARAMS (counts), TOP1, TOP5, CIFAR10 (percent)
    value: float
    printed: str  # as the paper prints it: "3.6·10⁹", "0.27M", "25.03"
    table: str  # where in the paper: "Table 3", "Sec. 4.1"
    source: str
    note: str = ""  # how it was measured: "10-crop, ImageNet val"
    other_net: bool = False  # a different net the paper quotes, shown beside ``net`` as a reference

    def spec(self) -> ArchSpec:
        """The net measured, as the zoo builds it."""
        return get_spec(self.net, **dict(self.variant))

    @property
    def label(self) -> str:
        """The net and its variant in words: "ResNet-34, option A"."""
        words = [_WORDS[k](v) for k, v in self.variant if k in _WORDS]
        return ", ".join([self.name, *words])

    @property
    def cite(self) -> str:
        """Where it is printed: "Table 3, He et al. 2015, …; 10-crop, ImageNet val"."""
        return f"{self.table}, {self.source}" + (f"; {self.note}" if self.note else "")

    def text(self) -> str:
        """The value as shown beside ours: "top-1 error 25.03 %", "3.6 G multiply-adds"."""
        if self.quantity == MACS:
            return f"{self.value / 1e9:g} G multiply-adds"
        if self.quantity == PARAMS:
            return f"{self.printed} params"
        return f"{self.quantity} {self.printed} %"


_WORDS = {"shortcut": lambda v: f"option {v}",
          "stride_at": lambda v: "stride on the first 1×1 (v1)" if v == "1x1" else "stride on the 3×3 (v1.5)",
          "block": lambda v: f"{v} blocks", "input_size": lambda v: f"{v}×{v} input",
          "width": lambda v: f"{v} wide"}


def _f(name: str, net: str, variant: dict, quantity: str, printed: str, table: str, source: str,
       note: str = "", other_net: bool = False) -> PaperFigure:
    scale = {MACS: 1e9, PARAMS: 1e6}.get(quantity, 1)
    number = printed.replace("·10⁹", "").rstrip("M")
    return PaperFigure(name, net, tuple(variant.items()), quantity, float(number) * scale, printed, table,
                       source, note, other_net)


def _errors(name: str, net: str, variant: dict, top1: str, top5: str | None, table: str, source: str = RESNET,
            note: str = "10-crop, ImageNet val") -> list[PaperFigure]:
    out = [_f(name, net, variant, TOP1, top1, table, source, note)]
    return out + ([_f(name, net, variant, TOP5, top5, table, source, note)] if top5 else [])


def _table6(depth: int, params: str, error: str, note: str = "") -> list[PaperFigure]:
    name, net, variant = f"ResNet-{depth}", f"cifar-resnet{depth}", {"shortcut": "A"}
    return [_f(name, net, variant, PARAMS, params, "Table 6", RESNET),
            _f(name, net, variant, CIFAR10, error, "Table 6", RESNET, note)]


A, B1 = {"shortcut": "A"}, {"shortcut": "B", "stride_at": "1x1"}  # the paper's 18/34 and 50/101/152
TABLE1_NOTE = "the layers Table 1 lists: no projection shortcuts"
PAPER: list[PaperFigure] = [
    # ResNet paper, Table 1 (and Sec. 3.3 / 4.1): multiply-adds at 224×224
    _f("18-layer plain", "plain18", {}, MACS, "1.8·10⁹", "Table 1", RESNET, TABLE1_NOTE),
    _f("34-layer plain", "plain34", {}, MACS, "3.6·10⁹", "Table 1, Sec. 3.3", RESNET, TABLE1_NOTE),
    _f("ResNet-18", "resnet18", A, MACS, "1.8·10⁹", "Table 1", RESNET, TABLE1_NOTE),
    _f("ResNet-34", "resnet34", A, MACS, "3.6·10⁹", "Table 1", RESNET, TABLE1_NOTE),
    _f("ResNet-50", "resnet50", B1, MACS, "3.8·10⁹", "Table 1", RESNET),
    _f("ResNet-101", "resnet101", B1, MACS, "7.6·10⁹", "Table 1", RESNET),
    _f("ResNet-152", "resnet152", B1, MACS, "11.3·10⁹", "Table 1", RESNET),
    _f("VGG-16", "vgg-d", {}, MACS, "15.3·10⁹", "Sec. 4.1", RESNET),
    _f("VGG-19", "vgg-e", {}, MACS, "19.6·10⁹", "Sec. 3.3, 4.1", RESNET),
    # ResNet paper, Tables 2 and 3: ImageNet val error (%), 10-crop
    *_errors("18-layer plain", "plain18", {}, "27.94", None, "Table 2"),
    *_errors("34-layer plain", "plain34", {}, "28.54", "10.02", "Tables 2, 3"),
    *_errors("ResNet-18", "resnet18", A, "27.88", None, "Table 2"),
    *_errors("ResNet-34", "resnet34", A, "25.03", "7.76", "Tables 2, 3"),
    *_errors("ResNet-34", "resnet34", {"shortcut": "B"}, "24.52", "7.46", "Table 3"),
    *_errors("ResNet-34", "resnet34", {"shortcut": "C"}, "24.19", "7.40", "Table 3"),
    *_errors("ResNet-50", "resnet50", B1, "22.85", "6.71", "Table 3"),
    *_errors("ResNet-101", "resnet101", B1, "21.75", "6.05", "Table 3"),
    *_errors("ResNet-152", "resnet152", B1, "21.43", "5.71", "Table 3"),
    *_errors("VGG-16", "vgg-d", {}, "28.07", "9.33", "Table 3", note="10-crop, ImageNet val, as the ResNet paper quotes it"),
    # VGG paper: multi-scale evaluation; AlexNet paper: ILSVRC-2010 test
    *_errors("VGG-16 (D)", "vgg-d", {}, "24.8", "7.5", "Table 4", VGG, "multi-scale, ImageNet val"),
    *_errors("VGG-19 (E)", "vgg-e", {}, "24.8", "7.5", "Table 4", VGG, "multi-scale, ImageNet val"),
    _f("AlexNet", "alexnet", {}, PARAMS, "60M", "Sec. 1", ALEXNET),
    *_errors("AlexNet", "alexnet", {}, "37.5", "17.0", "Table 1", ALEXNET, "ILSVRC-2010 test"),
    # ResNet paper, Table 6: CIFAR-10 (option A, 16/32/64 wide, 32×32)
    *_table6(20, "0.27M", "8.75"), *_table6(32, "0.46M", "7.51"), *_table6(44, "0.66M", "7.17"),
    *_table6(56, "0.85M", "6.97"), *_table6(110, "1.7M", "6.43", "best of 5 runs; mean 6.61 ± 0.16"),
    *_table6(1202, "19.4M", "7.93"),
    # Table 6 also quotes two highway nets: other nets than our 6n+2 gated ones
    _f("Highway, 19 layers (Srivastava et al.)", "cifar-highway20", {}, PARAMS, "2.3M", "Table 6", RESNET,
       other_net=True),
    _f("Highway, 19 layers (Srivastava et al.)", "cifar-highway20", {}, CIFAR10, "7.54", "Table 6", RESNET,
       other_net=True),
    _f("Highway, 32 layers (Srivastava et al.)", "cifar-highway32", {}, PARAMS, "1.25M", "Table 6", RESNET,
       other_net=True),
    _f("Highway, 32 layers (Srivastava et al.)", "cifar-highway32", {}, CIFAR10, "8.80", "Table 6", RESNET,
       other_net=True),
    # He et al. 2016: CIFAR-10 test error of original (post-activation) and pre-activation units
    _f("ResNet-110, original unit", "cifar-resnet110", {}, CIFAR10, "6.61", "Table 3", PREACT),
    _f("ResNet-110, full pre-activation", "cifar-preresnet110", {}, PARAMS, "1.7M", "Table 3", PREACT),
    _f("ResNet-110, full pre-activation", "cifar-preresnet110", {}, CIFAR10, "6.37", "Table 3", PREACT),
    _f("ResNet-164, original unit", "cifar-resnet164", {"block": "bottleneck"}, CIFAR10, "5.93", "Table 4", PREACT),
    _f("ResNet-164, pre-activation", "cifar-preresnet164", {}, PARAMS, "1.7M", "Table 4", PREACT),
    _f("ResNet-164, pre-activation", "cifar-preresnet164", {}, CIFAR10, "5.46", "Table 4", PREACT),
    _f("ResNet-1001, original unit", "cifar-resnet1001", {}, PARAMS, "10.2M", "Table 4", PREACT),
    _f("ResNet-1001, original unit", "cifar-resnet1001", {}, CIFAR10, "7.61", "Table 4", PREACT),
    _f("ResNet-1001, pre-activation", "cifar-preresnet1001", {}, PARAMS, "10.2M", "Table 4", PREACT),
    _f("ResNet-1001, pre-activation", "cifar-preresnet1001", {}, CIFAR10, "4.92", "Table 4", PREACT,
       "4.62 % in its abstract"),
    *_errors("ResNet-152, pre-activation", "preresnet152", {}, "21.1", "5.5", "Table 5", PREACT,
             "single 320×320 crop, ImageNet val"),
]

# Measured, not printed by any paper: torchvision 0.29's ResNets (option B, stride on the 3×3,
# "v1.5"), and our counts with the paper's stride on the first 1×1 ("v1"), in multiply-adds.
TORCHVISION = "torchvision 0.29 (option B, v1.5), measured"
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
TABLE1_MACS = {
    "1x1": {18: 1.8e9, 34: 3.6e9, 50: 3.86e9, 101: 7.57e9, 152: 11.28e9},
    "3x3": {18: 1.81e9, 34: 3.66e9, 50: 4.09e9, 101: 7.80e9, 152: 11.51e9},
}


@dataclass(frozen=True)
class Shown:
    """A figure as shown for one net: its own (``exact``), or another variant's, as a reference."""

    figure: PaperFigure
    exact: bool
    differs: str = ""  # for a reference: how the net shown differs from the one measured


def _key(spec: ArchSpec) -> str:
    """The net without its name and the fields that do not change it (a plain net's shortcut
    option, a stride placement without bottlenecks): two specs of one net have one key."""
    d = spec.to_dict()
    d.pop("name")
    blocks = [s for s in spec.stages if not s.is_conv]
    if not (spec.residual and blocks):
        d.pop("shortcut"), d.pop("shortcut_kind")
    if not any(s.block == "bottleneck" for s in blocks):
        d.pop("stride_at")
    return json.dumps(d, sort_keys=True)


@lru_cache(maxsize=None)
def _figure_key(f: PaperFigure) -> str:
    return _key(f.spec())


def _differences(spec: ArchSpec, ref: ArchSpec) -> list[str]:
    """How ``spec`` differs from the net ``ref`` measured, in words ("option B, not A")."""
    words = {"shortcut": "option {}", "stride_at": "stride at {}", "input_size": "{} px input",
             "num_classes": "{} classes", "shortcut_kind": "{} shortcuts", "block_order": "{}-activation"}
    out = [f"{words[k].format(getattr(spec, k))}, not {getattr(ref, k)}" for k in words
           if getattr(spec, k) != getattr(ref, k)]
    if spec.stages != ref.stages:
        blocks = lambda net: [s.block for s in net.stages if not s.is_conv]  # noqa: E731
        widths = lambda net: [s.out_channels for s in net.stages]  # noqa: E731
        if blocks(spec) != blocks(ref):
            out.append(f"{'/'.join(dict.fromkeys(blocks(spec)))} blocks, not {'/'.join(dict.fromkeys(blocks(ref)))}")
        elif widths(spec) != widths(ref):
            out.append(f"{widths(spec)[0]} wide, not {widths(ref)[0]}")
        else:
            out.append("other stages")
    return out or ["another variant"]


def figures_for(spec: ArchSpec) -> list[Shown]:
    """The papers' figures for ``spec``: those of exactly this net, then, for each quantity the
    papers give only for another variant of its zoo net, the nearest variant's, as a reference."""
    name = identify(spec).name
    if name is None:
        return []
    key, own = _key(spec), [f for f in PAPER if f.net == name]
    exact = [f for f in own if not f.other_net and _figure_key(f) == key]
    shown = [Shown(f, True) for f in exact]
    covered = {f.quantity for f in exact}
    for quantity in dict.fromkeys(f.quantity for f in own if f.quantity not in covered):
        same = [f for f in own if f.quantity == quantity and not f.other_net]
        if same:  # the variant nearest to this net (fewest differences; the first on ties)
            f = min(same, key=lambda f: len(_differences(spec, f.spec())))
            shown.append(Shown(f, False, "; ".join(_differences(spec, f.spec()))))
        shown += [Shown(f, False, "a different net") for f in own if f.quantity == quantity and f.other_net]
    return shown


def figure(net: str, quantity: str, source: str | None = None, **variant: Any) -> PaperFigure:
    """The figure of exactly ``get_spec(net, **variant)`` for ``quantity`` (from ``source``
    when given); KeyError when no paper prints it."""
    key = _key(get_spec(net, **variant))
    for f in PAPER:
        if (f.quantity == quantity and not f.other_net and (source is None or f.source == source)
                and _figure_key(f) == key):
            return f
    raise KeyError(f"no paper prints the {quantity} of {net} {variant or ''}".rstrip())


def other_nets(quantity: str) -> list[PaperFigure]:
    """The figures of nets the papers quote that are not ours (Table 6's highway nets)."""
    return [f for f in PAPER if f.other_net and f.quantity == quantity]


def paper_columns(spec: ArchSpec) -> dict[str, Shown]:
    """One figure per quantity for a table row: this net's own first, else the nearest variant's."""
    out: dict[str, Shown] = {}
    for shown in figures_for(spec):
        out.setdefault(shown.figure.quantity, shown)
    return out


SHORT = {RESNET: "ResNet", PREACT: "He et al. 2016", VGG: "VGG", ALEXNET: "AlexNet"}


def sources_text(shown: Iterable[Shown]) -> str:
    """Where the figures come from, short: "ResNet Table 3; ResNet Table 1 (*ResNet-34, option A)"."""
    parts = [f"{SHORT[s.figure.source]} {s.figure.table}" + ("" if s.exact else f" (*{s.figure.label})")
             for s in shown]
    return "; ".join(dict.fromkeys(parts))


def exact_figure(spec: ArchSpec, quantity: str, source: str | None = None) -> PaperFigure | None:
    """The figure for exactly this net (no reference), from ``source`` when given; None if none."""
    return next((s.figure for s in figures_for(spec) if s.exact and s.figure.quantity == quantity
                 and (source is None or s.figure.source == source)), None)
