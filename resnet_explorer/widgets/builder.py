"""The architecture builder: edit an `ArchSpec` and see its parameters, multiply-adds and diagram live.

Every change edits the draft spec and recounts it with `count`; the zoo (`zoo.identify`)
says which named net the draft is, so the family, n and depth controls follow the spec.
An invalid value is shown as a one-line message, never as a traceback.
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass
from typing import Any, Callable

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from ..count import CONVENTION, Count, count
from ..diagram import diagram_parts, si
from ..errors import SpecError
from ..model import build
from ..spec import ArchSpec, Stage
from ..zoo import IMAGENET_BLOCKS, TABLE6_DEPTHS, VGG_CONFIGS, get_spec, identify
from .comparison import comparison_html, stage_table_html
from .messages import message_html

PRESETS: list[str] = (
    [f"resnet{d}" for d in IMAGENET_BLOCKS] + [f"plain{d}" for d in IMAGENET_BLOCKS]
    + [f"cifar-resnet{d}" for d in TABLE6_DEPTHS] + [f"cifar-plain{d}" for d in TABLE6_DEPTHS]
    + [f"vgg-{c}" for c in VGG_CONFIGS] + ["alexnet", "alexnet-groups1"]
)
FAMILIES = {"CIFAR (6n+2)": "cifar", "ImageNet (Table 1)": "imagenet", "custom": "custom"}


def _kind(spec: ArchSpec) -> str:
    return "resnet" if spec.residual else "plain"


def _common(spec: ArchSpec) -> dict[str, Any]:
    return dict(shortcut=spec.shortcut, input_size=spec.input_size, num_classes=spec.num_classes,
                zero_init_residual=spec.zero_init_residual)


def _family_and_name(spec: ArchSpec) -> tuple[str, str | None]:
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
            found, _ = _family_and_name(d)
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
        self.message.value = message_html(text)

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
        family, name = _family_and_name(self._draft)
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
        self.stage_table.value = stage_table_html(c)
        self.comparison.value = comparison_html(spec, c)
