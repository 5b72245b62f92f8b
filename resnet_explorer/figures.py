"""Plotly figures of runs: Fig. 6 error curves, Fig. 7 layer responses, gradient norms, costs.

Every figure is a function of run directories (written by `resnet_explorer.train`; the
gates figure: of `analysis.gate_means` results) and
returns a ``plotly.graph_objects.Figure``, or a ``go.FigureWidget`` with ``widget=True``
(for notebooks; `update_error_curves` refreshes one in place during training).

Colours follow depth (20 / 32 / 44 / 56 / 110 have fixed colours) so that plain-56 and
ResNet-56 match across Fig. 6's two panels; runs drawn in one panel that share a depth
(plain and ResNet in Fig. 7, the shortcut options A/B/C of one depth) get distinct colours.
A run is known by its directory's full path (`run_key`): two runs of one name in different
folders never share a trace or a colour; the legend says which folder when names repeat.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .count import CONVENTION, count
from .runs import Run, load_runs
from .safeio import atomic_write
from .spec import GATE_BIAS_INIT, ArchSpec
from .zoo import get_spec

DEPTH_COLORS = {20: "#e69f00", 32: "#0099cc", 44: "#2ca02c", 56: "#d62728", 110: "#6a3d9a"}
OTHER_COLORS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#ff7f0e",
                "#9467bd", "#000000", "#a6761d"]
X_TITLES = {"iter": "iterations", "epoch": "epochs", "wall_time": "wall time (s)"}
PNG_HINT = ("PNG export needs kaleido: pip install kaleido==0.2.1 "
            "(or kaleido>=1 with a local Chrome)")

if TYPE_CHECKING:  # (go.FigureWidget loads ipywidgets and nbformat: 1.5 s of CPU a process that draws none)
    Fig = go.Figure | go.FigureWidget
PathLike = str | os.PathLike


def run_key(run: Run) -> str:
    """A run's identity in a figure: its directory's full path."""
    return str(Path(run.dir).resolve())


def _uid(run: Run) -> str:
    """A short stable id from `run_key`, usable where plotly needs a CSS-safe trace uid."""
    return "r" + hashlib.sha1(run_key(run).encode()).hexdigest()[:12]


def run_labels(runs: Sequence[Run]) -> dict[str, str]:
    """The legend label per `run_key`: the run's name, and its folder's when two runs share it."""
    names = [r.name for r in runs]
    return {run_key(r): r.name if names.count(r.name) == 1 else f"{r.dir.resolve().parent.name}/{r.name}"
            for r in runs}


def run_colors(runs: Sequence[Run], one_panel: bool = False) -> dict[str, str]:
    """A colour per `run_key`, by depth. Runs that would look alike get distinct colours:
    those sharing depth and plain/residual, or (``one_panel``) any two sharing a depth."""
    unusual = sorted({r.spec.depth for r in runs} - set(DEPTH_COLORS))
    base = {**DEPTH_COLORS, **{d: OTHER_COLORS[i % len(OTHER_COLORS)] for i, d in enumerate(unusual)}}
    used = {base[r.spec.depth] for r in runs}
    spare = [c for c in OTHER_COLORS + list(DEPTH_COLORS.values()) if c not in used] or OTHER_COLORS
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.spec.depth,) if one_panel else (r.spec.depth, r.spec.residual), []).append(r)
    colors, n_spare = {}, 0
    for (depth, *_), members in groups.items():
        # the residual net keeps the depth's colour; then by name, then by folder
        keys = sorted(dict.fromkeys((not r.spec.residual, r.name, run_key(r)) for r in members))
        for i, (*_, key) in enumerate(keys):
            if i == 0:
                colors[key] = base[depth]
            else:
                colors[key] = spare[n_spare % len(spare)]
                n_spare += 1
    return colors


def _dash(run: Run) -> str:
    return "solid" if run.spec.residual else "dash"


def _finish(fig: go.Figure, widget: bool) -> Fig:
    return go.FigureWidget(fig) if widget else fig


# -- Fig. 6: training and test error ---------------------------------------------------------------
def _curve(run: Run, kind: str, x: str) -> tuple[list, list]:
    """x values and error in percent of a run's train or eval lines."""
    key = "train_error" if kind == "train" else "test_error"
    rows = [r for r in run.rows("train" if kind == "train" else "eval") if r.get(key) is not None]
    return [r.get(x) for r in rows], [100.0 * r[key] for r in rows]


def _error_traces(run: Run, color: str, label: str, x: str) -> list[go.Scatter]:
    traces = []
    # test evaluations are sparse (one at the end of a short run): markers keep a lone one visible
    for kind, dash, width, mode in (("train", "dash", 1, "lines"), ("test", "solid", 3, "lines+markers")):
        xs, ys = _curve(run, kind, x)
        traces.append(go.Scatter(
            x=xs, y=ys, mode=mode, name=f"{label} {kind}", legendgroup=run_key(run), marker=dict(size=6),
            line=dict(color=color, dash=dash, width=width),
            meta={"run": run_key(run), "kind": kind}, uid=f"{_uid(run)}-{kind}",
            hovertemplate=f"{label} {kind}<br>%{{x}}: %{{y:.2f}} %<extra></extra>",
        ))
    return traces


def error_curves(run_dirs: Iterable[PathLike], x: str = "iter", widget: bool = False) -> Fig:
    """Fig. 6: training (dashed, thin) and test (bold) error in %, plain left, ResNet right."""
    if x not in X_TITLES:
        raise ValueError(f"x must be one of {', '.join(X_TITLES)}, got {x!r}")
    runs = load_runs(run_dirs)
    colors, labels = run_colors(runs), run_labels(runs)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("plain", "ResNet"), shared_yaxes=True,
                        horizontal_spacing=0.09)
    for run in runs:
        for trace in _error_traces(run, colors[run_key(run)], labels[run_key(run)], x):
            fig.add_trace(trace, row=1, col=2 if run.spec.residual else 1)
    fig.update_xaxes(title_text=X_TITLES[x])
    # each panel its own numbers and label: the shared axis would show them on the left one only,
    # next to an empty plain panel when only ResNets are drawn
    fig.update_yaxes(title_text="error (%)", showticklabels=True)
    fig.update_layout(title="Training (dashed) and test (bold) error", height=450,
                      meta={"x": x}, legend=dict(groupclick="togglegroup"))
    return _finish(fig, widget)


def update_error_curves(fig: Fig, run_dirs: Iterable[PathLike]) -> Fig:
    """Make the error curves of ``fig`` (made by `error_curves`) those of ``run_dirs``, in place.

    Traces are matched by run directory (`run_key`), never by name: a run's curves are
    updated, traces of runs no longer listed are dropped, new runs' traces appended. A
    FigureWidget is updated in one batch, so the notebook redraws once.
    """
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    x = meta.get("x", "iter")
    runs = load_runs(run_dirs)
    colors, labels = run_colors(runs), run_labels(runs)
    fresh = {}
    for run in runs:
        for trace in _error_traces(run, colors[run_key(run)], labels[run_key(run)], x):
            fresh[(trace.meta["run"], trace.meta["kind"])] = (trace, 2 if run.spec.residual else 1)

    def key(t: go.Scatter) -> tuple | None:
        m = t.meta if isinstance(t.meta, dict) else {}
        return (m.get("run"), m.get("kind"))

    kept = [t for t in fig.data if key(t) in fresh]
    new = [fresh[k] for k in fresh if k not in {key(t) for t in kept}]
    with fig.batch_update() if isinstance(fig, go.FigureWidget) else nullcontext():
        if len(kept) != len(fig.data):
            fig.data = kept
        for t in kept:
            trace = fresh[key(t)][0]
            t.x, t.y, t.name, t.line.color = trace.x, trace.y, trace.name, trace.line.color
            t.hovertemplate = trace.hovertemplate
    for trace, col in new:
        fig.add_trace(trace, row=1, col=col)
    return fig


# -- Fig. 7: layer responses ------------------------------------------------------------------------
def layer_responses_figure(run_dirs: Iterable[PathLike], widget: bool = False) -> Fig:
    """Fig. 7: std of each 3×3 layer's response, in layer order (top) and sorted (bottom)."""
    runs = [r for r in load_runs(run_dirs) if r.analysis and r.analysis.get("layer_responses")]
    colors, labels = run_colors(runs, one_panel=True), run_labels(runs)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16,
                        subplot_titles=("layer index (original order)",
                                        "sorted by magnitude (descending)"))
    for run in runs:
        layers = run.analysis["layer_responses"]
        ordered = sorted(layers, key=lambda l: l["std"], reverse=True)
        for row, items in ((1, layers), (2, ordered)):
            fig.add_trace(go.Scatter(
                x=list(range(1, len(items) + 1)), y=[l["std"] for l in items],
                text=[l["name"] for l in items], mode="lines+markers", marker=dict(size=4),
                name=labels[run_key(run)], legendgroup=run_key(run), showlegend=row == 1,
                line=dict(color=colors[run_key(run)], dash=_dash(run), width=2), meta={"run": run_key(run)},
                hovertemplate=f"{labels[run_key(run)]}<br>%{{text}}: std %{{y:.3f}}<extra></extra>",
            ), row=row, col=1)
    fig.update_xaxes(title_text="layer index", row=1, col=1)
    fig.update_xaxes(title_text="layer index (sorted)", row=2, col=1)
    fig.update_yaxes(title_text="std")
    fig.update_layout(title="Layer responses: std of each 3×3 layer's output after BN "
                            "(plain dashed, ResNet solid)", height=700)
    _clip_outliers(fig, runs)
    return _finish(fig, widget)


def _clip_outliers(fig: go.Figure, runs: Sequence[Run]) -> None:
    """A few layers far above the rest (a plain net's first layers) would squash every other
    line into a band at the bottom: the y axes then end above the bulk of the values, and a
    note names what is off the scale (double-clicking the figure shows everything)."""
    values = sorted(l["std"] for r in runs for l in r.analysis["layer_responses"])
    if len(values) < 10:
        return
    bulk = values[int(0.95 * (len(values) - 1))]
    if values[-1] <= 2 * bulk:
        return
    top = 1.25 * bulk
    fig.update_yaxes(range=[0, top])
    labels = run_labels(runs)
    off = [f"{labels[run_key(r)]} {l['name']} {l['std']:.2f}" for r in runs
           for l in r.analysis["layer_responses"] if l["std"] > top]
    fig.add_annotation(text=f"off the scale: {', '.join(off[:4])}{' …' if len(off) > 4 else ''} "
                            "(double-click to see all)", xref="x domain", yref="y domain", x=1, y=1,
                       xanchor="right", yanchor="top", showarrow=False, bgcolor="rgba(255,255,255,0.8)",
                       font=dict(size=11, color="#8a4b00"))


# -- highway gates ----------------------------------------------------------------------------------
def gates_figure(series: Mapping[str, Sequence], widget: bool = False) -> Fig:
    """The mean gate T(x) of each block of gated nets, input to output: ``series`` is
    {label: `analysis.gate_means` (…)} (or their dicts, as an experiment's
    ``analysis.json`` holds them, or [(block name, mean), …]). The dotted line is
    σ(b_T) at initialisation; T → 1 means the block has closed its shortcut."""
    fig = go.Figure()
    for i, (label, means) in enumerate(series.items()):
        means = [_gate_entry(m) for m in means]
        pairs = [(n, v) for n, v, _ in means]
        spread = [sd for _, _, sd in means]
        fig.add_trace(go.Scatter(
            x=list(range(1, len(pairs) + 1)), y=[v for _, v in pairs], text=[n for n, _ in pairs],
            mode="lines+markers", name=label, line=dict(color=OTHER_COLORS[i % len(OTHER_COLORS)], width=2),
            error_y=dict(type="data", array=spread, visible=True, thickness=1) if None not in spread else None,
            hovertemplate=f"{label}<br>%{{text}}: mean T %{{y:.3f}}<extra></extra>"))
    init = 1 / (1 + math.exp(-GATE_BIAS_INIT))
    fig.add_hline(y=init, line=dict(dash="dot", color="#7f7f7f"),
                  annotation_text=f"at initialisation: σ({GATE_BIAS_INIT:g}) = {init:.2f}")
    fig.update_layout(title="Highway gates: mean T(x) per block (1 = shortcut closed, 0 = F skipped)",
                      xaxis_title="block (input → output)", yaxis_title="mean T(x) (± std)",
                      yaxis_range=[0, 1], height=420)
    return _finish(fig, widget)


def _gate_entry(m: object) -> tuple[str, float, float | None]:
    """(block, mean, std) from a `GateMean`, its dict (as in analysis.json) or a (name, mean) pair."""
    if isinstance(m, Mapping):
        return m["name"], m["mean"], m.get("std")
    if hasattr(m, "mean"):
        return m.name, m.mean, getattr(m, "std", None)
    return m[0], m[1], None


# -- gradient norms ---------------------------------------------------------------------------------
def norm_trace(name: str, pairs: Sequence[tuple[str, float]], dash: str, color: str | None = None) -> go.Scatter:
    """One line of per-layer norms ``[(layer name, value), ...]``, layer index on x."""
    return go.Scatter(
        x=list(range(1, len(pairs) + 1)), y=[v for _, v in pairs], text=[n for n, _ in pairs],
        mode="lines+markers", marker=dict(size=4), name=name,
        line=dict(color=color, dash=dash, width=2),
        hovertemplate=f"{name}<br>%{{text}}: %{{y:.3g}}<extra></extra>",
    )


def gradient_norms_figure(run_dirs: Iterable[PathLike], which: str = "init", widget: bool = False) -> Fig:
    """The L2 norm of each conv / fc weight's gradient, input to output (log scale)."""
    if which not in ("init", "final"):
        raise ValueError(f"which must be 'init' or 'final', got {which!r}")
    runs = [r for r in load_runs(run_dirs)
            if r.analysis and r.analysis.get("gradient_norms", {}).get(which)]
    colors, labels = run_colors(runs, one_panel=True), run_labels(runs)
    fig = go.Figure()
    for run in runs:
        fig.add_trace(norm_trace(labels[run_key(run)], run.analysis["gradient_norms"][which], _dash(run),
                                 colors[run_key(run)]))
    when = "at initialisation" if which == "init" else "after training"
    fig.update_layout(title=f"Gradient norm per layer {when} (plain dashed, ResNet solid)",
                      xaxis_title="layer index (conv layers, then fc)",
                      yaxis_title="‖∂E/∂W‖", yaxis_type="log",
                      yaxis_exponentformat="power", height=450)
    return _finish(fig, widget)


def gradient_history_figure(run_dirs: Iterable[PathLike], widget: bool = False) -> Fig:
    """Gradient norms during training: one heatmap per run, layer (input at the bottom) by
    iteration, coloured by log10 of the norm on one scale for all runs."""
    runs = [r for r in load_runs(run_dirs) if r.rows("grad")]
    cols = min(2, max(1, len(runs)))
    rows = max(1, -(-len(runs) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[r.name for r in runs] or [""],
                        horizontal_spacing=0.08, vertical_spacing=0.2)
    for i, run in enumerate(runs):
        lines = run.rows("grad")
        layers = list(lines[0]["norms"])
        z = [[math.log10(max(line["norms"].get(n, 0.0), 1e-12)) for line in lines] for n in layers]
        fig.add_trace(go.Heatmap(
            x=[line["iter"] for line in lines], y=list(range(1, len(layers) + 1)), z=z,
            coloraxis="coloraxis", customdata=[[n] * len(lines) for n in layers],
            hovertemplate="%{customdata}<br>iteration %{x}<br>log10 norm %{z:.2f}<extra></extra>",
        ), row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": "log10 ‖∂E/∂W‖"}},
                      height=320 * rows, title="Gradient norm per layer during training")
    fig.update_xaxes(title_text="iterations")
    fig.update_yaxes(title_text="layer (input → output)")
    return _finish(fig, widget)


# -- costs ------------------------------------------------------------------------------------------
def cost_bars(specs_or_names: Sequence[ArchSpec | str], widget: bool = False,
              labels: Sequence[str] | None = None) -> Fig:
    """Grouped bars: parameters (millions, left axis) and multiply-adds (right axis) per net."""
    specs = [get_spec(s) if isinstance(s, str) else s for s in specs_or_names]
    names = list(labels) if labels is not None else [
        s if isinstance(s, str) else s.name for s in specs_or_names]
    counts = [count(s) for s in specs]
    macs = [c.macs for c in counts]
    scale, unit = (1e9, "G") if max(macs, default=0) >= 1e9 else (1e6, "M")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    params_m = [c.params / 1e6 for c in counts]
    macs_u = [m / scale for m in macs]
    fig.add_trace(go.Bar(x=names, y=params_m, name="params (M)", offsetgroup="params",
                         text=[f"{v:.3g}" for v in params_m], textposition="outside"),
                  secondary_y=False)
    fig.add_trace(go.Bar(x=names, y=macs_u, name=f"multiply-adds ({unit})", offsetgroup="macs",
                         text=[f"{v:.3g}" for v in macs_u], textposition="outside"),
                  secondary_y=True)
    fig.update_yaxes(title_text="parameters (M)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text=f"multiply-adds ({unit})", secondary_y=True, rangemode="tozero")
    fig.update_layout(barmode="group", height=450,
                      title=f"Parameters and multiply-adds<br><sup>{CONVENTION}</sup>")
    return _finish(fig, widget)


# -- saving -----------------------------------------------------------------------------------------
def save_figure(fig: Fig, path: PathLike, width: int = 1000, height: int | None = None) -> Path:
    """Write ``fig`` as self-contained ``.html`` (plotly.js inlined) or ``.png`` (kaleido)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".html":
        data = fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
    elif suffix == ".png":
        data = png_bytes(fig, width, height or fig.layout.height or 500)
    else:
        raise ValueError(f"save_figure writes .html or .png, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, data)


def png_bytes(fig: Fig, width: int = 1000, height: int = 500) -> bytes:
    """A PNG of ``fig``: kaleido >= 1 through plotly, or kaleido 0.2.1 driven directly.

    plotly 7 only talks to kaleido >= 1 (which needs Chrome); the self-contained
    kaleido 0.2.1 still works when given plotly's own bundled plotly.js, offline.
    """
    try:
        version = importlib.metadata.version("kaleido")
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(PNG_HINT) from None
    if int(version.split(".")[0]) >= 1:
        return fig.to_image(format="png", width=width, height=height)
    return _kaleido0_scope().transform(fig.to_dict(), format="png", width=width, height=height)


_SCOPE = None


def _kaleido0_scope():
    """One kaleido 0.2.x scope per process (it keeps a headless Chromium running)."""
    global _SCOPE
    if _SCOPE is None:
        import plotly
        from kaleido.scopes.plotly import PlotlyScope

        plotlyjs = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        _SCOPE = PlotlyScope(plotlyjs=str(plotlyjs))
    return _SCOPE
