"""The paper's tables reproduced from the specs, each row "paper vs ours", and one net's counts
as ``resnet-explorer info`` prints them (`format_info`)."""

from __future__ import annotations

from .count import CONVENTION, Count, count, si
from .spec import ArchSpec
from .paper import (CIFAR10, MACS, PARAMS, PREACT, RESNET, TABLE1_MACS, TOP1, TOP5, TORCHVISION_PARAMS, Shown,
                    figure, figures_for, other_nets, paper_columns, sources_text)
from .zoo import IMAGENET_BLOCKS, TABLE6_DEPTHS, get_spec

# The variants the ResNet paper measured: options A (18, 34 layers) and B with v1 (50, 101, 152).
PAPER_VARIANT = {18: {"shortcut": "A"}, 34: {"shortcut": "A"}, 50: {"shortcut": "B", "stride_at": "1x1"},
                 101: {"shortcut": "B", "stride_at": "1x1"}, 152: {"shortcut": "B", "stride_at": "1x1"}}


def table1_rows() -> list[dict]:
    """Table 1: multiply-adds of the ImageNet nets (both stride placements), VGG-16/19."""
    rows = []
    for depth in IMAGENET_BLOCKS:
        v1 = count(get_spec(f"resnet{depth}", stride_at="1x1"))
        v15 = count(get_spec(f"resnet{depth}", stride_at="3x3"))
        plain = count(get_spec(f"plain{depth}", stride_at="1x1"))
        rows.append({
            "net": f"resnet{depth}",
            "paper_table1": figure(f"resnet{depth}", MACS, **PAPER_VARIANT[depth]).value,
            "v1_ours": v1.macs, "v1_expected": TABLE1_MACS["1x1"][depth],
            "v1.5_ours": v15.macs, "v1.5_torchvision": TABLE1_MACS["3x3"][depth],
            "plain_ours": plain.macs,
            "params_ours": v15.params, "params_torchvision": TORCHVISION_PARAMS[depth],
        })
    return rows


def vgg_rows() -> list[dict]:
    rows = []
    for name, alias in (("vgg-d", "VGG-16"), ("vgg-e", "VGG-19")):
        c = count(get_spec(name))
        rows.append({"net": alias, "paper": figure(name, MACS).value, "ours": c.macs, "params": c.params})
    return rows


def table6_rows() -> list[dict]:
    """Table 6: CIFAR-10 nets, parameters ours vs paper, the published test error."""
    rows = []
    for depth in TABLE6_DEPTHS:
        params, error = (figure(f"cifar-resnet{depth}", q, source=RESNET) for q in (PARAMS, CIFAR10))
        c = count(get_spec(f"cifar-resnet{depth}"))
        plain = count(get_spec(f"cifar-plain{depth}"))
        rows.append({
            "net": f"ResNet-{depth}", "params_ours": c.params, "params_plain_ours": plain.params,
            "params_paper": params.value, "params_paper_printed": params.printed, "macs_ours": c.macs,
            "test_error_paper": error.value, "source": f"{error.table}, {error.source}",
        })
    return rows


def _g(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x / 1e9:.{digits}f}"


def table1() -> str:
    lines = [
        "Table 1 - ImageNet nets at 224x224, multiply-adds in G (" + CONVENTION + ")",
        f"{'net':<11}{'paper':>7}{'v1 ours':>9}{'v1 exp.':>9}{'v1.5 ours':>11}{'v1.5 tv':>9}"
        f"{'plain':>8}{'params ours':>14}{'params tv':>12}",
    ]
    for r in table1_rows():
        lines.append(
            f"{r['net']:<11}{_g(r['paper_table1'], 1):>7}{_g(r['v1_ours']):>9}{_g(r['v1_expected']):>9}"
            f"{_g(r['v1.5_ours']):>11}{_g(r['v1.5_torchvision']):>9}{_g(r['plain_ours']):>8}"
            f"{r['params_ours']:>14,}{r['params_torchvision']:>12,}"
        )
    vggs = vgg_rows()
    for r in vggs:
        lines.append(f"{r['net']:<11}{_g(r['paper'], 1):>7}{_g(r['ours']):>9}   (params {r['params']:,})")
    plain34 = count(get_spec("plain34")).macs
    lines += [
        f"plain-34 / VGG-19 = {plain34 / vggs[1]['ours']:.1%} (paper: 18%); "
        "v1 = stride on the first 1x1 conv (the paper), v1.5 = on the 3x3 (torchvision)",
        "paper: Table 1's FLOPs (18/34: the layers it lists, no projections; 50-152: option B, v1). Ours are "
        "option B. v1 exp.: what our v1 count should be (the paper's number, to 3 digits for 50-152); v1.5 tv "
        "and params tv: torchvision 0.29's counts, measured (no paper prints a parameter count)",
    ]
    return "\n".join(lines)


def table6() -> str:
    lines = [
        "Table 6 - CIFAR-10 nets (option A shortcuts, plain twins have the same parameters)",
        f"{'net':<14}{'params ours':>13}{'plain ours':>12}{'paper':>8}{'M-adds':>9}{'test err % (paper)':>20}",
    ]
    for r in table6_rows():
        lines.append(
            f"{r['net']:<14}{r['params_ours']:>13,}{r['params_plain_ours']:>12,}{r['params_paper_printed']:>8}"
            f"{r['macs_ours'] / 1e6:>9.1f}{r['test_error_paper']:>20.2f}"
        )
    return "\n".join(lines)


def table3_rows() -> list[dict]:
    """Table 3's shortcut options for ResNet-34: our parameters and multiply-adds per
    option, beside the published 10-crop top-1 / top-5 errors."""
    rows = []
    for option in "ABC":
        top1, top5 = (figure("resnet34", q, shortcut=option).value for q in (TOP1, TOP5))
        c = count(get_spec("resnet34", shortcut=option))
        shortcut_params = sum(r.params for r in c.rows if ".shortcut" in r.name)
        rows.append({"net": f"ResNet-34 {option}", "option": option, "params": c.params, "macs": c.macs,
                     "shortcut_params": shortcut_params, "top1_paper": top1, "top5_paper": top5})
    return rows


def table3() -> str:
    lines = [
        "Table 3 - ResNet-34 with shortcut options A/B/C (errors: ImageNet val, 10-crop, the paper's)",
        f"{'net':<14}{'params':>13}{'in shortcuts':>14}{'G M-adds':>10}{'top-1 %':>9}{'top-5 %':>9}",
    ]
    for r in table3_rows():
        lines.append(f"{r['net']:<14}{r['params']:>13,}{r['shortcut_params']:>14,}{r['macs'] / 1e9:>10.2f}"
                     f"{r['top1_paper']:>9.2f}{r['top5_paper']:>9.2f}")
    return "\n".join(lines)


BASELINES = ("alexnet", "vgg-a", "vgg-d", "vgg-e", "plain34", "resnet18", "resnet34", "resnet50", "resnet101",
             "resnet152")


def baseline_rows(names: tuple[str, ...] = BASELINES) -> list[dict]:
    """AlexNet, VGG and the ResNets side by side: our parameters and multiply-adds, the share
    of parameters in fc layers, and the papers' numbers where there are any (`paper.paper_columns`:
    this net's own, else another variant's, whose quantities are listed in ``references``)."""
    rows = []
    for name in names:
        spec = get_spec(name)
        c = count(spec)
        cols = paper_columns(spec)
        fc = sum(r.params for r in c.rows if r.kind == "fc")
        rows.append({
            "net": name, "depth": spec.depth, "params": c.params, "macs": c.macs,
            "fc_params": fc, "fc_share": fc / c.params, **_paper_values(cols, top1=TOP1, top5=TOP5),
            "references": [q for q, s in cols.items() if not s.exact], "source": sources_text(cols.values()),
        })
    return rows


def _paper_values(cols: dict[str, Shown], **more: str) -> dict:
    """``params_paper``, ``macs_paper`` and ``<key>_paper`` for each quantity in ``more``."""
    wanted = {"params": PARAMS, "macs": MACS, **more}
    return {f"{k}_paper": cols[q].figure.value if q in cols else None for k, q in wanted.items()}


def _opt(x: float | None, fmt: str, reference: bool = False) -> str:
    """A paper's number in a text table: "-" where there is none, a "*" where it is another net's."""
    return "-" if x is None else format(x, fmt) + ("*" if reference else "")


def baselines(names: tuple[str, ...] = BASELINES) -> str:
    """The baselines table as text (224×224 input, 227×227 for AlexNet)."""
    lines = [
        "AlexNet, VGG and ResNet: ours (counted) beside the papers' numbers; errors: ImageNet top-1/top-5 %",
        f"{'net':<11}{'layers':>7}{'params':>14}{'in fc':>7}{'G M-adds':>10}{'paper G':>9}{'top-1':>7}{'top-5':>7}  source",
    ]
    for r in baseline_rows(names):
        lines.append(
            f"{r['net']:<11}{r['depth']:>7}{r['params']:>14,}{r['fc_share']:>7.0%}{_g(r['macs']):>10}"
            f"{_g(r['macs_paper'], 1) + ('*' if MACS in r['references'] else ''):>9}"
            f"{_opt(r['top1_paper'], '.2f', TOP1 in r['references']):>7}"
            f"{_opt(r['top5_paper'], '.2f', TOP5 in r['references']):>7}  {r['source']}"
        )
    lines.append("*: the paper's figure for another variant of the net (named in the source column); "
                 "no paper prints the ResNets' parameter counts")
    return "\n".join(lines)


BEYOND = ("cifar-resnet20", "cifar-highway20", "cifar-highway32", "cifar-preresnet20", "cifar-preresnet110",
          "cifar-preresnet164", "cifar-preresnet1001", "preresnet50", "preresnet101", "preresnet152")


def beyond_rows(names: tuple[str, ...] = BEYOND) -> list[dict]:
    """Gated (highway) and pre-activation nets: our exact counts (all parameters, and conv +
    fc weights alone, which is what the 2016 paper's rounded "10.2 M" counts) beside the
    published numbers, and the post-activation error the 2016 paper compares with."""
    rows = []
    for name in names:
        spec = get_spec(name)
        c = count(spec)
        cols = paper_columns(spec)
        depth = spec.depth
        post = _post_activation_error(spec)
        rows.append({
            "net": name, "depth": depth, "block": spec.stages[1].block, "order": spec.block_order,
            "shortcut": spec.shortcut, "kind": spec.shortcut_kind, "params": c.params,
            "weights": sum(r.params for r in c.rows if r.kind in ("conv", "fc")),
            "gate_params": sum(r.params for r in c.rows if ".gate." in r.name), "macs": c.macs,
            **_paper_values(cols, cifar10_error=CIFAR10, top1=TOP1, top5=TOP5), "post_error_paper": post,
            "references": [q for q, s in cols.items() if not s.exact], "source": sources_text(cols.values()),
        })
    return rows


def _post_activation_error(spec: ArchSpec) -> float | None:
    """For a pre-activation CIFAR net: the 2016 paper's error of its original-unit twin."""
    if spec.block_order != "pre" or spec.input_size != 32:
        return None
    twin = spec.replace(block_order="post")
    found = [s.figure.value for s in figures_for(twin)
             if s.exact and s.figure.quantity == CIFAR10 and s.figure.source == PREACT]
    return found[0] if found else None


def beyond() -> str:
    """The gated and pre-activation nets as text, with ResNet Table 6's two highway rows."""
    lines = [
        "Beyond the paper: highway-gated shortcuts and pre-activation blocks (ours counted; papers' numbers)",
        f"{'net':<20}{'layers':>7}{'block':>11}{'params':>12}{'conv+fc':>12}{'in gates':>10}{'M-adds':>10}"
        f"{'paper':>8}{'err %':>7}{'post':>6}  source",
    ]
    for r in beyond_rows():
        err, err_q = ((r["cifar10_error_paper"], CIFAR10) if r["cifar10_error_paper"] is not None
                      else (r["top1_paper"], TOP1))
        ref = [q in r["references"] for q in (PARAMS, err_q)]
        paper = _opt(None if r["params_paper"] is None else r["params_paper"] / 1e6, ".2f", ref[0])
        lines.append(
            f"{r['net']:<20}{r['depth']:>7}{r['block']:>11}{r['params']:>12,}{r['weights']:>12,}"
            f"{r['gate_params']:>10,}{r['macs'] / 1e6:>10.1f}{paper:>8}{_opt(err, '.2f', ref[1]):>7}"
            f"{_opt(r['post_error_paper'], '.2f'):>6}  {r['source'] or 'no published number'}")
    for params, err in zip(other_nets(PARAMS), other_nets(CIFAR10)):
        layers = params.name.split(", ")[1].split()[0]
        lines.append(f"{'Highway (paper)':<20}{layers:>7}{'-':>11}{'-':>12}{'-':>12}{'-':>10}{'-':>10}"
                     f"{params.value / 1e6:>8.2f}{err.value:>7.2f}{'-':>6}  ResNet {params.table} "
                     "(the highway paper's net)")
    lines.append("err %: CIFAR-10 test error (ImageNet rows: top-1, single 320x320 crop); post: the 2016 "
                 "paper's original-unit error at that depth; conv+fc: weights without BN; paper: params in M; "
                 "*: a figure of another net, named in the source column")
    return "\n".join(lines)


def format_info(c: Count, spec: ArchSpec, layers: bool = False) -> str:
    """What ``resnet-explorer info`` prints: totals, the paper's number, per-stage (and per-layer) rows."""
    lines = [
        f"{spec.name}: {spec.depth} weighted layers, {spec.describe()}; "
        f"input {spec.input_size}x{spec.input_size}, {spec.num_classes} classes",
        f"  params          {c.params:>16,}",
        f"  multiply-adds   {c.macs:>16,}  ({si(c.macs)})",
        f"  other ops       {c.other_ops:>16,}  (BN, pooling, shortcut additions; not in the FLOPs)",
        f"  convention: {CONVENTION}",
    ]
    for shown in figures_for(spec):
        f = shown.figure
        whose = "paper" if shown.exact else f"paper, for {f.label} (a reference: this net has {shown.differs})"
        lines.append(f"  {whose}: {f.text()} ({f.cite})")
    lines.append("")
    lines.append(f"  {'stage':<10} {'output':>14} {'params':>14} {'multiply-adds':>16}")
    for name, s in c.by_stage().items():
        shape = "x".join(map(str, s["out"]))
        lines.append(f"  {name:<10} {shape:>14} {s['params']:>14,} {s['macs']:>16,}")
    if layers:
        lines.append("")
        lines.append(
            f"  {'layer':<28} {'kind':<8} {'output':>14} {'params':>12} {'multiply-adds':>15} {'other ops':>12}"
        )
        for r in c.rows:
            shape = "x".join(map(str, r.out_shape))
            lines.append(
                f"  {r.name:<28} {r.kind:<8} {shape:>14} {r.params:>12,} {r.macs:>15,} {r.other_ops:>12,}"
            )
    return "\n".join(lines)
