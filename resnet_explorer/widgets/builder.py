"""The architecture builder: edit an `ArchSpec` and see its parameters, multiply-adds and diagram live.

Every change edits the draft spec and recounts it with `count`. What the family row shows
(family, preset, n, depth, residual, shortcut, shortcut kind, block order, stride placement)
is read back from the
spec by `controls.controls_for` (through `zoo.identify`) after every change, so it never
disagrees with the net; controls that do not apply to the net are disabled, each with
its reason. An invalid value is shown as a one-line message, never as a traceback.
"""

from __future__ import annotations

import copy
import html
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
from torch import nn

from ..count import CONVENTION, Count, count
from ..diagram import diagram_parts, si
from ..errors import SpecError
from ..model import build
from ..spec import ArchSpec, Stage
from ..zoo import IMAGENET_BLOCKS, get_spec
from .comparison import paper_html, reference_table_html, stage_table_html
from .controls import (FAMILIES, FAMILY_LABELS, MAX_N, PRESETS, Controls, controls_for, family_default,
                       spec_from_controls)
from .messages import message_html
from .page import KernelLink, Reconnecting, keep_state
from .stages import StageControls, StageRows

__all__ = ["ArchitectureBuilder", "FAMILIES", "PRESETS", "StageControls"]
NONE = 0  # n's and depth's value "—": the control does not apply to this net
LABELS = {"n": "n", "depth": "depth", "residual": "residual / plain", "shortcut": "shortcut",
          "shortcut_kind": "shortcut kind", "block_order": "block order", "stride_at": "stride"}


def _user_name(name: str | None) -> bool:
    """Whether ``name`` is the user's own (not a zoo name, not one the builder made up)."""
    if not name or name.startswith("custom-"):
        return False
    try:
        get_spec(name)
    except SpecError:
        return True
    return False


def _n_options(block: str) -> list[tuple[str, Any]]:
    """The n dropdown: blocks per stage with the depth they give (6n+2 basic, 9n+2 bottleneck)."""
    per = 9 if block == "bottleneck" else 6
    return [("—", NONE)] + [(f"{n} ({per * n + 2} layers)", n) for n in range(1, MAX_N + 1)]


class ArchitectureBuilder(Reconnecting, W.VBox):
    """Edit an architecture spec and see its parameters, multiply-adds and diagram live.

    ``.spec`` is the edited `ArchSpec` (a `SpecError` while the edit is invalid; the
    widget shows the message), ``.count`` its `Count`, ``.build()`` the module,
    ``.to_json()`` the spec as JSON for ``resnet-explorer train --arch FILE``.
    """

    _what = "This architecture builder"

    def __init__(self, preset: str = "cifar-resnet20", **kwargs: Any):
        super().__init__(**kwargs)
        self._draft: ArchSpec = get_spec(preset)
        self._count: Count | None = None
        self.controls: Controls = controls_for(self._draft)
        self.error: str | None = None
        self._quiet = False  # True while controls are set from the spec
        self._own_name: str | None = None  # a name the user gave the net (set_spec)
        self._last_summary = ""
        self._make_family_row()
        self._make_outputs()
        self._wire()
        self.children = [
            W.HBox([self.preset, self.family, self.n, self.imagenet_depth]),
            W.HBox([self.residual, self.shortcut, self.stride_at]),
            W.HBox([self.shortcut_kind, self.block_order]),
            W.HBox([self.input_size, self.num_classes]),
            self.reasons,
            self.rows.box,
            self.message,
            self.summary,
            W.HBox([self.check_button, self.check_line]),
            self.diagram,
            self.paper,
            W.HBox([self.stage_table, self.comparison], layout=W.Layout(grid_gap="32px", flex_flow="row wrap")),
            self.link,
        ]
        self.set_preset(preset)

    def _make_family_row(self) -> None:
        """The controls that pick the net: preset, family, n or depth, and its options."""
        self.preset = W.Dropdown(options=PRESETS, value=None, description="preset",
                                 layout=W.Layout(width="250px"))
        self.family = W.Dropdown(options=list(FAMILIES), description="family", layout=W.Layout(width="250px"))
        self.n = W.Dropdown(options=_n_options("basic"), description="n", layout=W.Layout(width="190px"))
        self.imagenet_depth = W.Dropdown(options=[("—", NONE)] + [(str(d), d) for d in IMAGENET_BLOCKS],
                                         description="depth", layout=W.Layout(width="160px"))
        self.residual = W.ToggleButtons(options=[("residual", True), ("plain", False)],
                                        style={"button_width": "80px"})
        self.shortcut = W.Dropdown(options=[("A: zero-pad identity", "A"),
                                            ("B: projection where shape changes", "B"),
                                            ("C: all projections", "C")], description="shortcut",
                                   layout=W.Layout(width="330px"))
        self.shortcut_kind = W.Dropdown(options=[("identity: F(x) + S(x) (paper)", "identity"),
                                                 ("gated (highway): T·F + (1−T)·S", "gated")],
                                        description="kind", layout=W.Layout(width="330px"))
        self.block_order = W.Dropdown(options=[("post-activation (paper)", "post"),
                                               ("pre-activation (He et al. 2016)", "pre")],
                                      description="order", layout=W.Layout(width="330px"))
        self.stride_at = W.Dropdown(options=[("on the 1×1 (paper, v1)", "1x1"),
                                             ("on the 3×3 (torchvision, v1.5)", "3x3")],
                                    description="stride", layout=W.Layout(width="330px"))
        self.input_size = W.IntText(description="input", layout=W.Layout(width="160px"))
        self.num_classes = W.IntText(description="classes", layout=W.Layout(width="160px"))
        self.reasons = W.HTML()
        self.add_stage_button = W.Button(description="+ stage", layout=W.Layout(width="90px"))
        self.remove_stage_button = W.Button(description="− stage", layout=W.Layout(width="90px"))
        self.rows = StageRows(self._edit_stage, [self.add_stage_button, self.remove_stage_button])
        self.stage_controls: dict[str, StageControls] = self.rows.controls

    def _make_outputs(self) -> None:
        """What the builder shows: message, summary, fvcore check, diagram, paper, tables."""
        self.summary, self.message = W.HTML(), W.HTML()
        self.stage_table, self.comparison, self.paper = W.HTML(), W.HTML(), W.HTML()
        self.check_button = W.Button(description="check with fvcore", layout=W.Layout(width="150px"))
        self.check_line = W.HTML()  # "fvcore agrees: …" (crosscheck.check_count), cleared on every edit
        trace, layout = diagram_parts(self._draft)
        self.diagram = go.FigureWidget(data=[trace], layout=layout)
        self.link = KernelLink(self.diagram)
        self.add_class("rx-builder")
        for name, w in (("preset", self.preset), ("family", self.family), ("residual", self.residual),
                        ("shortcut", self.shortcut), ("shortcut-kind", self.shortcut_kind),
                        ("block-order", self.block_order), ("stride", self.stride_at), ("diagram", self.diagram),
                        ("n", self.n), ("depth", self.imagenet_depth), ("reasons", self.reasons),
                        ("summary", self.summary), ("message", self.message), ("paper-figures", self.paper)):
            w.add_class(f"rx-{name}")

    def _wire(self) -> None:
        """Each control edits the draft spec; the buttons add, remove and check."""
        self.preset.observe(lambda ch: ch["new"] and not self._quiet and self.set_preset(ch["new"]),
                            names="value")
        self.family.observe(self._on_family, names="value")
        self.n.observe(lambda ch: self._on_zoo_control("n", ch["new"]), names="value")
        self.imagenet_depth.observe(lambda ch: self._on_zoo_control("depth", ch["new"]), names="value")
        for w, field in ((self.residual, "residual"), (self.shortcut, "shortcut"),
                         (self.shortcut_kind, "shortcut_kind"), (self.block_order, "block_order"),
                         (self.stride_at, "stride_at"), (self.input_size, "input_size"),
                         (self.num_classes, "num_classes")):
            w.observe(lambda ch, field=field: self._edit(field, ch["new"]), names="value")
        self.add_stage_button.on_click(lambda _: self.add_stage())
        self.remove_stage_button.on_click(lambda _: self.remove_stage())
        self.check_button.on_click(lambda _: self.check())

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

    def check(self) -> str:
        """Trace the built net with fvcore and show (and return) the one-line verdict."""
        from ..crosscheck import check_count

        self.check_line.value = html.escape(line := check_count(self.spec).line())
        return line

    def set_preset(self, name: str) -> None:
        """Load a named net of the zoo (``resnet50``, ``cifar-plain56``, ``vgg-e`` …)."""
        try:
            spec = get_spec(name)
        except SpecError as e:
            self._show_error(str(e))
            return
        self._own_name = None
        self._load(spec)

    def set_spec(self, spec: ArchSpec) -> None:
        """Edit ``spec`` (e.g. one read from JSON); a name of the user's own is kept."""
        self._own_name = spec.name if _user_name(spec.name) else None
        self._load(copy.deepcopy(spec))

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
        self._load(spec)

    def remove_stage(self) -> None:
        """Drop the last stage (the stem stays)."""
        if len(self._draft.stages) <= 1:
            self._show_error("the stem conv1 is the last stage: a net needs at least one")
            return
        spec = copy.deepcopy(self._draft)
        spec.stages.pop()
        self._load(spec)

    def _refuse(self, field: str) -> bool:
        """A control that does not apply to this net was changed (from code): put it back, say why."""
        reason = self.controls.disabled.get(field)
        if reason is None:
            return False
        self._sync_controls()
        self.message.value = message_html(f"{LABELS[field]} does not apply here: {reason}", "info")
        return True

    def _edit(self, field: str, value: Any) -> None:
        if self._quiet or self._refuse(field):
            return
        changes = {field: value}
        if field == "residual" and not value:
            changes["shortcut_kind"] = "identity"  # a plain net has no shortcuts to gate
        self._draft = self._draft.replace(**changes)
        self._refresh()

    def _edit_stage(self, name: str, field: str, value: Any) -> None:
        if self._quiet:
            return
        spec = copy.deepcopy(self._draft)
        stage = next(s for s in spec.stages if s.name == name)
        setattr(stage, field, value)
        self._draft = spec
        self._refresh()

    def _on_zoo_control(self, field: str, value: Any) -> None:
        """n (CIFAR) or depth (ImageNet): the zoo net of that size, other options kept."""
        if self._quiet or self._refuse(field):
            return
        if value == NONE:  # "—" picked: nothing to build, the control shows the net's value again
            self._sync_controls()
            return
        try:
            spec = spec_from_controls(self.controls.replace(**{field: value}))
        except SpecError as e:
            self._show_error(str(e))
            return
        self._load(spec)

    def _on_family(self, change: dict) -> None:
        if self._quiet:
            return
        family = FAMILIES[change["new"]]
        if family == "custom":
            self._sync_controls()
            self.message.value = message_html(
                "the family follows the net: edit the stages below to make a custom one", "info")
            return
        self._own_name = None
        self._load(family_default(family, self._draft.residual))

    # -- controls <-> spec ---------------------------------------------------------------------------
    def _load(self, spec: ArchSpec) -> None:
        """A new net (preset, family, n, depth, a stage more or less): the stage rows are redrawn too."""
        self._draft = spec
        self._refresh(rows=True)

    def _sync_controls(self, rows: bool = False) -> None:
        """Set the family row from `controls_for` (and the stage rows from the draft, if asked),
        without triggering edits. A stage edit leaves its rows alone, so a field being typed in
        keeps its focus."""
        c = self.controls
        self._quiet = True
        try:
            self.preset.value = c.preset
            self.family.value = FAMILY_LABELS[c.family]
            options = _n_options(c.block or "basic")
            if self.n.options != tuple(options):  # a bottleneck CIFAR net is 9n+2 layers deep
                self.n.options = options
            self.n.value, self.imagenet_depth.value = c.n or NONE, c.depth or NONE
            self.residual.value, self.shortcut.value, self.stride_at.value = c.residual, c.shortcut, c.stride_at
            self.shortcut_kind.value, self.block_order.value = c.shortcut_kind, c.block_order
            self.input_size.value, self.num_classes.value = c.input_size, c.num_classes
            for field, w in (("n", self.n), ("depth", self.imagenet_depth), ("residual", self.residual),
                             ("shortcut", self.shortcut), ("shortcut_kind", self.shortcut_kind),
                             ("block_order", self.block_order), ("stride_at", self.stride_at)):
                w.disabled = field in c.disabled
                w.tooltip = c.disabled.get(field)
            self.reasons.value = "" if not c.disabled else (
                "<div style='color:#666;font-size:12px;line-height:1.4'>not for this net — " + " · ".join(
                    f"<b>{LABELS[k]}</b>: {html.escape(v)}" for k, v in c.disabled.items()) + "</div>")
            if rows:
                self.rows.draw(self._draft)
            self.remove_stage_button.disabled = len(self._draft.stages) <= 1
        finally:
            self._quiet = False

    # -- recount and redraw ----------------------------------------------------------------------------
    def _show_error(self, text: str) -> None:
        self.error = text
        self.message.value = message_html(text)

    def _refresh(self, rows: bool = False) -> None:
        """Validate and recount the draft; name it; redraw the controls, numbers, diagram, tables."""
        try:
            c = count(self._draft)
        except SpecError as e:
            self._count = None
            self._show_error(str(e))
            self.summary.value = ("<div style='color:#777'>(the numbers below are of the last valid net; "
                                  "fix the value above)</div>" + self._last_summary)
            if rows:  # the stage just added (say) must be there to be fixed
                self._quiet = True
                try:
                    self.rows.draw(self._draft)
                finally:
                    self._quiet = False
            return
        self.controls = controls_for(self._draft)
        name = self._name()
        if name != self._draft.name:
            self._draft = self._draft.replace(name=name)
            c.arch = name
        self._count = c
        self.error = None
        self.message.value = ""
        self._sync_controls(rows)
        self._draw(c)

    def _name(self) -> str:
        """The zoo's name for the draft; else the user's own name; else ``custom-<kind><depth>``."""
        d = self._draft
        if self.controls.name:
            return self.controls.name
        return self._own_name or f"custom-{'resnet' if d.residual else 'plain'}{d.depth}"

    def _draw(self, c: Count) -> None:
        spec = self._draft
        n = f" (6n+2, n={self.controls.n})" if self.controls.family == "cifar" else ""
        has_blocks = any(not s.is_conv for s in spec.stages)
        kind = f"residual, option {spec.shortcut}" if spec.residual and has_blocks else "plain"
        if spec.residual and has_blocks and spec.shortcut_kind == "gated":
            kind += ", gated (highway) shortcuts"
        if has_blocks and spec.block_order == "pre":
            kind += ", pre-activation blocks"
        self.summary.value = self._last_summary = (
            f"<div><b class='rx-name'>{html.escape(spec.name)}</b> · {spec.depth} layers{n} · {kind} · "
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
            self.diagram.layout.yaxis.range = layout["yaxis"]["range"]
            self.diagram.layout.height = layout["height"]
        keep_state(self.diagram)  # a view drawn later (a reload) shows this net, as the summary does
        self.check_line.value = ""
        self.stage_table.value = stage_table_html(c)
        self.paper.value = paper_html(spec, c)
        self.comparison.value = reference_table_html(spec, c)
