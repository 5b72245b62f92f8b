"""The builder's family controls as a function of the spec, and back.

`controls_for(spec)` reads everything the family row shows (family, preset, n, depth,
residual, shortcut, shortcut kind, block order, stride placement, input size, classes)
from the spec through the
zoo (`zoo.identify`), together with the controls that do not apply to this net and why.
`spec_from_controls` goes back: the zoo net the controls name, with their options. For
every named net ``spec_from_controls(controls_for(spec)) == spec``; the builder sets its
widgets from `controls_for` only, so what it shows always follows the spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..spec import ArchSpec
from ..zoo import IMAGENET_BLOCKS, TABLE6_DEPTHS, VGG_CONFIGS, get_spec, identify

PRESETS: list[str] = (
    [f"resnet{d}" for d in IMAGENET_BLOCKS] + [f"plain{d}" for d in IMAGENET_BLOCKS]
    + [f"cifar-resnet{d}" for d in TABLE6_DEPTHS] + [f"cifar-plain{d}" for d in TABLE6_DEPTHS]
    + [f"vgg-{c}" for c in VGG_CONFIGS] + ["alexnet", "alexnet-groups1"]
    # beyond the paper: a highway-gated net (Table 6 quotes highway nets) and pre-activation ones (2016)
    + ["cifar-highway20", "cifar-highway56", "cifar-preresnet110", "preresnet50", "preresnet152"]
)
# The family dropdown's labels, and the net each family opens with when it is picked.
FAMILIES = {"CIFAR (6n+2)": "cifar", "ImageNet (Table 1)": "imagenet", "VGG": "vgg", "AlexNet": "alexnet",
            "custom": "custom"}
FAMILY_LABELS = {v: k for k, v in FAMILIES.items()}
FAMILY_DEFAULTS = {"cifar": "cifar-{kind}20", "imagenet": "{kind}18", "vgg": "vgg-d", "alexnet": "alexnet"}
MAX_N = 200  # ResNet-1202 (Table 6) has n = 200


@dataclass(frozen=True)
class Controls:
    """What the builder's family row shows for one spec."""

    family: str  # cifar | imagenet | vgg | alexnet | custom (zoo.identify's)
    name: str | None  # the zoo name, None for a custom net
    n: int | None  # cifar: blocks per stage (depth 6n+2)
    depth: int | None  # imagenet: 18 … 152
    residual: bool
    shortcut: str
    stride_at: str
    input_size: int
    num_classes: int
    shortcut_kind: str = "identity"  # identity (the paper) | gated (highway)
    block_order: str = "post"  # post (the paper) | pre (He et al. 2016)
    block: str | None = None  # cifar: basic (depth 6n+2) | bottleneck (9n+2)
    options: dict[str, Any] = field(default_factory=dict)  # identify's other get_spec options (width …)
    disabled: dict[str, str] = field(default_factory=dict)  # control -> why it does not apply here

    @property
    def preset(self) -> str | None:
        """The preset dropdown's value: the zoo name when the list has it."""
        return self.name if self.name in PRESETS else None

    def replace(self, **changes: Any) -> Controls:
        return dataclasses.replace(self, **changes)


def _blocks(spec: ArchSpec) -> list:
    return [s for s in spec.stages if not s.is_conv]


def disabled_reasons(spec: ArchSpec, family: str) -> dict[str, str]:
    """The controls that do nothing for ``spec``, each with the one-line reason."""
    what = {"vgg": "VGG", "alexnet": "AlexNet"}.get(family, "this net")
    reasons = {}
    if family != "cifar":
        reasons["n"] = "n applies to the CIFAR nets of depth 6n+2 (three stages of n basic blocks)"
    if family != "imagenet":
        reasons["depth"] = "depth applies to the ImageNet nets of Table 1 (18, 34, 50, 101, 152)"
    if not _blocks(spec):
        reasons["residual"] = f"{what} has only plain conv stages: no blocks to add shortcuts to"
        reasons["shortcut"] = reasons["residual"]
    elif not spec.residual:
        reasons["shortcut"] = "a plain net has no shortcuts (choose residual to pick an option)"
    if "shortcut" in reasons:
        reasons["shortcut_kind"] = ("a plain net has no shortcuts to gate (choose residual for a gated, "
                                    "highway shortcut)" if _blocks(spec) else reasons["shortcut"])
    if not _blocks(spec):
        reasons["block_order"] = (f"{what} has no basic or bottleneck blocks: pre-activation reorders "
                                  "the BN and ReLU inside blocks")
    if not any(s.block == "bottleneck" for s in spec.stages):
        reasons["stride_at"] = "the stride placement applies to bottleneck blocks (ResNet-50, 101, 152)"
    return reasons


def controls_for(spec: ArchSpec) -> Controls:
    """Every family control's value for ``spec``, read through `zoo.identify`."""
    ident = identify(spec)
    n = _blocks(spec)[0].num_blocks if ident.family == "cifar" else None
    shown = ("residual", "shortcut", "stride_at", "input_size", "num_classes", "shortcut_kind", "block_order",
             "block")
    return Controls(
        family=ident.family, name=ident.name, n=n,
        depth=ident.depth if ident.family == "imagenet" else None,
        residual=spec.residual, shortcut=spec.shortcut, stride_at=spec.stride_at,
        input_size=spec.input_size, num_classes=spec.num_classes,
        shortcut_kind=spec.shortcut_kind, block_order=spec.block_order,
        block=_blocks(spec)[0].block if ident.family == "cifar" else None,
        options={k: v for k, v in ident.options.items() if k not in shown},
        disabled=disabled_reasons(spec, ident.family),
    )


def zoo_name(c: Controls) -> str:
    """The zoo name the family controls spell (``cifar-plain56``, ``resnet50``, ``vgg-e`` …)."""
    kind = "resnet" if c.residual else "plain"
    if c.family == "cifar":
        if not isinstance(c.n, int) or not 1 <= c.n <= MAX_N:
            raise SpecError(f"n={c.n!r} is invalid: use 1 … {MAX_N} (depth 6n+2)")
        return f"cifar-{kind}{(9 if c.block == 'bottleneck' else 6) * c.n + 2}"
    if c.family == "imagenet":
        if c.depth not in IMAGENET_BLOCKS:
            raise SpecError(f"ImageNet depth {c.depth!r} is invalid: use one of {', '.join(map(str, IMAGENET_BLOCKS))}")
        return f"{kind}{c.depth}"
    if c.family in ("vgg", "alexnet") and c.name:
        return c.name
    raise SpecError("a custom net is described by its stages: edit them below, or pick a preset or family")


def spec_from_controls(c: Controls) -> ArchSpec:
    """The spec the family controls describe: their zoo net, with their options."""
    options = dict(c.options, input_size=c.input_size, num_classes=c.num_classes)
    if c.family in ("cifar", "imagenet"):
        options.update(residual=c.residual, shortcut=c.shortcut, block_order=c.block_order)
        if c.residual:  # a plain twin has no gate
            options["shortcut_kind"] = c.shortcut_kind
        if c.family == "imagenet":
            options["stride_at"] = c.stride_at
        elif c.block:
            options["block"] = c.block
    return get_spec(zoo_name(c), **options)


def family_default(family: str, residual: bool) -> ArchSpec:
    """The net a family opens with when it is picked (plain or residual where that applies)."""
    return get_spec(FAMILY_DEFAULTS[family].format(kind="resnet" if residual else "plain"))
