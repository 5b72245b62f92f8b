"""The layer-response view: Fig. 7 of chosen runs, each analysed on its last checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from .. import runs
from ..errors import TrainingError
from ..experiments import analyze_run
from ..figures import layer_responses_figure
from ..runs import analysis_current, find_runs, load_run_config
from .messages import message_html, one_line

class LayerResponseView(W.VBox):
    """Fig. 7 for the chosen runs: each run's last checkpoint, analysed if not done yet."""

    def __init__(self, run_dirs: Sequence[str | Path] = (), data: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.data = data
        self.error: str | None = None
        dirs = [Path(d) for d in run_dirs]
        self.runs = W.SelectMultiple(options=[(d.name, str(d)) for d in dirs],
                                     value=[str(d) for d in dirs], description="runs", rows=5)
        self.add_path = W.Text(placeholder="add a run (or experiment) directory", description="add")
        self.add_button = W.Button(description="Add")
        self.show_button = W.Button(description="Show", button_style="primary")
        self.message = W.HTML()
        self.figure: go.FigureWidget = layer_responses_figure([], widget=True)
        self.add_button.on_click(lambda _: self.add(self.add_path.value))
        self.show_button.on_click(lambda _: self.show())
        self.children = [W.HBox([self.runs, W.VBox([W.HBox([self.add_path, self.add_button]), self.show_button])]),
                         self.message, self.figure]
        if dirs:
            self.show()

    def add(self, path: str | Path) -> None:
        """Offer a run directory (or every run in a folder) for the figure."""
        try:
            found = find_runs(path)
        except TrainingError as e:
            self.error = str(e)
            self.message.value = message_html(self.error)
            return
        options = list(self.runs.options) + [(d.name, str(d)) for d in found
                                             if str(d) not in {v for _, v in self.runs.options}]
        self.runs.options = options
        self.runs.value = tuple(dict.fromkeys([*self.runs.value, *(str(d) for d in found)]))

    def show(self) -> None:
        """Analyse the chosen runs that have no analysis yet, then redraw Fig. 7."""
        self.error = None
        dirs = [Path(v) for v in self.runs.value]
        try:
            for d in dirs:
                if not runs.has_checkpoint(d):
                    raise TrainingError(f"{d.name} has no checkpoint yet: train it first")
                if not analysis_current(d):
                    self.message.value = message_html(f"analysing {d.name}…", "info")
                    data = self.data or load_run_config(d)[2].get("arg")
                    if not data:
                        raise TrainingError(f"{d.name}: say which data to analyse on (data=...)")
                    analyze_run(d, data)
        except Exception as e:  # noqa: BLE001 - one line in the widget
            self.error = one_line(e)
            self.message.value = message_html(self.error)
            return
        self.message.value = ""
        new = layer_responses_figure(dirs)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(list(new.data))
            self.figure.layout = new.layout
