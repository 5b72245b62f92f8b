"""The paper's tables reproduced from the specs, each row "paper vs ours"."""

from __future__ import annotations

from .count import CONVENTION, count
from .zoo import IMAGENET_BLOCKS, PUBLISHED, TABLE1_MACS, get_spec


def table1_rows() -> list[dict]:
    """Table 1: multiply-adds of the ImageNet nets (both stride placements), VGG-16/19."""
    rows = []
    for depth in IMAGENET_BLOCKS:
        ref = PUBLISHED[f"resnet{depth}"]
        v1 = count(get_spec(f"resnet{depth}", stride_at="1x1"))
        v15 = count(get_spec(f"resnet{depth}", stride_at="3x3"))
        plain = count(get_spec(f"plain{depth}", stride_at="1x1"))
        rows.append({
            "net": f"resnet{depth}",
            "paper_table1": ref.macs,
            "v1_ours": v1.macs, "v1_expected": TABLE1_MACS["1x1"][depth],
            "v1.5_ours": v15.macs, "v1.5_torchvision": TABLE1_MACS["3x3"][depth],
            "plain_ours": plain.macs,
            "params_ours": v15.params, "params_torchvision": ref.params,
        })
    return rows


def vgg_rows() -> list[dict]:
    rows = []
    for name, alias in (("vgg-d", "VGG-16"), ("vgg-e", "VGG-19")):
        c = count(get_spec(name))
        rows.append({"net": alias, "paper": PUBLISHED[name].macs, "ours": c.macs, "params": c.params})
    return rows


def table6_rows() -> list[dict]:
    """Table 6: CIFAR-10 nets, parameters ours vs paper, the published test error."""
    rows = []
    for depth in (20, 32, 44, 56, 110, 1202):
        ref = PUBLISHED[f"cifar-resnet{depth}"]
        c = count(get_spec(f"cifar-resnet{depth}"))
        plain = count(get_spec(f"cifar-plain{depth}"))
        rows.append({
            "net": f"ResNet-{depth}", "params_ours": c.params, "params_plain_ours": plain.params,
            "params_paper": ref.params, "macs_ours": c.macs, "test_error_paper": ref.cifar10_error,
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
    lines.append(
        f"plain-34 / VGG-19 = {plain34 / vggs[1]['ours']:.1%} (paper: 18%); "
        "v1 = stride on the first 1x1 conv (the paper), v1.5 = on the 3x3 (torchvision)"
    )
    return "\n".join(lines)


def table6() -> str:
    lines = [
        "Table 6 - CIFAR-10 nets (option A shortcuts, plain twins have the same parameters)",
        f"{'net':<14}{'params ours':>13}{'plain ours':>12}{'paper':>12}{'M-adds':>9}{'test err % (paper)':>20}",
    ]
    for r in table6_rows():
        lines.append(
            f"{r['net']:<14}{r['params_ours']:>13,}{r['params_plain_ours']:>12,}{r['params_paper']:>12,}"
            f"{r['macs_ours'] / 1e6:>9.1f}{r['test_error_paper']:>20.2f}"
        )
    return "\n".join(lines)
