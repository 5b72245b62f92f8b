"""The builder's two tables: the net stage by stage, and the net beside the paper's references."""

from __future__ import annotations

import html

from ..count import Count
from ..diagram import si
from ..spec import ArchSpec
from ..zoo import PUBLISHED, TABLE6_DEPTHS, published

# The paper's reference points (multiply-adds at 224², Table 1 and Sec. 3.3; params Table 6).
IMAGENET_REFS = [("VGG-19", "vgg-e"), ("VGG-16", "vgg-d"), ("plain-34 / ResNet-34", "resnet34"),
                 ("ResNet-18", "resnet18"), ("ResNet-50", "resnet50"), ("ResNet-101", "resnet101"),
                 ("ResNet-152", "resnet152")]
CIFAR_REFS = [(f"ResNet-{d}", f"cifar-resnet{d}") for d in TABLE6_DEPTHS]
# numbers never wrap ("17.3 %" stays on one line); cells get room to breathe
STYLE = ("<style>.rx-stages td, .rx-stages th, .rx-comparison td, .rx-comparison th "
         "{ padding: 1px 8px; white-space: nowrap; }</style>")


def stage_table_html(c: Count) -> str:
    """Output size, parameters, multiply-adds and share of the multiply-adds of each stage."""
    rows = "".join(
        f"<tr><td><code>{k}</code></td><td>{v['out'][1]}×{v['out'][2]}×{v['out'][0]}</td>"
        f"<td style='text-align:right'>{v['params']:,}</td><td style='text-align:right'>{v['macs']:,}</td>"
        f"<td style='text-align:right'>{100 * v['macs'] / max(c.macs, 1):.1f}&nbsp;%</td></tr>"
        for k, v in c.by_stage().items())
    return (
        STYLE + "<table class='rx-stages' style='white-space:nowrap'><tr><th>stage</th><th>output H×W×C</th><th>params</th>"
        f"<th>multiply-adds</th><th>share</th></tr>{rows}<tr><td><b>total</b></td><td></td>"
        f"<td style='text-align:right'><b>{c.params:,}</b></td>"
        f"<td style='text-align:right'><b>{c.macs:,}</b></td><td></td></tr></table>")


def comparison_html(spec: ArchSpec, c: Count) -> str:
    """This net beside the paper's reference nets (FLOPs at ImageNet scale, params on CIFAR)."""
    lines = []
    ref = published(spec)
    if ref is not None:
        paper = []
        if ref.params:
            paper.append(f"{si(ref.params)} params (ours {c.params:,})")
        if ref.macs:
            paper.append(f"{ref.macs / 1e9:.1f} G multiply-adds (ours {c.macs / 1e9:.2f} G)")
        for label, v in (("top-1", ref.top1), ("top-5", ref.top5), ("CIFAR-10 error", ref.cifar10_error)):
            if v is not None:
                paper.append(f"{label} {v} %")
        lines.append(f"<p><b>paper</b> ({html.escape(ref.source)}): {', '.join(paper)}</p>")
    imagenet = spec.input_size >= 100
    refs = IMAGENET_REFS if imagenet else CIFAR_REFS
    rows = []
    for label, name in refs:
        p = PUBLISHED[name]
        if imagenet:
            rows.append(f"<tr><td>{label}</td><td style='text-align:right'>{p.macs / 1e9:.1f}&nbsp;G</td>"
                        f"<td style='text-align:right'>{100 * c.macs / p.macs:.0f}&nbsp;%</td></tr>")
        else:
            rows.append(f"<tr><td>{label}</td><td style='text-align:right'>{si(p.params)}</td>"
                        f"<td style='text-align:right'>{100 * c.params / p.params:.0f}&nbsp;%</td></tr>")
    what = "multiply-adds (paper)" if imagenet else "params (paper)"
    return ("<div class='rx-comparison'>" + "".join(lines)
            + f"<table style='white-space:nowrap'><tr><th>reference</th><th>{what}</th><th>this net</th></tr>{''.join(rows)}</table></div>")


