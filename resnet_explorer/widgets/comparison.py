"""The builder's tables: the net stage by stage, the papers' figures for it, and the paper's nets beside it."""

from __future__ import annotations

import html
import json

from ..count import Count
from ..paper import MACS, PARAMS, RESNET, PaperFigure, figure, figures_for
from ..spec import ArchSpec
from ..zoo import TABLE6_DEPTHS

# The paper's reference points, each a net and the variant it measured (multiply-adds at 224²,
# Table 1 and Sec. 3.3 / 4.1; params, Table 6).
A, B1 = {"shortcut": "A"}, {"shortcut": "B", "stride_at": "1x1"}
IMAGENET_REFS = [("vgg-e", {}), ("vgg-d", {}), ("plain34", {}), ("resnet18", A), ("resnet34", A),
                 ("resnet50", B1), ("resnet101", B1), ("resnet152", B1)]
CIFAR_REFS = [(f"cifar-resnet{d}", A) for d in TABLE6_DEPTHS]
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


def _attrs(f: PaperFigure, exact: bool) -> str:
    """The figure's identity as data attributes (what tests read back from the page)."""
    data = {"net": f.net, "variant": json.dumps(dict(f.variant), sort_keys=True), "quantity": f.quantity,
            "value": repr(f.value), "table": f.table, "source": f.source, "exact": "1" if exact else "0"}
    cls = "rx-paper" if exact else "rx-paper rx-reference"
    return f"class='{cls}' " + " ".join(f"data-{k}='{html.escape(v, quote=True)}'" for k, v in data.items())


def _ours(f: PaperFigure, c: Count) -> str:
    if f.quantity == MACS:
        return f" (ours {c.macs / 1e9:.2f} G)"
    return f" (ours {c.params:,})" if f.quantity == PARAMS else ""


def paper_html(spec: ArchSpec, c: Count) -> str:
    """The papers' figures for this net, each with its table and source: those of exactly this
    net as "paper", then those of the nearest variant the papers measured, each labelled as a
    reference with how this net differs (`paper.figures_for`)."""
    items = []
    for s in figures_for(spec):
        f = s.figure
        cite = f"<small style='color:#666'>{html.escape(f.cite)}</small>"
        if s.exact:
            items.append(f"<li {_attrs(f, True)}><b>paper</b>, {html.escape(f.label)}: "
                         f"{html.escape(f.text() + _ours(f, c))} · {cite}</li>")
        else:
            items.append(f"<li {_attrs(f, False)}><b>reference</b> (not this net: {html.escape(s.differs)}), "
                         f"<b>{html.escape(f.label)}</b>: {html.escape(f.text() + _ours(f, c))} · {cite}</li>")
    if not items:
        return "<div class='rx-paper-none' style='color:#666'>no paper prints a number for this net</div>"
    return ("<ul class='rx-paper-list' style='margin:4px 0;padding-left:18px;line-height:1.5'>"
            + "".join(items) + "</ul>")


def reference_table_html(spec: ArchSpec, c: Count) -> str:
    """This net's cost beside the paper's nets (multiply-adds at ImageNet scale, params on CIFAR),
    each row the paper's figure for exactly the net and variant it names."""
    imagenet = spec.input_size >= 100
    rows = []
    for name, variant in (IMAGENET_REFS if imagenet else CIFAR_REFS):
        f = figure(name, MACS if imagenet else PARAMS, source=RESNET, **variant)
        ours = c.macs if imagenet else c.params
        shown = f"{f.value / 1e9:.1f}&nbsp;G" if imagenet else html.escape(f.printed)
        rows.append(f"<tr><td><span {_attrs(f, False)}>{html.escape(f.label)}</span></td>"
                    f"<td style='text-align:right'>{shown}</td><td>{html.escape(f.table)}</td>"
                    f"<td style='text-align:right'>{100 * ours / f.value:.0f}&nbsp;%</td></tr>")
    what = "multiply-adds" if imagenet else "params"
    return (f"<table class='rx-comparison' style='white-space:nowrap'><tr><th>reference (the paper's net)</th>"
            f"<th>{what}</th><th>where</th><th>this net</th></tr>{''.join(rows)}</table>")


def comparison_html(spec: ArchSpec, c: Count) -> str:
    """`paper_html` and `reference_table_html` together."""
    return STYLE + paper_html(spec, c) + reference_table_html(spec, c)
