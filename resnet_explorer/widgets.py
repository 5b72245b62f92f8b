"""JupyterLab widgets: an architecture builder, a live training dashboard, a layer-response view.

They are thin over the library: the builder edits an `ArchSpec` (the single description
of a net) and recounts it with `count` on every change; the dashboard runs `train` in a
background thread and redraws `figures.error_curves`; the layer-response view draws
`figures.layer_responses_figure` from `experiments.analyze_run`. Bad input is shown in
the widget as a one-line message, never as a traceback.

    from resnet_explorer.widgets import ArchitectureBuilder, TrainingDashboard, LayerResponseView
    b = ArchitectureBuilder("cifar-resnet20"); b            # edit, see params / FLOPs / diagram
    d = TrainingDashboard([b, "cifar-plain20"], data="synthetic:2000", recipe="cpu-demo"); d
    LayerResponseView(d.runs)
"""

from __future__ import annotations

import copy
import html
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from . import runs
from .count import CONVENTION, Count, count
from .data import parse_data
from .devices import Accel, pick_device
from .diagram import diagram_parts, si
from .errors import SpecError, TrainingError, UserError
from .experiments import analyze_run
from .figures import error_curves, layer_responses_figure, update_error_curves
from .model import build
from .recipes import RECIPES, Recipe, get_recipe
from .runs import analysis_current, checkpoint_iteration, find_runs, load_run_config  # noqa: F401
from .spec import ArchSpec, Stage
from .train import train
from .zoo import IMAGENET_BLOCKS, PUBLISHED, TABLE6_DEPTHS, VGG_CONFIGS, get_spec, identify, published

CIFAR_DEPTHS = TABLE6_DEPTHS
PRESETS: list[str] = (
    [f"resnet{d}" for d in IMAGENET_BLOCKS] + [f"plain{d}" for d in IMAGENET_BLOCKS]
    + [f"cifar-resnet{d}" for d in CIFAR_DEPTHS] + [f"cifar-plain{d}" for d in CIFAR_DEPTHS]
    + [f"vgg-{c}" for c in VGG_CONFIGS] + ["alexnet", "alexnet-groups1"]
)
FAMILIES = {"CIFAR (6n+2)": "cifar", "ImageNet (Table 1)": "imagenet", "custom": "custom"}
# The paper's reference points (multiply-adds at 224², Table 1 and Sec. 3.3; params Table 6).
IMAGENET_REFS = [("VGG-19", "vgg-e"), ("VGG-16", "vgg-d"), ("plain-34 / ResNet-34", "resnet34"),
                 ("ResNet-18", "resnet18"), ("ResNet-50", "resnet50"), ("ResNet-101", "resnet101"),
                 ("ResNet-152", "resnet152")]
CIFAR_REFS = [(f"ResNet-{d}", f"cifar-resnet{d}") for d in CIFAR_DEPTHS]


def _message(text: str | None, kind: str = "error") -> str:
    if not text:
        return ""
    color = {"error": "#b00020", "info": "#333"}[kind]
    return f"<div class='rx-{kind}' style='color:{color}'>{html.escape(text)}</div>"


def _one_line(e: BaseException) -> str:
    """An exception as the one line a user sees (no traceback)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, (UserError, ValueError, FileNotFoundError)):
        return text
    return f"{type(e).__name__}: {text}"


# -- family and name of a spec -------------------------------------------------------------------------
def _kind(spec: ArchSpec) -> str:
    return "resnet" if spec.residual else "plain"


def _common(spec: ArchSpec) -> dict[str, Any]:
    return dict(shortcut=spec.shortcut, input_size=spec.input_size, num_classes=spec.num_classes,
                zero_init_residual=spec.zero_init_residual)


def detect_family(spec: ArchSpec) -> tuple[str, str | None]:
    """("cifar" | "imagenet" | "custom", the zoo name the spec equals, if any)."""
    ident = identify(spec)
    if ident.family in ("cifar", "imagenet"):
        return ident.family, ident.name
    return "custom", None


# -- the architecture builder --------------------------------------------------------------------------
@dataclass
class StageControls:
    """The widgets that edit one stage of blocks (conv2_x …)."""

    block: W.Dropdown
    blocks: W.IntText
    width: W.IntText
    stride: W.Dropdown

    def widgets(self) -> list[W.Widget]:
        return [self.block, self.blocks, self.width, self.stride]


class ArchitectureBuilder(W.VBox):
    """Edit an architecture spec and see its parameters, multiply-adds and diagram live.

    ``.spec`` is the edited `ArchSpec` (a `SpecError` while the edit is invalid; the
    widget shows the message), ``.count`` its `Count`, ``.build()`` the module,
    ``.to_json()`` the spec as JSON for ``resnet-explorer train --arch FILE``.
    """

    def __init__(self, preset: str = "cifar-resnet20", **kwargs: Any):
        super().__init__(**kwargs)
        self._draft: ArchSpec = get_spec(preset)
        self._count: Count | None = None
        self.error: str | None = None
        self._quiet = False  # True while controls are set from the spec
        self._base_name: str | None = None  # the preset last loaded
        self._last_summary = ""
        self._callbacks: list[Callable[[ArchitectureBuilder], None]] = []
        narrow = W.Layout(width="90px")

        self.preset = W.Dropdown(options=PRESETS, value=preset if preset in PRESETS else None,
                                 description="preset")
        self.family = W.Dropdown(options=list(FAMILIES), description="family")
        self.n = W.IntText(description="n", layout=W.Layout(width="150px"))
        self.n.add_class("rx-n")
        self.imagenet_depth = W.Dropdown(options=list(IMAGENET_BLOCKS), description="depth",
                                         layout=W.Layout(width="160px"))
        self.residual = W.ToggleButtons(options=[("residual", True), ("plain", False)],
                                        style={"button_width": "80px"})
        self.shortcut = W.Dropdown(options=[("A: zero-pad identity", "A"),
                                            ("B: projection where shape changes", "B"),
                                            ("C: all projections", "C")], description="shortcut")
        self.stride_at = W.Dropdown(options=[("on the 1×1 (paper, v1)", "1x1"),
                                             ("on the 3×3 (torchvision, v1.5)", "3x3")],
                                    description="stride")
        self.input_size = W.IntText(description="input", layout=W.Layout(width="160px"))
        self.num_classes = W.IntText(description="classes", layout=W.Layout(width="160px"))
        self.add_stage_button = W.Button(description="+ stage", layout=narrow)
        self.remove_stage_button = W.Button(description="− stage", layout=narrow)
        self.stage_controls: dict[str, StageControls] = {}
        self._row_widgets: list[W.Widget] = []  # the stage rows' wrappers, closed when redrawn
        self.stage_box = W.VBox()
        self.summary = W.HTML()
        self.summary.add_class("rx-summary")
        self.message = W.HTML()
        self.message.add_class("rx-message")
        self.stage_table = W.HTML()
        self.comparison = W.HTML()
        trace, layout = diagram_parts(self._draft)
        self.diagram = go.FigureWidget(data=[trace], layout=layout)

        self.preset.observe(lambda ch: ch["new"] and not self._quiet and self.set_preset(ch["new"]),
                            names="value")
        self.family.observe(self._on_family, names="value")
        self.n.observe(self._on_n, names="value")
        self.imagenet_depth.observe(self._on_imagenet_depth, names="value")
        for w, field in ((self.residual, "residual"), (self.shortcut, "shortcut"),
                         (self.stride_at, "stride_at"), (self.input_size, "input_size"),
                         (self.num_classes, "num_classes")):
            w.observe(lambda ch, field=field: self._edit(**{field: ch["new"]}), names="value")
        self.add_stage_button.on_click(lambda _: self.add_stage())
        self.remove_stage_button.on_click(lambda _: self.remove_stage())

        self.children = [
            W.HBox([self.preset, self.family, self.n, self.imagenet_depth]),
            W.HBox([self.residual, self.shortcut, self.stride_at]),
            W.HBox([self.input_size, self.num_classes]),
            self.stage_box,
            self.message,
            self.summary,
            self.diagram,
            W.HBox([self.stage_table, self.comparison], layout=W.Layout(grid_gap="24px")),
        ]
        self.set_preset(preset)

    # -- the Python side -------------------------------------------------------------------------
    @property
    def spec(self) -> ArchSpec:
        """The edited spec (a copy); raises `SpecError` while the edit is invalid."""
        if self.error:
            raise SpecError(self.error)
        return copy.deepcopy(self._draft)

    @property
    def count(self) -> Count:
        """The analytic count of `spec`."""
        if self.error or self._count is None:
            raise SpecError(self.error or "no valid spec")
        return self._count

    def build(self) -> nn.Module:
        """The torch module of `spec` (He-initialised)."""
        return build(self.spec)

    def to_json(self) -> str:
        """`spec` as JSON: ``resnet-explorer train --arch net.json`` and `ArchSpec.from_json` read it."""
        return self.spec.to_json()

    def on_change(self, callback: Callable[[ArchitectureBuilder], None]) -> None:
        """Call ``callback(builder)`` after every valid change."""
        self._callbacks.append(callback)

    def set_preset(self, name: str) -> None:
        """Load a named net of the zoo (``resnet50``, ``cifar-plain56``, ``vgg-e`` …)."""
        try:
            spec = get_spec(name)
        except SpecError as e:
            self._show_error(str(e))
            return
        self._draft = spec
        self._base_name = spec.name
        self._sync_controls(preset=spec.name if spec.name in PRESETS else None)
        self._refresh()

    def set_spec(self, spec: ArchSpec) -> None:
        """Edit ``spec`` (e.g. one read from JSON)."""
        self._draft = copy.deepcopy(spec)
        self._base_name = spec.name
        self._sync_controls()
        self._refresh()

    # -- editing -----------------------------------------------------------------------------------
    def add_stage(self) -> None:
        """Append a stage of one block, twice as wide as the last, halving the map."""
        spec = copy.deepcopy(self._draft)
        last = next((s for s in reversed(spec.stages) if not s.is_conv), None)
        k = len(spec.stages) + 1
        name = next(f"conv{i}_x" for i in range(k, k + 100) if f"conv{i}_x" not in {s.name for s in spec.stages})
        if last is None:
            stage = Stage(name, "basic", 1, spec.stages[-1].out_channels * 2, 2)
        else:
            stage = Stage(name, last.block, 1, last.width * 2, 2)
        spec.stages.append(stage)
        self._draft = spec
        self._sync_controls()
        self._refresh()

    def remove_stage(self) -> None:
        """Drop the last stage (the stem stays)."""
        if len(self._draft.stages) <= 1:
            self._show_error("the stem conv1 is the last stage: a net needs at least one")
            return
        spec = copy.deepcopy(self._draft)
        spec.stages.pop()
        self._draft = spec
        self._sync_controls()
        self._refresh()

    def _edit(self, **fields: Any) -> None:
        if self._quiet:
            return
        self._draft = self._draft.replace(**fields)
        self._refresh()

    def _edit_stage(self, name: str, field: str, value: Any) -> None:
        if self._quiet:
            return
        spec = copy.deepcopy(self._draft)
        stage = next(s for s in spec.stages if s.name == name)
        setattr(stage, field, value)
        self._draft = spec
        self._refresh()

    def _on_family(self, change: dict) -> None:
        if self._quiet:
            return
        family = FAMILIES[change["new"]]
        kind = _kind(self._draft)
        if family == "cifar":
            self._draft = get_spec(f"cifar-{kind}20", residual=self._draft.residual)
        elif family == "imagenet":
            self._draft = get_spec(f"{kind}18", residual=self._draft.residual)
        self._sync_controls(family=family)
        self._refresh()

    def _on_n(self, change: dict) -> None:
        if self._quiet:
            return
        spec = copy.deepcopy(self._draft)
        for s in spec.stages:
            if not s.is_conv:
                s.num_blocks = change["new"]
        self._draft = spec
        self._sync_controls()
        self._refresh()

    def _on_imagenet_depth(self, change: dict) -> None:
        if self._quiet:
            return
        d = self._draft
        self._draft = get_spec(f"{_kind(d)}{change['new']}", residual=d.residual, stride_at=d.stride_at,
                               width=d.stages[0].layers[0].out_channels, **_common(d))
        self._sync_controls()
        self._refresh()

    # -- controls <-> spec ---------------------------------------------------------------------------
    def _sync_controls(self, preset: str | None = None, family: str | None = None) -> None:
        """Set every control from the draft spec, without triggering edits."""
        d = self._draft
        self._quiet = True
        try:
            if preset is not None:
                self.preset.value = preset
            found, _ = detect_family(d)
            family = family or ("custom" if self._family_key() == "custom" and preset is None else found)
            if family != "custom" and found != family:
                family = "custom"
            self.family.value = next(k for k, v in FAMILIES.items() if v == family)
            blocks = [s for s in d.stages if not s.is_conv]
            self.n.layout.display = "" if family == "cifar" else "none"
            self.imagenet_depth.layout.display = "" if family == "imagenet" else "none"
            if family == "cifar":
                self.n.value = blocks[0].num_blocks
            if family == "imagenet":
                self.imagenet_depth.value = next(k for k, (_, c) in IMAGENET_BLOCKS.items()
                                                 if c == tuple(s.num_blocks for s in blocks))
            self.residual.value = d.residual
            self.shortcut.value = d.shortcut
            self.stride_at.value = d.stride_at
            self.input_size.value = d.input_size
            self.num_classes.value = d.num_classes
            self._sync_stage_rows()
        finally:
            self._quiet = False

    def _family_key(self) -> str:
        return FAMILIES.get(self.family.value, "custom")

    def _sync_stage_rows(self) -> None:
        d = self._draft
        names = [s.name for s in d.stages]
        if list(self.stage_controls) != [s.name for s in d.stages if not s.is_conv]:
            for old in self.stage_controls.values():  # close them: no widget left behind in the kernel
                for w in old.widgets():
                    w.close()
            self.stage_controls = {}
        for w in self._row_widgets:
            w.close()
        rows: list[W.Widget] = [W.HTML("<b>stage</b> — block type, blocks, width, first stride")]
        for s in d.stages:
            if s.is_conv:
                layers = "; ".join(f"{l.kernel}×{l.kernel}, {l.out_channels}" + (f", /{l.stride}" if l.stride > 1 else "")
                                   + (", pool" if l.pool else "") for l in s.layers)
                rows.append(W.HTML(f"<code>{s.name}</code>: conv layers {html.escape(layers)}"))
                continue
            c = self.stage_controls.get(s.name)
            if c is None:
                c = StageControls(
                    W.Dropdown(options=["basic", "bottleneck"], layout=W.Layout(width="120px")),
                    W.IntText(layout=W.Layout(width="80px")),
                    W.IntText(layout=W.Layout(width="90px")),
                    W.Dropdown(options=[1, 2], layout=W.Layout(width="60px")),
                )
                for field, w in zip(("block", "num_blocks", "width", "stride"), c.widgets()):
                    w.add_class(f"rx-{field}-{s.name}")
                    w.observe(lambda ch, name=s.name, field=field: self._edit_stage(name, field, ch["new"]),
                              names="value")
                self.stage_controls[s.name] = c
            c.block.value, c.blocks.value, c.width.value = s.block, s.num_blocks, s.width
            c.stride.options = sorted({1, 2, s.stride})
            c.stride.value = s.stride
            rows.append(W.HBox([W.HTML(f"<code>{s.name}</code>", layout=W.Layout(width="70px")), *c.widgets()]))
        rows.append(W.HBox([self.add_stage_button, self.remove_stage_button]))
        self._row_widgets = [w for r in rows for w in ([r, r.children[0]] if isinstance(r, W.HBox)
                                                         and r.children[0] is not self.add_stage_button else [r])]
        self.remove_stage_button.disabled = len(names) <= 1
        self.stage_box.children = rows

    # -- recount and redraw ----------------------------------------------------------------------------
    def _show_error(self, text: str) -> None:
        self.error = text
        self.message.value = _message(text)

    def _refresh(self) -> None:
        """Validate and recount the draft; redraw the numbers, the diagram, the comparison."""
        try:
            c = count(self._draft)
        except SpecError as e:
            self._count = None
            self._show_error(str(e))
            self.summary.value = ("<div style='color:#777'>(the numbers below are of the last valid net; "
                                  "fix the value above)</div>" + self._last_summary)
            return
        family, name = detect_family(self._draft)
        name = name or self._name_outside_families()
        if name != self._draft.name:
            self._draft = self._draft.replace(name=name)
            c.arch = name
        self._count = c
        self.error = None
        self.message.value = ""
        if self._family_key() != "custom" and family != self._family_key():
            self._quiet = True  # the edit left the 6n+2 / Table 1 family
            self.family.value = "custom"
            self.n.layout.display = self.imagenet_depth.layout.display = "none"
            self._quiet = False
        self.shortcut.disabled = not self._draft.residual
        self.stride_at.disabled = not any(s.block == "bottleneck" for s in self._draft.stages)
        self._draw(c)
        for cb in self._callbacks:
            cb(self)

    def _name_outside_families(self) -> str:
        """The preset's name while only input size / classes changed (VGG, AlexNet), else custom-…"""
        d, base = self._draft, self._base_name
        if base:
            try:
                ref = get_spec(base, input_size=d.input_size, num_classes=d.num_classes)
            except SpecError:
                return base  # the user's own net keeps its name
            if ref == d.replace(name=ref.name):
                return ref.name
        return f"custom-{_kind(d)}{d.depth}"

    def _draw(self, c: Count) -> None:
        spec = self._draft
        depth = f" (6n+2, n={[s for s in spec.stages if s.block != 'conv'][0].num_blocks})" \
            if self._family_key() == "cifar" else ""
        self.summary.value = self._last_summary = (
            f"<div><b class='rx-name'>{html.escape(spec.name)}</b> · {spec.depth} layers{depth} · "
            f"{'residual, option ' + spec.shortcut if spec.residual else 'plain'} · "
            f"<b><span class='rx-params'>{c.params:,}</span></b> parameters ({si(c.params)}) · "
            f"<b><span class='rx-macs'>{c.macs:,}</span></b> multiply-adds ({si(c.macs)}) at "
            f"{spec.input_size}×{spec.input_size}<br><small>{CONVENTION}</small></div>"
        )
        trace, layout = diagram_parts(spec, c)
        with self.diagram.batch_update():  # whole-list assignment: much faster than merging updates
            self.diagram.data[0].update(x=trace["x"], y=trace["y"], hovertext=trace["hovertext"])
            self.diagram.layout.shapes = layout["shapes"]
            self.diagram.layout.annotations = layout["annotations"]
            self.diagram.layout.title = layout["title"]
            self.diagram.layout.xaxis.range = layout["xaxis"]["range"]
        rows = "".join(
            f"<tr><td><code>{k}</code></td><td>{v['out'][1]}×{v['out'][2]}×{v['out'][0]}</td>"
            f"<td style='text-align:right'>{v['params']:,}</td><td style='text-align:right'>{v['macs']:,}</td>"
            f"<td style='text-align:right'>{100 * v['macs'] / max(c.macs, 1):.1f} %</td></tr>"
            for k, v in c.by_stage().items())
        self.stage_table.value = (
            "<table class='rx-stages'><tr><th>stage</th><th>output H×W×C</th><th>params</th>"
            f"<th>multiply-adds</th><th>share</th></tr>{rows}<tr><td><b>total</b></td><td></td>"
            f"<td style='text-align:right'><b>{c.params:,}</b></td>"
            f"<td style='text-align:right'><b>{c.macs:,}</b></td><td></td></tr></table>")
        self.comparison.value = comparison_html(spec, c)


def comparison_html(spec: ArchSpec, c: Count) -> str:
    """This net beside the paper's reference nets (FLOPs at ImageNet scale, params on CIFAR)."""
    lines = []
    ref = published(spec)
    if ref is not None:
        paper = []
        if ref.params:
            paper.append(f"{si(ref.params)} params (ours {c.params:,})")
        if ref.macs:
            paper.append(f"{ref.macs / 1e9:.1f} G multiply-adds (ours {c.macs / 1e9:.2f} G)")
        for label, v in (("top-1", ref.top1), ("top-5", ref.top5), ("CIFAR-10 error", ref.cifar10_error)):
            if v is not None:
                paper.append(f"{label} {v} %")
        lines.append(f"<p><b>paper</b> ({html.escape(ref.source)}): {', '.join(paper)}</p>")
    imagenet = spec.input_size >= 100
    refs = IMAGENET_REFS if imagenet else CIFAR_REFS
    rows = []
    for label, name in refs:
        p = PUBLISHED[name]
        if imagenet:
            rows.append(f"<tr><td>{label}</td><td style='text-align:right'>{p.macs / 1e9:.1f} G</td>"
                        f"<td style='text-align:right'>{100 * c.macs / p.macs:.0f} %</td></tr>")
        else:
            rows.append(f"<tr><td>{label}</td><td style='text-align:right'>{si(p.params)}</td>"
                        f"<td style='text-align:right'>{100 * c.params / p.params:.0f} %</td></tr>")
    what = "multiply-adds (paper)" if imagenet else "params (paper)"
    return ("<div class='rx-comparison'>" + "".join(lines)
            + f"<table><tr><th>reference</th><th>{what}</th><th>this net</th></tr>{''.join(rows)}</table></div>")


# -- the training dashboard ------------------------------------------------------------------------------
SpecSource = str | ArchSpec | ArchitectureBuilder
GIVEN = "(given)"  # the recipe dropdown's value for a Recipe object passed to the dashboard


def _resolve(source: SpecSource) -> ArchSpec:
    if isinstance(source, ArchitectureBuilder):
        return source.spec
    if isinstance(source, ArchSpec):
        return copy.deepcopy(source).validate()
    return get_spec(source)


def _label(source: SpecSource) -> str:
    if isinstance(source, ArchitectureBuilder):
        return "builder"
    return source.name if isinstance(source, ArchSpec) else source


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class TrainingDashboard:
    """Train one or more nets in a background thread with live Fig. 6 error curves.

    Start trains every selected spec into ``out/<name>`` one after the other; Stop makes
    the running one checkpoint and return; Resume continues every unfinished run shown.
    ``open(run_dir)`` shows an existing run (or an experiment's runs) and lets Resume
    continue it. Displayable; ``.widget`` is its ipywidgets box (not a subclass, because
    ipywidgets' ``Widget.open`` means something else).
    """

    def __init__(self, specs: Sequence[SpecSource] | None = None, data: str = "synthetic:2000",
                 recipe: str | Recipe = "cpu-demo", out: str = "runs/dashboard", iters: int | None = None,
                 device: str = "auto", update_every: float = 1.0, amp: str = "auto", compile: str = "off"):
        sources = list(specs) if specs else ["cifar-plain20", "cifar-resnet20"]
        self._sources: dict[str, SpecSource] = {}
        for s in sources:
            label = _label(s)
            while label in self._sources:
                label += "+"
            self._sources[label] = s
        for name in PRESETS:
            if name.startswith("cifar-") and "1202" not in name and name not in self._sources:
                self._sources[name] = name
        self.device, self.amp, self.compile = device, amp, compile
        self.update_every = update_every
        self.runs: list[Path] = []
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_draw = 0.0
        self._lock = threading.Lock()

        chosen = [_label(s) for s in sources]
        self.specs = W.SelectMultiple(options=list(self._sources), value=[c for c in dict.fromkeys(chosen)],
                                      description="nets", rows=6)
        self.data = W.Text(value=data, description="data")
        # a Recipe object (a named one with fields changed) is offered first, as given
        self._given_recipe = recipe if isinstance(recipe, Recipe) else None
        options = [(n, n) for n in RECIPES]
        if self._given_recipe is not None:
            options.insert(0, (f"{recipe.name}, batch {recipe.batch_size}, {recipe.max_iters} it. (given)", GIVEN))
        self.recipe = W.Dropdown(options=options, value=GIVEN if self._given_recipe else recipe,
                                 description="recipe")
        self.iters = W.IntText(value=iters or 0, description="iterations",
                               tooltip="0: the recipe's own number")
        self.out = W.Text(value=str(out), description="out")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.resume_button = W.Button(description="Resume", icon="forward")
        self.open_path = W.Text(placeholder="a run (or experiment) directory", description="open")
        self.open_button = W.Button(description="Open", icon="folder-open")
        self.progress = W.HTML()
        self.progress.add_class("rx-progress")
        self.message = W.HTML()
        self.figure: go.FigureWidget = error_curves([], widget=True)

        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.resume_button.on_click(lambda _: self.resume())
        self.open_button.on_click(lambda _: self.open(self.open_path.value))
        self.widget = W.VBox([
            W.HBox([self.specs, W.VBox([self.data, self.recipe, self.iters, self.out])]),
            W.HBox([self.start_button, self.stop_button, self.resume_button, self.open_path, self.open_button]),
            self.message, self.progress, self.figure,
        ])

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- what to train ----------------------------------------------------------------------------------
    def _recipe(self) -> Recipe:
        iters = self.iters.value or None
        if self.recipe.value == GIVEN and self._given_recipe is not None:
            return (self._given_recipe.with_iters(iters) if iters else self._given_recipe).validate()
        return get_recipe(self.recipe.value, **({"iters": iters} if iters else {}))

    def _plan(self) -> list[tuple[ArchSpec, Path]]:
        """(spec, run directory) for each selected net; directory names are unique."""
        out = Path(self.out.value)
        plan, used = [], set()
        for label in self.specs.value:
            spec = _resolve(self._sources[label])
            name, i = spec.name, 2
            while name in used:
                name, i = f"{spec.name}-{i}", i + 1
            used.add(name)
            plan.append((spec, out / name))
        if not plan:
            raise SpecError("select at least one net to train")
        return plan

    # -- buttons ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Train every selected net into a new run directory (in the background)."""
        if self.running:
            return self._fail("training is already running: Stop it first")
        try:
            plan = self._plan()
            recipe = self._recipe()
            parse_data(self.data.value)
            self._check_accel()
            busy = [d for _, d in plan if runs.has_started(d)]
            if busy:
                raise TrainingError(f"{busy[0]} already holds a run: press Resume to continue it, "
                                    "or choose another out folder")
        except (SpecError, TrainingError, ValueError) as e:
            return self._fail(_one_line(e))
        jobs = [(spec, d, recipe, self.data.value, False) for spec, d in plan]
        self._launch(jobs, [d for _, d in plan])

    def _check_accel(self) -> None:
        """The device, amp and compile settings, checked before any thread starts."""
        Accel.resolve(pick_device(self.device), self.amp, None, self.compile)

    def resume(self) -> None:
        """Continue every unfinished run shown (and start selected nets not yet begun)."""
        if self.running:
            return self._fail("training is already running")
        try:
            self._check_accel()
            recipe = self._recipe()
            planned = {d: spec for spec, d in self._plan()} if self.specs.value else {}
        except (SpecError, TrainingError, ValueError) as e:
            return self._fail(_one_line(e))
        jobs = []
        dirs = list(dict.fromkeys([*self.runs, *planned]))
        for d in dirs:
            if runs.has_checkpoint(d):
                try:
                    _, run_recipe, _, _ = load_run_config(d)
                except TrainingError as e:
                    return self._fail(_one_line(e))
                if checkpoint_iteration(d) < run_recipe.max_iters:
                    jobs.append((None, d, None, None, True))
            elif d in planned and not runs.metrics_path(d).exists():
                jobs.append((planned[d], d, recipe, self.data.value, False))
        if not jobs:
            self.message.value = _message("nothing to resume: every run shown is finished", "info")
            return
        self._launch(jobs, dirs)

    def stop(self) -> None:
        """Ask the running net to checkpoint and return; nets not yet started stay pending."""
        if self.running and not self._stop.is_set():
            self._stop.set()
            self.progress.value += " · stopping (writing a checkpoint)…"

    def wait(self, timeout: float | None = None) -> bool:
        """Join the training thread; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self, run_dir: str | Path) -> None:
        """Show an existing run directory (or every run of an experiment / folder of runs)."""
        try:
            found = find_runs(run_dir)
        except TrainingError as e:
            return self._fail(str(e))
        for d in found:
            if d not in self.runs:
                self.runs.append(d)
        self.message.value = ""
        self.redraw()
        self.progress.value = html.escape(" · ".join(self._status(d) for d in found))

    def redraw(self) -> None:
        """Refresh the error curves from the runs' metrics files (one batched update)."""
        with self._lock:
            update_error_curves(self.figure, self.runs)
            self._last_draw = time.monotonic()

    # -- the background thread ----------------------------------------------------------------------------
    def _fail(self, text: str) -> None:
        self.error = text
        self.message.value = _message(text)

    def _status(self, d: Path) -> str:
        try:
            _, recipe, _, _ = load_run_config(d)
        except TrainingError:
            return f"{d.name}: not started"
        it = checkpoint_iteration(d)
        return f"{d.name}: {it} / {recipe.max_iters} iterations" + (" (finished)" if it >= recipe.max_iters else "")

    def _launch(self, jobs: list, dirs: list[Path]) -> None:
        for d in dirs:
            if d not in self.runs:
                self.runs.append(d)
        self.error = None
        self.message.value = ""
        self._stop.clear()
        self._set_running(True)
        self._thread = threading.Thread(target=self._work, args=(jobs,), daemon=True, name="rx-train")
        self._thread.start()

    def _set_running(self, running: bool) -> None:
        self.start_button.disabled = self.resume_button.disabled = running
        self.stop_button.disabled = not running

    def _work(self, jobs: list) -> None:
        try:
            for i, (spec, d, recipe, data, resume) in enumerate(jobs):
                if self._stop.is_set():
                    break
                run_recipe = recipe or load_run_config(d)[1]
                total, batch = run_recipe.max_iters, run_recipe.batch_size
                tag = f"run {i + 1}/{len(jobs)} {d.name}"
                self.progress.value = f"{tag}: starting…"
                left = sum((j[2].max_iters if j[2] else 0) for j in jobs[i + 1:])

                def on_metrics(row: dict, tag=tag, total=total, batch=batch, left=left) -> None:
                    if row.get("kind") == "train":
                        speed = row["images_per_s"]
                        eta = (total - row["iter"] + left) * batch / max(speed, 1e-9)
                        self.progress.value = (
                            f"{tag}: iteration {row['iter']:,} / {total:,} · {speed:,.0f} images/s · "
                            f"train error {100 * row['train_error']:.1f} % · ETA {_fmt_time(eta)}")
                    if row.get("kind") == "eval" or time.monotonic() - self._last_draw >= self.update_every:
                        self.redraw()

                self.redraw()  # the new run's (empty) traces appear at once
                result = train(spec, data, recipe, d, device=self.device, amp=self.amp, compile=self.compile,
                               resume=resume, progress=False, should_stop=lambda it: self._stop.is_set(), on_metrics=on_metrics)
                self.redraw()
                if not result.finished:
                    self.progress.value = (f"{tag}: stopped at iteration {result.iteration:,} / {total:,}; "
                                           "checkpoint saved, Resume continues")
                    return
            else:
                self.progress.value = "done: " + " · ".join(self._status(d) for _, d, *_ in jobs)
        except Exception as e:  # noqa: BLE001 - shown in the widget as one line, never a traceback
            self._fail(_one_line(e))
        finally:
            self._set_running(False)


# -- layer responses (Fig. 7) ---------------------------------------------------------------------------
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
            self.message.value = _message(self.error)
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
                    self.message.value = _message(f"analysing {d.name}…", "info")
                    data = self.data or load_run_config(d)[2].get("arg")
                    if not data:
                        raise TrainingError(f"{d.name}: say which data to analyse on (data=...)")
                    analyze_run(d, data)
        except Exception as e:  # noqa: BLE001 - one line in the widget
            self.error = _one_line(e)
            self.message.value = _message(self.error)
            return
        self.message.value = ""
        new = layer_responses_figure(dirs)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(list(new.data))
            self.figure.layout = new.layout
