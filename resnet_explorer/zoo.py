"""Every named network of the paper as an `ArchSpec`, each carrying the published numbers.

Names: ``resnet18`` … ``resnet152``, ``plain18`` … ``plain152`` (ImageNet, Table 1),
``cifar-resnetD`` / ``cifar-plainD`` for any depth D = 6n+2 (Sec. 4.2), and beyond the paper:
``cifar-highwayD`` (gated shortcuts, Srivastava et al. 2015), ``cifar-preresnetD`` and
``preresnet18`` … ``preresnet152`` (pre-activation, He et al. 2016; ``highwayN`` likewise).
CIFAR depths are basic blocks for 6n+2, bottlenecks (16/32/64 wide, ×4) for 9n+2 otherwise;
``cifar-preresnet164`` is the 2016 paper's bottleneck net (164 = 9·18+2) although 164 is also
6n+2 (``block="basic"`` gives that one; ``cifar-resnet164`` stays the basic net, and
``block="bottleneck"`` gives the 2016 paper's original ResNet-164). ``vgg-a``,
``vgg-a-lrn``, ``vgg-b`` … ``vgg-e`` (aliases ``vgg11/13/16/19``), ``alexnet`` (the two-GPU
split as groups=2) and ``alexnet-groups1``. The numbers the papers print for these nets are in `paper`, each
with the variant it belongs to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .spec import ArchSpec, ConvLayer, Head, Pool, SpecError, Stage

IMAGENET_BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# VGG Table 1: per stage, the kernel size of each conv ("1" = the 1×1 convs of config C).
VGG_CONFIGS = {
    "a": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "a-lrn": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "b": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "c": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "d": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "e": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)
VGG_ALIASES = {"vgg11": "vgg-a", "vgg13": "vgg-b", "vgg16": "vgg-d", "vgg19": "vgg-e",
               "vgg-11": "vgg-a", "vgg-13": "vgg-b", "vgg-16": "vgg-d", "vgg-19": "vgg-e"}


# The CIFAR depths the 2016 paper builds from bottlenecks (9n+2); 164 is also 6n+2.
PREACT_BOTTLENECK_DEPTHS = (164, 1001)

# The CIFAR-10 depths of Table 6 (6n+2), and the four of Fig. 6's plain and residual curves.
TABLE6_DEPTHS = (20, 32, 44, 56, 110, 1202)
FIG6_DEPTHS = (20, 32, 44, 56)

def imagenet_resnet(
    depth: int,
    residual: bool = True,
    shortcut: str = "B",
    stride_at: str = "1x1",
    input_size: int = 224,
    num_classes: int = 1000,
    width: int = 64,
    zero_init_residual: bool = False,
    shortcut_kind: str = "identity",
    block_order: str = "post",
) -> ArchSpec:
    """Table 1: ResNet / plain-N for N in 18, 34, 50, 101, 152 (stride at 1×1 = the paper);
    ``block_order="pre"``: the 2016 paper's pre-activation ResNet-N (``preresnetN``)."""
    if depth not in IMAGENET_BLOCKS:
        raise SpecError(
            f"ImageNet depth {depth} is invalid: use one of {', '.join(map(str, IMAGENET_BLOCKS))}"
        )
    block, counts = IMAGENET_BLOCKS[depth]
    stem = ConvLayer(width, kernel=7, stride=2, padding=3, pool=Pool(3, 2, 1))
    return _residual_family(
        f"{family_name(residual, shortcut_kind, block_order)}{depth}", stem, block, counts, width,
        residual=residual, shortcut=shortcut, stride_at=stride_at, input_size=input_size,
        num_classes=num_classes, zero_init_residual=zero_init_residual,
        shortcut_kind=shortcut_kind, block_order=block_order,
    )


def family_name(residual: bool, shortcut_kind: str = "identity", block_order: str = "post") -> str:
    """The zoo's name for a kind of net: plain, highway (gated), preresnet (pre) or resnet."""
    if not residual:
        return "plain"
    return "highway" if shortcut_kind == "gated" else "preresnet" if block_order == "pre" else "resnet"


def cifar_block(depth: int, block_order: str = "post") -> str:
    """The block a CIFAR depth names: basic for 6n+2, else bottleneck for 9n+2; pre-activation
    depths the 2016 paper builds from bottlenecks (164, 1001) are bottlenecks."""
    if block_order == "pre" and depth in PREACT_BOTTLENECK_DEPTHS:
        return "bottleneck"
    return "bottleneck" if isinstance(depth, int) and (depth - 2) % 6 and not (depth - 2) % 9 else "basic"


def cifar_resnet(
    depth: int,
    residual: bool = True,
    shortcut: str | None = None,
    input_size: int = 32,
    num_classes: int = 10,
    width: int = 16,
    zero_init_residual: bool = False,
    shortcut_kind: str = "identity",
    block_order: str = "post",
    block: str | None = None,
) -> ArchSpec:
    """Sec. 4.2: depth 6n+2 — a 3×3 conv, then 3 stages of n basic blocks (16/32/64 wide),
    shortcut option A. ``block="bottleneck"``: depth 9n+2, 3 stages of n bottlenecks 16/32/64
    wide (64/128/256 out) with option B, as the 2016 paper's ResNet-164 and -1001. ``block``
    defaults to `cifar_block` (depth)."""
    block = block or cifar_block(depth, block_order)
    per_block = {"basic": 6, "bottleneck": 9}
    if block not in per_block:
        raise SpecError(f"CIFAR block={block!r} is invalid: use basic or bottleneck")
    k = per_block[block]
    if not isinstance(depth, int) or depth < k + 2 or (depth - 2) % k:
        raise SpecError(
            f"CIFAR depth {depth} is invalid: use 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110 …) "
            f"for basic blocks, 9n+2 (11, 29, 164, 1001 …) for bottlenecks"
        )
    n = (depth - 2) // k
    return _residual_family(
        f"cifar-{family_name(residual, shortcut_kind, block_order)}{depth}", ConvLayer(width), block,
        (n, n, n), width, residual=residual, shortcut=shortcut or ("A" if block == "basic" else "B"),
        input_size=input_size, num_classes=num_classes, zero_init_residual=zero_init_residual,
        shortcut_kind=shortcut_kind, block_order=block_order,
    )


def _residual_family(name: str, stem: ConvLayer, block: str, counts: tuple[int, ...], width: int,
                     **fields: Any) -> ArchSpec:
    """conv1 (the stem), then conv2_x, conv3_x … of ``counts`` blocks, widths doubling and
    the map halving (stride 2 on each stage's first block) from conv3_x on."""
    stages = [Stage("conv1", "conv", layers=[stem])]
    for i, n in enumerate(counts):
        stages.append(Stage(f"conv{i + 2}_x", block, n, width * 2**i, 1 if i == 0 else 2))
    return ArchSpec(name=name, stages=stages, **fields)


def vgg(config: str, input_size: int = 224, num_classes: int = 1000, dropout: float = 0.5) -> ArchSpec:
    """VGG Table 1: configs A, A-LRN, B, C, D, E (3×3 convs with bias, no BN, 2×2 max-pools)."""
    key = config.lower()
    if key not in VGG_CONFIGS:
        raise SpecError(
            f"VGG config {config!r} is invalid: use one of {', '.join(c.upper() for c in VGG_CONFIGS)}"
        )
    stages = []
    for i, (kernels, width) in enumerate(zip(VGG_CONFIGS[key], VGG_WIDTHS)):
        layers = [ConvLayer(width, k, bias=True, bn=False) for k in kernels]
        layers[-1].pool = Pool(2, 2)
        if key == "a-lrn" and i == 0:
            layers[0].lrn = True
        stages.append(Stage(f"conv{i + 1}", "conv", layers=layers))
    return ArchSpec(
        name=f"vgg-{key}",
        stages=stages,
        head=Head("flatten-fc", [4096, 4096], dropout),
        residual=False,
        input_size=input_size,
        num_classes=num_classes,
    )


def alexnet(groups: int = 2, input_size: int = 227, num_classes: int = 1000, dropout: float = 0.5) -> ArchSpec:
    """AlexNet as in its paper: 96 11×11/4 filters, LRN after conv1/2, overlapping 3×3/2 pools.

    The two-GPU split is ``groups=2`` on conv2, conv4 and conv5 (each half sees only its
    own GPU's maps). The input is 227×227, the size that gives the paper's 55×55 conv1 maps.
    """
    if groups not in (1, 2):
        raise SpecError(f"AlexNet groups={groups} is invalid: use 1 or 2")
    overlap = Pool(3, 2)

    def conv(out: int, k: int, stride: int = 1, pad: int | None = None, g: int = 1, lrn=False, pool=None):
        return ConvLayer(out, k, stride, pad, g, bias=True, bn=False, lrn=lrn, pool=pool)

    layers = [
        conv(96, 11, 4, 0, lrn=True, pool=overlap),
        conv(256, 5, 1, 2, groups, lrn=True, pool=Pool(3, 2)),
        conv(384, 3),
        conv(384, 3, g=groups),
        conv(256, 3, g=groups, pool=Pool(3, 2)),
    ]
    return ArchSpec(
        name="alexnet" if groups == 2 else "alexnet-groups1",
        stages=[Stage(f"conv{i + 1}", "conv", layers=[layer]) for i, layer in enumerate(layers)],
        head=Head("flatten-fc", [4096, 4096], dropout),
        residual=False,
        input_size=input_size,
        num_classes=num_classes,
    )


_IMAGENET = re.compile(r"(resnet|plain|preresnet|highway)(\d+)")
_CIFAR = re.compile(r"cifar-(resnet|plain|preresnet|highway)(\d+)")
# What each name sets before the overrides.
_FAMILY = {"resnet": {}, "plain": {}, "preresnet": {"block_order": "pre"}, "highway": {"shortcut_kind": "gated"}}


def get_spec(name: str, **overrides: Any) -> ArchSpec:
    """The spec of a named net; keyword overrides go to its builder (``shortcut="A"`` …)."""
    key = name.lower().strip()
    key = VGG_ALIASES.get(key, key)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        for pattern, builder in ((_CIFAR, cifar_resnet), (_IMAGENET, imagenet_resnet)):
            if m := pattern.fullmatch(key):
                residual = overrides.pop("residual", True) and m[1] != "plain"
                family = {k: v for k, v in _FAMILY[m[1]].items() if residual or k != "shortcut_kind"}
                options = {**family, **overrides}  # a plain twin keeps the order, has no gate
                return builder(int(m[2]), residual=residual, **options).validate()
        if overrides.pop("residual", False):
            raise SpecError(f"{name} has no residual version: residual nets are resnetN / cifar-resnetN")
        if key.startswith("vgg-") and key[4:] in VGG_CONFIGS:
            return vgg(key[4:], **overrides).validate()
        if key in ("alexnet", "alexnet-groups1"):
            return alexnet(groups=1 if key.endswith("groups1") else 2, **overrides).validate()
    except TypeError:
        raise SpecError(
            f"{name} does not take option(s) {', '.join(sorted(overrides))}: shortcut, shortcut_kind "
            "and block_order apply to ResNets and plain nets, stride_at to the ImageNet ones, "
            "block to the CIFAR ones"
        ) from None
    raise SpecError(f"unknown architecture {name!r}: use one of {', '.join(arch_names())}")


def arch_names() -> list[str]:
    """The names `get_spec` knows (CIFAR depths stand for any 6n+2)."""
    names = [f"{k}{d}" for k in ("resnet", "plain", "preresnet") for d in IMAGENET_BLOCKS]
    names += ["cifar-resnetD", "cifar-plainD (D = 6n+2)", "cifar-highwayD", "cifar-preresnetD (6n+2, 9n+2)"]
    names += [f"vgg-{c}" for c in VGG_CONFIGS] + [a for a in VGG_ALIASES if "-" not in a]
    return names + ["alexnet", "alexnet-groups1"]


@dataclass(frozen=True)
class Identity:
    """Which named net a spec is: its family, its zoo name, and the `get_spec` options that
    rebuild it (``get_spec(name, **options)`` equals the spec, name aside)."""

    family: str  # cifar (6n+2) | imagenet (Table 1) | vgg | alexnet | custom
    name: str | None = None
    depth: int | None = None  # cifar: 6n+2; imagenet: 18 … 152
    options: dict[str, Any] = field(default_factory=dict)


def _candidates(spec: ArchSpec) -> list[Identity]:
    """The named nets ``spec`` could be, judged by its stages' block types and counts."""
    blocks = [s for s in spec.stages if not s.is_conv]
    stem = spec.stages[0].layers[0].out_channels if spec.stages and spec.stages[0].layers else 0
    common = dict(residual=spec.residual, input_size=spec.input_size, num_classes=spec.num_classes)
    res = dict(common, shortcut=spec.shortcut, zero_init_residual=spec.zero_init_residual, width=stem)
    if spec.shortcut_kind != "identity":
        res["shortcut_kind"] = spec.shortcut_kind
    if spec.block_order != "post":
        res["block_order"] = spec.block_order
    found = []
    kinds = {b.block for b in blocks}
    if len(blocks) == 3 and len(kinds) == 1 and blocks[0].num_blocks > 0:
        block = kinds.pop()
        depth = (6 if block == "basic" else 9) * blocks[0].num_blocks + 2
        options = res if block == cifar_block(depth, spec.block_order) else dict(res, block=block)
        found.append(Identity("cifar", f"cifar-resnet{depth}", depth, options))
    for depth, (block, counts) in IMAGENET_BLOCKS.items():
        if tuple(s.num_blocks for s in blocks) == counts and all(b.block == block for b in blocks):
            found.append(Identity("imagenet", f"resnet{depth}", depth, dict(res, stride_at=spec.stride_at)))
    if not blocks and not spec.residual:
        dropout = {"dropout": spec.head.dropout}
        plain = dict(input_size=spec.input_size, num_classes=spec.num_classes, **dropout)
        found += [Identity("vgg", f"vgg-{c}", None, plain) for c in VGG_CONFIGS]
        found += [Identity("alexnet", a, None, plain) for a in ("alexnet", "alexnet-groups1")]
    return found


def identify(spec: ArchSpec) -> Identity:
    """The zoo's name for ``spec`` (family, name, depth, options), or family ``custom``.

    One function for every place that needs to know which named net a spec is (the builder
    widget's controls, labels): the answer is checked by rebuilding the net from the zoo.
    """
    for ident in _candidates(spec):
        try:
            ref = get_spec(ident.name, **ident.options)
        except SpecError:
            continue
        if ref == spec.replace(name=ref.name):
            return Identity(ident.family, ref.name, ident.depth, ident.options)
    return Identity("custom")
