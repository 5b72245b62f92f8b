"""The widgets in the browser page: a line for when the kernel is gone, figures that fit their width.

A widget lives in the kernel: after the notebook is reopened (or the kernel restarted)
JupyterLab can only say "Error displaying widget: model not found", or show the state
saved with the notebook (Settings → Jupyter Widgets → save widget state), which no longer
reacts. So each widget is displayed as two outputs: a plain HTML line saying what to do
("re-run this cell to reconnect"), then the widget. A tiny `KernelLink` inside the widget
pings the kernel when it is drawn; only when the kernel answers does it hide the line (a
CSS rule scoped to this widget), so the line stays wherever the widget is dead, and in
static views of the notebook (nbconvert, GitHub).

Plotly's FigureWidget draws at a fixed 700 px unless told to follow its container:
`fit_width` makes a figure responsive, and the `KernelLink` nudges such figures to take
the output's full width once they are drawn.
"""

from __future__ import annotations

import html
import uuid
from typing import Any

import anywidget
import plotly.graph_objects as go
import traitlets
from IPython.display import display

RECONNECT = "re-run this cell to reconnect"

_ESM = """
function fit() { window.dispatchEvent(new Event("resize")); }  // responsive plotly figures re-measure
if (!window.__rxFit) {
  window.__rxFit = true;
  document.addEventListener("plotlywidget-after-render", () => setTimeout(fit, 50));
}
function render({ model, el }) {
  const key = model.get("key");
  model.on("msg:custom", (msg) => {
    if (msg && msg.pong === key) {
      el.innerHTML = `<style>.rx-offline-${key} { display: none !important; }</style>`;
    }
  });
  try { model.send({ ping: key }); } catch (e) { /* no kernel: the line stays */ }
  setTimeout(fit, 300);
  setTimeout(fit, 1500);
}
export default { render };
"""


class KernelLink(anywidget.AnyWidget):
    """Answers the browser's ping, so the "re-run this cell" line hides while the kernel lives."""

    _esm = _ESM
    key = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any):
        super().__init__(key=uuid.uuid4().hex[:12], **kwargs)
        self.on_msg(self._answer)

    def _answer(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("ping") == self.key:
            self.send({"pong": self.key})


def offline_html(key: str, what: str) -> str:
    """The static line shown in place of a widget whose kernel is gone."""
    return (f"<div class='rx-offline rx-offline-{key}' style='color:#8a4b00;padding:4px 0'>"
            f"⟳ {html.escape(what)} is not connected to a running kernel: {RECONNECT} "
            "(Run ▸ Run Selected Cell).</div>")


def fit_width(fig: go.FigureWidget) -> go.FigureWidget:
    """Let ``fig`` take its output's full width (and follow the window's size)."""
    fig.layout.autosize = True
    fig.layout.width = None
    fig._config = {**fig._config, "responsive": True}
    return fig


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
