"""A plotly diagram of a network, drawn from its spec and its analytic count.

Stages are boxes from input to classifier (the box height follows the feature-map size,
so the net narrows as in the paper's Fig. 3), labelled in Table 1's notation
(``[3×3, 64; 3×3, 64] ×3``) with the output size under each box. Residual stages get an
arc over the box for their shortcuts, labelled with how many there are and how many are
projections (option B/C) or zero-padded identities (option A); plain nets have none. A
gated (highway) shortcut is drawn differently from an identity one: a dashed purple arc
with a **T** at its top, the gate T(x) that mixes F(x) with the shortcut. Pre-activation
blocks (He et al. 2016) are marked ``BN-ReLU first`` in their box and in the title.
Hovering a box shows the stage's parameters and multiply-adds.

`diagram_parts` returns plain dicts (one scatter trace, a layout) so a `FigureWidget`
can be updated in place cheaply; `network_diagram` wraps them into a ``go.Figure``.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from .count import Count, count, si
from .spec import ArchSpec, ConvLayer, Stage

COLORS = {"input": "#d9d9d9", "conv": "#bdbdbd", "basic": "#9ecae1", "bottleneck": "#fdae6b",
          "head": "#a1d99b"}
STEP, BOX_W = 1.0, 0.8  # horizontal spacing of the boxes and their width
ARC = {"identity": dict(color="#d62728", width=2),  # the paper's shortcut: solid red
       "gated": dict(color="#9467bd", width=2, dash="dash")}  # a highway gate: dashed purple, "T" on top
PX_PER_Y = 62  # vertical pixels per unit of the y axis: the figure's height follows its content


def _layer_text(layer: ConvLayer) -> str:
    text = f"{layer.kernel}×{layer.kernel}, {layer.out_channels}"
    if layer.stride > 1:
        text += f", /{layer.stride}"
    if layer.groups > 1:
        text += f", g{layer.groups}"
    return text


def stage_text(stage: Stage, stride_at: str = "1x1", block_order: str = "post") -> str:
    """Table 1's notation for a stage, one line per layer (``<br>`` separated); the stride
    of the stage's first block is marked on the layer that carries it; pre-activation
    blocks get a first line ``BN-ReLU first``."""
    if stage.is_conv:
        lines = []
        for layer in stage.layers:
            text = _layer_text(layer)
            if lines and lines[-1][0] == text:
                lines[-1][1] += 1
            else:
                lines.append([text, 1])
            if layer.pool:
                lines.append([f"pool {layer.pool.kernel}×{layer.pool.kernel}, /{layer.pool.stride}", 1])
        return "<br>".join(t if n == 1 else f"{t} ×{n}" for t, n in lines)
    w = stage.width
    if stage.block == "basic":
        body, strided = [f"3×3, {w}", f"3×3, {w}"], 0
    else:
        body = [f"1×1, {w}", f"3×3, {w}", f"1×1, {stage.out_channels}"]
        strided = 0 if stride_at == "1x1" else 1  # the paper (v1) or torchvision (v1.5)
    if stage.stride > 1:
        body[strided] += f", /{stage.stride}"
    if block_order == "pre":
        body.insert(0, "BN-ReLU first")
    return "<br>".join(body) + f"<br><b>×{stage.num_blocks}</b>"


def _shortcut_text(spec: ArchSpec, stage: Stage, c: Count) -> str:
    rows = [r for r in c.rows if r.stage == stage.name]
    proj = sum(r.name.endswith(".shortcut.conv") for r in rows)
    pad = sum(r.kind == "shortcut" for r in rows)
    parts = [f"{stage.num_blocks} shortcut{'s' if stage.num_blocks != 1 else ''} ({spec.shortcut})"]
    if proj:
        parts.append(f"{proj} projection{'s' if proj > 1 else ''}")
    if pad:
        parts.append(f"{pad} zero-pad")
    return "<br>".join(parts)  # one short line each: the labels of neighbouring arcs never meet


def diagram_parts(spec: ArchSpec, counted: Count | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the hover trace, the layout) of the diagram of ``spec``, as plain dicts."""
    c = counted if counted is not None else count(spec)
    stages = c.by_stage()
    boxes: list[dict[str, Any]] = [{
        "name": "input", "kind": "input", "text": f"{spec.in_channels}×{spec.input_size}²",
        "out": (spec.in_channels, spec.input_size, spec.input_size), "params": 0, "macs": 0,
    }]
    for stage in spec.stages:
        s = stages[stage.name]
        boxes.append({"name": stage.name, "kind": stage.block, "stage": stage,
                      "text": stage_text(stage, spec.stride_at, spec.block_order), "out": s["out"],
                      "params": s["params"], "macs": s["macs"]})
    names = {s.name for s in spec.stages}
    head = [v for k, v in stages.items() if k not in names]
    head_params, head_macs = sum(v["params"] for v in head), sum(v["macs"] for v in head)
    hidden = "".join(f"<br>fc {h}" for h in spec.head.hidden)
    pool = "avg pool" if spec.head.kind == "avgpool-fc" else "flatten"
    boxes.append({"name": "head", "kind": "head", "text": f"{pool}{hidden}<br>fc {spec.num_classes}",
                  "out": (spec.num_classes, 1, 1), "params": head_params, "macs": head_macs})

    big = max(math.log2(max(b["out"][1], 1)) for b in boxes) or 1.0
    shapes, annotations, xs, ys, hover = [], [], [], [], []
    top, bottom = 0.0, 0.0  # the content's extent on the y axis
    for i, b in enumerate(boxes):
        x = i * STEP
        h = 1.2 + 1.4 * math.log2(max(b["out"][1], 1)) / big
        x0, x1 = x - BOX_W / 2, x + BOX_W / 2
        shapes.append(dict(type="rect", x0=x0, x1=x1, y0=-h / 2, y1=h / 2, line=dict(color="#555", width=1),
                           fillcolor=COLORS[b["kind"]], layer="below"))
        annotations.append(dict(x=x, y=h / 2 + 0.05, text=f"<b>{b['name']}</b>", showarrow=False,
                                yanchor="bottom", font=dict(size=11)))
        annotations.append(dict(x=x, y=0, text=b["text"], showarrow=False, font=dict(size=11)))
        ch, hh, ww = b["out"]
        size = f"{hh}×{ww}×{ch}" if b["kind"] != "head" else f"{ch} classes"
        annotations.append(dict(x=x, y=-h / 2 - 0.05, text=size, showarrow=False, yanchor="top",
                                font=dict(size=10, color="#333")))
        top, bottom = max(top, h / 2 + 0.3), min(bottom, -h / 2 - 0.35)  # the name above, the size below
        if i:
            shapes.append(dict(type="line", x0=x - STEP + BOX_W / 2, x1=x0, y0=0, y1=0,
                               line=dict(color="#555", width=1)))
        stage = b.get("stage")
        if spec.has_shortcuts and stage is not None and not stage.is_conv:
            y0 = h / 2 + 0.35
            text = _shortcut_text(spec, stage, c)
            arc = ARC[spec.shortcut_kind]
            shapes.append(dict(type="path", path=f"M {x0 + 0.05},{y0} Q {x},{y0 + 0.9} {x1 - 0.05},{y0}",
                               line=arc))
            if spec.shortcut_kind == "gated":  # the gate sits on the arc: its top is at y0 + 0.45
                annotations.append(dict(x=x, y=y0 + 0.45, text="<b>T</b>", showarrow=False, bgcolor="white",
                                        font=dict(size=10, color=arc["color"])))
                text += "<br>gated by T(x)"
            annotations.append(dict(x=x, y=y0 + 0.5 + (0.2 if spec.shortcut_kind == "gated" else 0), text=text,
                                    showarrow=False, yanchor="bottom", font=dict(size=9, color=arc["color"])))
            top = max(top, y0 + 0.5 + (0.2 if spec.shortcut_kind == "gated" else 0)
                      + 0.22 * (text.count("<br>") + 1))
        xs.append(x)
        ys.append(0)
        hover.append(f"<b>{b['name']}</b><br>output {size}<br>params {b['params']:,}"
                     f"<br>multiply-adds {b['macs']:,}")

    kind = "ResNet" if spec.has_shortcuts else "plain net (no shortcuts)"
    if spec.is_gated:
        kind = "ResNet with gated (highway) shortcuts"
    if spec.is_preactivation:
        kind = f"pre-activation {kind}"
    title = (f"{spec.name}: {spec.depth} layers, {kind}; {c.params:,} parameters, "
             f"{si(c.macs)} multiply-adds")
    trace = dict(type="scatter", x=xs, y=ys, mode="markers", hovertext=hover, hoverinfo="text",
                 marker=dict(size=28, opacity=0), showlegend=False, name="stages")
    layout = dict(
        title=dict(text=title, font=dict(size=14)), shapes=shapes, annotations=annotations,
        xaxis=dict(visible=False, range=[-0.6, (len(boxes) - 1) * STEP + 0.6], fixedrange=True),
        yaxis=dict(visible=False, range=[bottom, top], fixedrange=True),
        height=round((top - bottom) * PX_PER_Y) + 45, autosize=True,
        margin=dict(l=10, r=10, t=35, b=5), plot_bgcolor="white",
    )
    return trace, layout


def network_diagram(spec: ArchSpec, counted: Count | None = None) -> go.Figure:
    """The diagram of ``spec``: stages as boxes, shortcuts as arcs, sizes labelled."""
    trace, layout = diagram_parts(spec, counted)
    return go.Figure(data=[trace], layout=layout)
