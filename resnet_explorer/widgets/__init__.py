"""JupyterLab widgets: an architecture builder, a live training dashboard, a layer-response view,
a lesion view (blocks deleted at random, on a slider).

They are thin over the library: the builder edits an `ArchSpec` (the single description
of a net) and recounts it with `count` on every change; the dashboard runs `train` in a
background thread and redraws `figures.error_curves`; the layer-response view draws
`figures.layer_responses_figure` from `run_analysis.analyze_run`. Bad input is shown in
the widget as a one-line message, never as a traceback; a widget whose kernel is gone
says "re-run this cell to reconnect" (`reconnect`).

    from resnet_explorer.widgets import ArchitectureBuilder, TrainingDashboard, LayerResponseView
    b = ArchitectureBuilder("cifar-resnet20"); b            # edit, see params / FLOPs / diagram
    d = TrainingDashboard([b, "cifar-plain20"], data="synthetic:2000", recipe="cpu-short"); d
    LayerResponseView(d.runs)
"""

from ..runs import find_runs
from .builder import ArchitectureBuilder
from .comparison import CIFAR_REFS, IMAGENET_REFS, comparison_html, stage_table_html
from .controls import FAMILIES, PRESETS, Controls, controls_for, spec_from_controls
from .dashboard import GIVEN, SpecSource, TrainingDashboard
from .layer_view import LayerResponseView
from .lesion_view import LesionView
from .page import RECONNECT, KernelLink
from .stages import StageControls

__all__ = [
    "ArchitectureBuilder", "TrainingDashboard", "LayerResponseView", "LesionView", "StageControls", "PRESETS", "FAMILIES",
    "Controls", "controls_for", "spec_from_controls", "IMAGENET_REFS", "CIFAR_REFS", "GIVEN", "SpecSource",
    "comparison_html", "stage_table_html", "find_runs", "KernelLink", "RECONNECT",
]
