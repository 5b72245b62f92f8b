"""The lesion view: delete k blocks of trained nets at random, k on a slider (Veit et al. 2016).

The lesions are measured once, in a background thread (the kernel stays free), for every k
the slider offers; moving the slider only redraws: the left panel marks k on each net's
curve of error against blocks deleted, the right one shows each draw at that k beside the
intact net.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..why.blocks import pick_blocks
from ..why.figures import net_style
from ..why.lesion import lesion
from ..why.sources import open_nets
from .messages import message_html, one_line
from .page import KernelLink, Reconnecting


def draws_text(results: Sequence[dict], k: int) -> str:
    """One line per net: its error with k blocks deleted (mean and range of the draws)."""
    parts = []
    for r in results:
        at = next((x for x in r["random"] if x["count"] == k), None)
        if k == 0:
            parts.append(f"{r['net']} {100 * r['base_error']:.1f} % (intact)")
        elif at is not None:
            parts.append(f"{r['net']} {100 * at['mean']:.1f} % ({100 * min(at['errors']):.1f}–"
                         f"{100 * max(at['errors']):.1f} over {len(at['errors'])} draws)")
        else:
            parts.append(f"{r['net']}: has fewer than {k} blocks to delete")
    return f"{k} block{'s' if k != 1 else ''} deleted: " + "; ".join(parts)


def _figure() -> go.FigureWidget:
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("training error by blocks deleted at random", "the draws at k"))
    fig.update_yaxes(title_text="training error (%)", range=[0, 100], row=1, col=1)
    fig.update_yaxes(range=[0, 100], row=1, col=2)
    fig.update_xaxes(title_text="blocks deleted", row=1, col=1)
    fig.update_layout(template="plotly_white", height=420, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0))
    return go.FigureWidget(fig)


class LesionView(Reconnecting, W.VBox):
    """Lesions of trained runs with a slider over the number of blocks deleted at random.

    ``runs``: run directories (or checkpoints with ``data``); ``counts``: the k offered
    (default: every k up to the most deletable blocks); ``draws``: random sets per k;
    ``images``: training images measured. `wait` joins the measuring thread."""

    _what = "This lesion view"

    def __init__(self, runs: Sequence[str | Path], data: str | None = None, counts: Sequence[int] | None = None,
                 draws: int = 5, images: int = 1000, seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.results: list[dict] = []
        self.error: str | None = None
        self.slider = W.SelectionSlider(options=[0], value=0, description="deleted", continuous_update=True,
                                        disabled=True, layout=W.Layout(width="420px"))
        self.readout = W.HTML()
        self.message = W.HTML(message_html("measuring the lesions…", "info"))
        self.figure = _figure()
        self.link = KernelLink(self.figure)
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.children = [self.slider, self.readout, self.message, self.figure, self.link]
        self.add_class("rx-lesion")
        for name, w in (("lesion-slider", self.slider), ("lesion-readout", self.readout),
                        ("lesion-figure", self.figure)):
            w.add_class(f"rx-{name}")
        self._thread = threading.Thread(target=self._measure, args=(list(runs), data, counts, draws, images, seed),
                                        daemon=True, name="rx-lesion")
        self._thread.start()

    def _measure(self, runs: list, data: str | None, counts: Sequence[int] | None, draws: int, images: int,
                 seed: int) -> None:
        try:
            nets, shared = open_nets(runs, data, images)
            for n in nets:
                self.message.value = message_html(f"measuring {n.name}…", "info")
                ks = list(counts) if counts is not None else list(range(1, len(pick_blocks(n.model, None, n.name)) + 1))
                self.results.append(lesion(n, images=shared, counts=ks, draws=draws, seed=seed, singles=False))
        except Exception as e:  # noqa: BLE001 - one line in the widget
            self.error = one_line(e)
            self.message.value = message_html(self.error)
            return
        self.message.value = ""
        self._draw_curves()
        ks = sorted({0} | {x["count"] for r in self.results for x in r["random"]})
        self.slider.options = ks
        self.slider.value = ks[min(len(ks) - 1, 1)]
        self.slider.disabled = False
        self.show(self.slider.value)

    def _draw_curves(self) -> None:
        with self.figure.batch_update():
            for i, r in enumerate(self.results):
                style = net_style(r, i)
                ks = [0] + [x["count"] for x in r["random"]]
                self.figure.add_trace(go.Scatter(
                    x=ks, y=[100 * r["base_error"]] + [100 * x["mean"] for x in r["random"]], mode="lines+markers",
                    name=r["net"], legendgroup=r["net"], line=style, marker=dict(size=5)), row=1, col=1)
            for i, r in enumerate(self.results):  # the marks at k (updated by `show`), then the draws at k
                self.figure.add_trace(go.Scatter(x=[], y=[], mode="markers", legendgroup=r["net"], showlegend=False,
                                                 marker=dict(size=14, color=net_style(r, i)["color"], symbol="circle-open",
                                                             line=dict(width=3))), row=1, col=1)
            for i, r in enumerate(self.results):
                self.figure.add_trace(go.Box(y=[], name=r["net"], legendgroup=r["net"], showlegend=False,
                                             boxpoints="all", jitter=0.4, pointpos=0, fillcolor="rgba(0,0,0,0)",
                                             marker=dict(color=net_style(r, i)["color"], size=8),
                                             line=dict(color=net_style(r, i)["color"])), row=1, col=2)
            self.link.fit(self.figure)

    def show(self, k: int) -> None:
        """Mark k on every curve and show the draws at k (the intact net's error at 0)."""
        n = len(self.results)
        if not n or len(self.figure.data) < 3 * n:
            return
        self.readout.value = f"<b>{draws_text(self.results, k)}</b>"
        with self.figure.batch_update():
            for i, r in enumerate(self.results):
                at = next((x for x in r["random"] if x["count"] == k), None)
                errors = [r["base_error"]] if k == 0 else (at["errors"] if at else [])
                mean = [100 * (r["base_error"] if k == 0 else at["mean"])] if (k == 0 or at) else []
                self.figure.data[n + i].update(x=[k] * len(mean), y=mean)
                self.figure.data[2 * n + i].update(y=[100 * e for e in errors])
            self.figure.layout.annotations[1].text = f"the draws at k = {k}"

    def wait(self, timeout: float | None = None) -> bool:
        """Join the measuring thread; True once the lesions are measured (or failed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
