"""The layer-response view: Fig. 7 of chosen runs, each analysed on its last checkpoint.

Runs are listed and drawn by directory: two runs of one name in different folders are two
entries (labelled with their folder) and two lines. Adding runs keeps the current choice, and
each run keeps its colour whatever is chosen (colours are given over every run listed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..errors import TrainingError
from ..figures import layer_responses_figure, run_colors
from ..run_analysis import analyze_run
from ..runs import RunDir, find_runs, load_runs
from .messages import message_html, one_line
from .page import KernelLink, Reconnecting, keep_state

MAX_ROWS = 12


def _options(dirs: Sequence[Path]) -> list[tuple[str, str]]:
    """(label, value) per run: its name, with its folder when another run has the same name."""
    names = [d.name for d in dirs]
    return [(d.name if names.count(d.name) == 1 else f"{d.parent.name}/{d.name}", str(d)) for d in dirs]


class LayerResponseView(Reconnecting, W.VBox):
    """Fig. 7 for the chosen runs: each run's last checkpoint, analysed if not done yet."""

    _what = "This layer-response view"

    def __init__(self, run_dirs: Sequence[str | Path] = (), data: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.data = data
        self.error: str | None = None
        self._dirs: list[Path] = []
        self.runs = W.SelectMultiple(description="runs", layout=W.Layout(width="340px"))
        self.add_path = W.Text(placeholder="add a run (or experiment) directory", description="add",
                               layout=W.Layout(width="100%"))
        self.add_button = W.Button(description="Add")
        self.show_button = W.Button(description="Show", button_style="primary")
        self.message = W.HTML()
        self.figure: go.FigureWidget = layer_responses_figure([], widget=True)
        self.link = KernelLink(self.figure)
        self.add_button.on_click(lambda _: self.add(self.add_path.value))
        self.show_button.on_click(lambda _: self.show())
        controls = W.VBox([W.HBox([self.add_path, self.add_button], layout=W.Layout(width="100%")),
                           self.show_button], layout=W.Layout(flex="1 1 360px"))
        self.children = [W.HBox([self.runs, controls], layout=W.Layout(width="100%", grid_gap="16px")),
                         self.message, self.figure, self.link]
        self.add_class("rx-layers")
        for name, w in (("runs", self.runs), ("add", self.add_path), ("add-button", self.add_button),
                        ("show", self.show_button), ("figure", self.figure)):
            w.add_class(f"rx-{name}")
        self._offer([Path(d) for d in run_dirs], select=True)
        if self._dirs:
            self.show()

    def _offer(self, found: Sequence[Path], select: bool) -> None:
        """List ``found`` beside the runs already listed; the current choice is kept."""
        chosen = list(self.runs.value)  # read before the options change: setting them clears it
        known = {d.resolve() for d in self._dirs}
        for d in found:
            if d.resolve() not in known:
                known.add(d.resolve())
                self._dirs.append(d)
        self.runs.options = _options(self._dirs)
        self.runs.rows = max(2, min(len(self._dirs), MAX_ROWS))  # every run in view, up to a dozen
        wanted = {d.resolve() for d in found} if select else set()
        self.runs.value = tuple(v for _, v in self.runs.options if v in chosen or Path(v).resolve() in wanted)

    def add(self, path: str | Path) -> None:
        """Offer a run directory (or every run in a folder) for the figure, and choose it."""
        try:
            found = find_runs(path)
        except TrainingError as e:
            self.error = str(e)
            self.message.value = message_html(self.error)
            return
        self._offer(found, select=True)

    def show(self) -> None:
        """Analyse the chosen runs that have no analysis yet, then redraw Fig. 7."""
        self.error = None
        dirs = [Path(v) for v in self.runs.value]
        try:
            for d in dirs:
                run = RunDir(d)
                if not run.has_checkpoint():
                    raise TrainingError(f"{d.name} has no checkpoint yet: train it first")
                if not run.analysis_current():
                    self.message.value = message_html(f"analysing {d.name}…", "info")
                    data = self.data or run.config().data.get("arg")
                    if not data:
                        raise TrainingError(f"{d.name}: say which data to analyse on (data=...)")
                    analyze_run(d, data)
        except Exception as e:  # noqa: BLE001 - one line in the widget
            self.error = one_line(e)
            self.message.value = message_html(self.error)
            return
        self.message.value = ""
        new = layer_responses_figure(dirs)
        colors = run_colors(load_runs(self._dirs), one_panel=True)  # of every run listed: a choice keeps them
        for trace in new.data:
            trace.line.color = colors.get(trace.meta["run"], trace.line.color)
        with self.link.lock, self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(list(new.data))
            self.figure.layout = new.layout
            self.link.fit(self.figure)  # the new layout has no width: the widget's again
        keep_state(self.figure)
