"""The widgets in the browser page: a line for when the kernel is gone, figures that fit their width.

A widget lives in the kernel: after the notebook is reopened (or the kernel restarted)
JupyterLab can only say "Error displaying widget: model not found", or show the state
saved with the notebook (Settings → Jupyter Widgets → save widget state), which no longer
reacts. So each widget is displayed as two outputs: a plain HTML line saying what to do
("re-run this cell to reconnect"), then the widget. A tiny `KernelLink` inside the widget
hides that line (a CSS rule scoped to this widget) wherever the widget is drawn, so the
line shows exactly where the widget cannot be: "model not found" after a reload, and
static views of the notebook (nbconvert, GitHub). Where JupyterLab saved the widget state,
the widgets are drawn from it as they were (that view is then the fallback; it does not
react until the cell runs again). While the kernel runs, a reloaded page draws each widget
from the kernel's state: the widgets keep their figures' synced state current (`keep_state`),
so a reload shows every point so far and goes on updating.

Plotly's FigureWidget draws at a fixed 700 px unless told its width, and it does not
follow JupyterLab's output area: the `KernelLink` watches the width of the widget it sits
in and sends it to the kernel, which gives it to the widget's figures, on every resize.
"""

from __future__ import annotations

import copy
import html
import threading
import uuid
from typing import Any

import anywidget
import plotly.graph_objects as go
import traitlets
from IPython.display import display

RECONNECT = "re-run this cell to reconnect"

_ESM = """
function render({ model, el }) {
  // drawn by a live widget manager: the line for a dead widget is not needed
  el.innerHTML = `<style>.rx-offline-${model.get("key")} { display: none !important; }</style>`;
  if (typeof ResizeObserver === "undefined") return;
  let sent = -1, timer = null;
  new ResizeObserver((entries) => {  // the width of the widget this link sits in
    const width = Math.floor(entries[0].contentRect.width);
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (width > 0 && Math.abs(width - sent) >= 4) {
        sent = width;
        try { model.send({ width }); } catch (e) { /* no kernel */ }
      }
    }, 120);
  }).observe(el);
}
export default { render };
"""


class KernelLink(anywidget.AnyWidget):
    """The widget's link to the page: hides the "re-run this cell" line wherever the widget
    is drawn, and sizes the widget's figures to its width in the browser."""

    _esm = _ESM
    key = traitlets.Unicode("").tag(sync=True)

    def __init__(self, *figures: go.FigureWidget, **kwargs: Any):
        super().__init__(key=uuid.uuid4().hex[:12], **kwargs)
        self.figures = list(figures)
        self.lock = threading.RLock()  # held while a figure is edited (a training thread redraws too)
        self.width: int | None = None  # the widget's width in the browser, once known
        self.on_msg(self._answer)

    def _answer(self, _widget: Any, content: Any, _buffers: Any) -> None:
        width = content.get("width") if isinstance(content, dict) else None
        if isinstance(width, int) and 200 <= width <= 20_000:
            self.width = width
            with self.lock:
                for fig in self.figures:
                    keep_state(self.fit(fig))

    def fit(self, fig: go.FigureWidget) -> go.FigureWidget:
        """Give ``fig`` the widget's width (when the browser has said it)."""
        if self.width is not None and fig.layout.width != self.width:
            fig.layout.width = self.width
        return fig


def keep_state(fig: go.FigureWidget) -> go.FigureWidget:
    """Make what ``fig`` syncs to the page its current data and layout.

    plotly's FigureWidget sends every edit to the views already drawn as a message, and syncs
    as its state the figure as it was when it was displayed: a view drawn later (the page
    reloaded, the notebook reopened while its kernel runs) would draw that old figure. After
    each batch of edits the widgets call this, so every view drawn from the kernel shows the
    figure as it is now. The views already drawn ignore the change (plotly redraws them from
    the edit messages only)."""
    fig._widget_data = copy.deepcopy(fig._data)
    fig._widget_layout = copy.deepcopy(fig._layout_obj._props)
    return fig


def offline_html(key: str, what: str) -> str:
    """The static line shown in place of a widget whose kernel is gone."""
    return (f"<div class='rx-offline rx-offline-{key}' style='color:#8a4b00;padding:4px 0'>"
            f"⟳ {html.escape(what)} is not connected to a running kernel: {RECONNECT} "
            "(Run ▸ Run Selected Cell).</div>")


class Reconnecting:
    """Mix-in: displayed as the fallback line and the live widget (``_live`` is the box shown)."""

    _what = "This widget"
    link: KernelLink

    def _live(self) -> Any:
        return self

    def display_bundles(self) -> list[dict[str, Any]]:
        """The outputs this widget displays: the fallback line's HTML, then the widget's view."""
        return [{"text/html": offline_html(self.link.key, self._what), "text/plain": f"({RECONNECT})"},
                self._live()._repr_mimebundle_()]

    def _ipython_display_(self) -> None:
        for bundle in self.display_bundles():
            display(bundle, raw=True)
