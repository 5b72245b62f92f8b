"""The builder's stage rows: block type, number of blocks, width and first stride per stage."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable

import ipywidgets as W

from ..spec import ArchSpec


@dataclass
class StageControls:
    """The widgets that edit one stage of blocks (conv2_x …)."""

    block: W.Dropdown
    blocks: W.IntText
    width: W.IntText
    stride: W.Dropdown

    def widgets(self) -> list[W.Widget]:
        return [self.block, self.blocks, self.width, self.stride]


def _conv_text(stage: Any) -> str:
    return "; ".join(f"{l.kernel}×{l.kernel}, {l.out_channels}" + (f", /{l.stride}" if l.stride > 1 else "")
                     + (", pool" if l.pool else "") for l in stage.layers)


class StageRows:
    """One row per stage: conv stages as text, block stages as four editable fields.

    ``on_edit(stage name, field, value)`` is called for every change typed into a row;
    `draw` sets the rows from a spec without calling it (the caller sets ``quiet``).
    """

    def __init__(self, on_edit: Callable[[str, str, Any], None], buttons: list[W.Widget]):
        self.on_edit = on_edit
        self.buttons = buttons
        self.controls: dict[str, StageControls] = {}
        self.box = W.VBox()
        self._wrappers: list[W.Widget] = []  # the rows' own boxes and labels, closed when redrawn

    def _controls(self, name: str) -> StageControls:
        c = self.controls.get(name)
        if c is None:
            c = StageControls(
                W.Dropdown(options=["basic", "bottleneck"], layout=W.Layout(width="120px")),
                W.IntText(layout=W.Layout(width="80px")),
                W.IntText(layout=W.Layout(width="90px")),
                W.Dropdown(options=[1, 2], layout=W.Layout(width="60px")),
            )
            for field, w in zip(("block", "num_blocks", "width", "stride"), c.widgets()):
                w.add_class(f"rx-{field}-{name}")
                w.observe(lambda ch, field=field: self.on_edit(name, field, ch["new"]), names="value")
            self.controls[name] = c
        return c

    def draw(self, spec: ArchSpec) -> None:
        """Set the rows from ``spec`` (rows of stages that are gone are dropped)."""
        names = [s.name for s in spec.stages]
        for name in [n for n in self.controls if n not in names]:
            for w in self.controls.pop(name).widgets():
                w.close()
        for w in self._wrappers:
            w.close()
        rows: list[W.Widget] = [W.HTML("<b>stage</b> — block type, blocks, width, first stride")]
        wrappers: list[W.Widget] = list(rows)
        for s in spec.stages:
            if s.is_conv:
                row = W.HTML(f"<code>{s.name}</code>: conv layers {html.escape(_conv_text(s))}")
                rows.append(row)
                wrappers.append(row)
                continue
            c = self._controls(s.name)
            c.block.value, c.blocks.value, c.width.value = s.block, s.num_blocks, s.width
            c.stride.options = sorted({1, 2, s.stride})
            c.stride.value = s.stride
            label = W.HTML(f"<code>{s.name}</code>", layout=W.Layout(width="70px"))
            row = W.HBox([label, *c.widgets()])
            rows.append(row)
            wrappers += [label, row]
        rows.append(W.HBox(self.buttons))
        wrappers.append(rows[-1])
        self._wrappers = wrappers
        self.box.children = rows
