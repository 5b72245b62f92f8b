"""Plotly figures of the three analyses, each a function of their plain-data results.

Colours follow the project's convention (`figures.DEPTH_COLORS`: one colour per depth);
plain nets are dashed, residual nets solid, as in Fig. 6.
"""

from __future__ import annotations

import math
from typing import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..figures import DEPTH_COLORS, OTHER_COLORS

Fig = go.Figure | go.FigureWidget


def net_style(r: dict, i: int = 0) -> dict:
    """The line of one net: its depth's colour (one per depth, so a plain net and its
    residual twin share it), dashed when plain."""
    color = DEPTH_COLORS.get(r["depth"], OTHER_COLORS[r["depth"] % len(OTHER_COLORS)])
    return dict(color=color, dash="solid" if r["residual"] else "dash")


def _finish(fig: go.Figure, widget: bool) -> Fig:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    return go.FigureWidget(fig) if widget else fig


def lesion_figure(results: Sequence[dict], widget: bool = False) -> Fig:
    """Left: the training error with each single block deleted, by the block's place in its
    net (0 = input, 1 = output, so nets of different depths line up; the intact net's error
    dotted). Right: the error against the number of blocks deleted at random (Veit et al.'s
    Fig. 5), each draw a dot, the mean a line."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "one block deleted", "blocks deleted at random"))
    for i, r in enumerate(results):
        style = net_style(r, i)
        fig.add_trace(go.Scatter(x=[d["position"] for d in r["deleted"]], y=[100 * d["error"] for d in r["deleted"]],
                                 mode="lines+markers", name=r["net"], legendgroup=r["net"], line=style,
                                 text=[d["block"] for d in r["deleted"]],
                                 hovertemplate="%{text} deleted: %{y:.1f} %<extra>" + r["net"] + "</extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=[0, 1], y=[100 * r["base_error"]] * 2, mode="lines",
                                 line=dict(color=style["color"], dash="dot", width=1),
                                 legendgroup=r["net"], showlegend=False, hoverinfo="skip"), row=1, col=1)
        ks = [0] + [d["count"] for d in r["random"]]
        fig.add_trace(go.Scatter(x=ks, y=[100 * r["base_error"]] + [100 * d["mean"] for d in r["random"]],
                                 mode="lines", line=style, legendgroup=r["net"], showlegend=False,
                                 hovertemplate="%{x} deleted: mean %{y:.1f} %<extra>" + r["net"] + "</extra>"),
                      row=1, col=2)
        dots = [(d["count"], 100 * e) for d in r["random"] for e in d["errors"]]
        fig.add_trace(go.Scatter(x=[k for k, _ in dots], y=[e for _, e in dots], mode="markers",
                                 marker=dict(color=style["color"], size=6, opacity=0.6), legendgroup=r["net"],
                                 showlegend=False, hoverinfo="skip"), row=1, col=2)
    fig.update_yaxes(title_text="training error (%)", range=[0, 100], row=1, col=1)
    fig.update_yaxes(range=[0, 100], row=1, col=2)
    fig.update_xaxes(title_text="place of the deleted block in the net (0 = first, 1 = last)", range=[0, 1],
                     row=1, col=1)
    fig.update_xaxes(title_text="number of blocks deleted", row=1, col=2)
    fig.update_layout(height=440)
    return _finish(fig, widget)


def gradients_figure(results: Sequence[dict], widget: bool = False) -> Fig:
    """Left, one strip per net: f's slope along the line of inputs (∂f/∂x · u, scaled to its
    largest value), brown noise for a residual net, white noise for a deep plain one.
    Right: the gradients' correlation against the distance between inputs (in steps)."""
    n = max(1, len(results))
    fig = make_subplots(rows=n, cols=2, horizontal_spacing=0.1, vertical_spacing=0.04, column_widths=[0.55, 0.45],
                        specs=[[{}, {"rowspan": n}]] + [[{}, None]] * (n - 1),
                        subplot_titles=("slope of f along a line of inputs (seed 0)", "gradient correlation by distance"))
    for i, r in enumerate(results):
        style = net_style(r, i)
        top = max((abs(v) for v in r["slope"]), default=1.0) or 1.0
        t = [2 * k / (len(r["slope"]) - 1) - 1 for k in range(len(r["slope"]))]
        fig.add_trace(go.Scatter(x=t, y=[v / top for v in r["slope"]], mode="lines", name=r["arch"],
                                 legendgroup=r["arch"], line=dict(color=style["color"], width=1.2),
                                 hovertemplate="t %{x:.2f}<extra>" + r["arch"] + "</extra>"), row=i + 1, col=1)
        fig.update_yaxes(title_text=r["arch"].replace("cifar-", ""), showticklabels=False, range=[-1.05, 1.05],
                         title_font=dict(size=11), row=i + 1, col=1)
        fig.update_xaxes(showticklabels=i == n - 1, row=i + 1, col=1)
        fig.add_trace(go.Scatter(x=list(range(1, len(r["lags"]) + 1)), y=r["lags"], mode="lines+markers",
                                 legendgroup=r["arch"], showlegend=False, line=style,
                                 hovertemplate="lag %{x}: %{y:.3f}<extra>" + r["arch"] + "</extra>"), row=1, col=2)
    fig.update_xaxes(title_text="position t on the line", row=n, col=1)
    fig.update_xaxes(title_text="distance (steps along the line)", row=1, col=2)
    fig.update_yaxes(title_text="cosine similarity", range=[-0.1, 1.0], row=1, col=2)
    fig.update_layout(height=max(380, 110 * n + 120))
    return _finish(fig, widget)


def depth_figure(result: dict, widget: bool = False) -> Fig:
    """The gradient correlation at initialisation against depth, plain vs residual."""
    fig = go.Figure()
    for kind, dash in (("plain", "dash"), ("residual", "solid")):
        fig.add_trace(go.Scatter(x=result["depths"], y=result[kind], mode="lines+markers", name=kind,
                                 line=dict(color="#555" if kind == "plain" else "#d62728", dash=dash)))
    fig.update_xaxes(title_text="depth (6n+2 layers)", type="log", tickvals=result["depths"])
    fig.update_yaxes(title_text="gradient correlation at init", range=[-0.1, 1.0])
    fig.update_layout(height=380, title="Shattered gradients: plain nets lose it with depth")
    return _finish(fig, widget)


def depth_slider_figure(results: Sequence[dict]) -> go.Figure:
    """`gradients.sweep`'s nets with a depth slider (it works without a kernel): left, the
    correlation against depth, the chosen depth marked; right, f's slope along the line in
    the plain and the residual net of that depth."""
    depths = sorted({r["depth"] for r in results})
    at = {(r["residual"], r["depth"]): r for r in results}
    fig = make_subplots(rows=2, cols=2, column_widths=[0.4, 0.6], specs=[[{"rowspan": 2}, {}], [None, {}]],
                        horizontal_spacing=0.1, vertical_spacing=0.12,
                        subplot_titles=("gradient correlation at init", "plain: slope of f along the line",
                                        "residual: slope of f along the line"))
    for residual, color in ((False, "#555"), (True, "#d62728")):
        fig.add_trace(go.Scatter(x=depths, y=[at[(residual, d)]["correlation"] for d in depths], mode="lines+markers",
                                 name="residual" if residual else "plain",
                                 line=dict(color=color, dash="solid" if residual else "dash")), row=1, col=1)
    fixed = len(fig.data)
    for d in depths:
        for j, residual in enumerate((False, True)):
            r = at[(residual, d)]
            top = max((abs(v) for v in r["slope"]), default=1.0) or 1.0
            fig.add_trace(go.Scatter(x=[2 * k / (len(r["slope"]) - 1) - 1 for k in range(len(r["slope"]))],
                                     y=[v / top for v in r["slope"]], mode="lines", visible=d == depths[0],
                                     showlegend=False, line=dict(color="#d62728" if residual else "#555", width=1.2),
                                     name=r["arch"]), row=j + 1, col=2)
        fig.add_trace(go.Scatter(x=[d, d], y=[at[(False, d)]["correlation"], at[(True, d)]["correlation"]],
                                 mode="markers", visible=d == depths[0], showlegend=False, hoverinfo="skip",
                                 marker=dict(size=16, symbol="circle-open", color="#1f77b4", line=dict(width=3))),
                      row=1, col=1)
    steps = []
    for i, d in enumerate(depths):
        visible = [True] * fixed + [k // 3 == i for k in range(3 * len(depths))]
        words = f"depth {d}: plain {at[(False, d)]['correlation']:.2f}, residual {at[(True, d)]['correlation']:.2f}"
        steps.append(dict(method="update", label=str(d), args=[{"visible": visible}, {"title.text": words}]))
    first = depths[0]
    fig.update_layout(sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="depth: "), pad=dict(t=50))],
                      title=f"depth {first}: plain {at[(False, first)]['correlation']:.2f}, "
                            f"residual {at[(True, first)]['correlation']:.2f}", height=520)
    fig.update_xaxes(title_text="depth (6n+2)", type="log", tickvals=depths, row=1, col=1)
    fig.update_yaxes(title_text="cosine of neighbouring gradients", range=[-0.1, 1.05], row=1, col=1)
    fig.update_yaxes(showticklabels=False, range=[-1.05, 1.05], col=2)
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=90, b=40),
                      legend=dict(x=0.01, y=0.02, xanchor="left", yanchor="bottom", bgcolor="rgba(255,255,255,0.8)"))
    return fig


def surface_range(results: Sequence[dict]) -> tuple[float, float]:
    """One log10 loss scale for the surfaces drawn side by side: from half the lowest
    trained loss to ten times chance (ln 10 for 10 classes) or the highest trained loss."""
    low = min(r["base_loss"] for r in results) / 2
    return math.log10(low), math.log10(10 * max(math.log(10), max(r["base_loss"] for r in results)))


def _log_loss(v: float, top: float) -> float:
    return top if not math.isfinite(v) or v <= 0 else min(math.log10(v), top)


def landscape_figure(results: Sequence[dict], widget: bool = False) -> Fig:
    """The 2-D slices side by side as 3-D surfaces (turn them with the mouse): log10 of the
    loss on one shared scale (`surface_range`), capped at its top (diverged points would
    flatten the rest)."""
    results = [r for r in results if r.get("surface")]
    low, top = surface_range(results) if results else (0.0, 1.0)
    n = max(1, len(results))
    fig = make_subplots(rows=1, cols=n, specs=[[{"type": "surface"}] * n], horizontal_spacing=0.02,
                        subplot_titles=[f"{r['net']} (trained loss {r['base_loss']:.2f})" for r in results])
    ticks = [v for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if low <= math.log10(v) <= top]
    for i, r in enumerate(results):
        z = [[_log_loss(v, top) for v in row] for row in r["surface"]]
        fig.add_trace(go.Surface(x=r["alphas"], y=r["alphas"], z=z, cmin=low, cmax=top, colorscale="Viridis",
                                 showscale=i == n - 1, name=r["net"], customdata=r["surface"],
                                 colorbar=dict(title="loss", tickvals=[math.log10(v) for v in ticks],
                                               ticktext=[f"{v:g}" for v in ticks], len=0.8),
                                 hovertemplate="α %{x:.2f}, β %{y:.2f}: loss %{customdata:.3f}<extra>"
                                 + r["net"] + "</extra>"), row=1, col=i + 1)
        fig.layout["scene" if i == 0 else f"scene{i + 1}"].update(
            xaxis_title="α (d₁)", yaxis_title="β (d₂)", aspectmode="cube",
            zaxis=dict(title="loss", range=[low, top], tickvals=[math.log10(v) for v in ticks],
                       ticktext=[f"{v:g}" for v in ticks]),
            camera=dict(eye=dict(x=1.6, y=-1.6, z=0.9)))
    fig.update_layout(height=480, margin=dict(l=10, r=10, t=60, b=10))
    return go.FigureWidget(fig) if widget else fig


def rise_figure(results: Sequence[dict], widget: bool = False) -> Fig:
    """Left: the loss along each random direction. Right: the mean rise of the loss over
    the directions (both signs) against the step |α|: how fast the loss climbs out of the
    trained weights."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "loss along random directions", "mean loss rise by step"))
    for i, r in enumerate(results):
        style = net_style(r, i)
        for k, s in enumerate(r["slices"]):
            fig.add_trace(go.Scatter(x=r["alphas"], y=s["loss"], mode="lines", name=r["net"], legendgroup=r["net"],
                                     showlegend=k == 0, line=dict(**style, width=1.5), opacity=0.8,
                                     hovertemplate="α %{x:.2f}: loss %{y:.3f}<extra>" + r["net"] + f" d{k + 1}</extra>"),
                          row=1, col=1)
        fig.add_trace(go.Scatter(x=[p["alpha"] for p in r["rise"]], y=[p["mean"] for p in r["rise"]],
                                 mode="lines+markers", legendgroup=r["net"], showlegend=False, line=style),
                      row=1, col=2)
    fig.update_xaxes(title_text="step α (fraction of each filter's norm)", row=1, col=1)
    fig.update_yaxes(title_text="training loss", type="log", row=1, col=1)
    fig.update_xaxes(title_text="|α|", row=1, col=2)
    fig.update_yaxes(title_text="loss rise", rangemode="tozero", row=1, col=2)
    fig.update_layout(height=420)
    return _finish(fig, widget)
