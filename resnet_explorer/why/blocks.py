"""A net's blocks, and its forward pass with some of them deleted (Veit et al. 2016).

Deleting a residual block removes its residual branch F and keeps its shortcut: a
post-activation block y = relu(F(x) + S(x)) becomes relu(S(x)), a pre-activation one
F(a) + S(·) becomes S(·), a gated one S + T·(F − S) becomes (1 − T)·S. A plain block has
no shortcut to keep: it is replaced by the identity, which only exists where its input and
output shapes agree (not in the first block of conv3_x, conv4_x …, which halves the map and
doubles the channels).

`Lesioner` runs the net once and keeps every block's input, so a lesion that deletes
blocks from the k-th on recomputes only the blocks after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from ..errors import UsageError
from ..model import BasicBlock, Bottleneck, Net


@dataclass(frozen=True)
class Block:
    """One block of a net: its name (``conv3_x.0``, the paper's conv3_1), where it sits in
    `Net`'s children, and whether it can be deleted."""

    name: str
    stage: str
    index: int
    residual: bool
    in_channels: int
    out_channels: int
    stride: int

    @property
    def changes_shape(self) -> bool:
        return self.stride != 1 or self.in_channels != self.out_channels

    @property
    def deletable(self) -> bool:
        return self.residual or not self.changes_shape

    def why_not(self) -> str | None:
        """Why the block cannot be deleted (None when it can)."""
        if self.deletable:
            return None
        return (f"a plain block has no shortcut to keep, and the identity cannot replace {self.name}: it changes "
                f"the shape ({self.in_channels}→{self.out_channels} channels, stride {self.stride})")


def _shape(block: nn.Module) -> tuple[int, int, int]:
    first, last = block.conv1, (block.conv3 if isinstance(block, Bottleneck) else block.conv2)
    return first.in_channels, last.out_channels, max(max(c.stride) for c in (block.conv1, block.conv2))


def block_list(model: nn.Module) -> list[Block]:
    """Every basic or bottleneck block of ``model`` in network order (none in VGG, AlexNet)."""
    out = []
    for stage, child in model.named_children():
        if not isinstance(child, nn.Sequential):
            continue
        for i, block in enumerate(child):
            if isinstance(block, (BasicBlock, Bottleneck)):
                cin, cout, stride = _shape(block)
                out.append(Block(f"{stage}.{i}", stage, i, block.shortcut is not None, cin, cout, stride))
    return out


def pick_blocks(model: nn.Module, names: Iterable[str] | None, label: str) -> list[Block]:
    """The deletable blocks named in ``names`` (all deletable blocks when None); a name that
    is not a block, or a block that cannot be deleted, is one line."""
    blocks = block_list(model)
    if not blocks:
        raise UsageError(f"{label} has no residual or plain blocks to delete (VGG and AlexNet are stacks of layers)")
    if names is None:
        return [b for b in blocks if b.deletable]
    by_name, picked = {b.name: b for b in blocks}, []
    for n in names:
        b = by_name.get(n)
        if b is None:
            raise UsageError(f"{label} has no block {n!r}: its blocks are {blocks[0].name} … {blocks[-1].name} "
                             "(stage.index, e.g. conv3_x.0 for the paper's conv3_1)")
        if not b.deletable:
            raise UsageError(f"{label}: {b.why_not()}; choose a block with the same shape in and out")
        picked.append(b)
    return picked


def without_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block with its residual branch removed: the shortcut alone (see the module's
    docstring); a plain block of unchanged shape: the identity."""
    if block.shortcut is None:
        return x
    if block.order == "post":
        into = x
    else:  # pre-activation: where the shape changes, the shortcut reads the activated input
        into = torch.relu(block.bn1(x)) if block.changes and block.bn1 is not None else x
    s = block.shortcut(into)
    if block.gate is not None:
        s = s - block.gate(into) * s
    return torch.relu(s) if block.order == "post" else s  # not in place: s may be the kept input x


class Lesioner:
    """Forward passes of one net on one batch with any set of blocks deleted, sharing the
    intact part: the input of every block is kept from one intact pass (`Lesioner.logits`)."""

    def __init__(self, model: Net, x: torch.Tensor):
        self.model = model.eval()
        self.blocks = block_list(model)
        stages = {b.stage for b in self.blocks}
        self.steps: list[tuple[str | None, nn.Module]] = []  # (block name or None, module), in order
        for name, child in model.named_children():
            if name in stages:
                self.steps += [(f"{name}.{i}", block) for i, block in enumerate(child)]
            else:
                self.steps.append((None, child))
        self.position = {name: j for j, (name, _) in enumerate(self.steps) if name is not None}
        self.inputs: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            self.base = self._run(x, 0, frozenset(), record=True)

    def _run(self, x: torch.Tensor, start: int, deleted: frozenset[str], record: bool = False) -> torch.Tensor:
        """From step ``start`` (``x`` is its input) to the logits."""
        for name, module in self.steps[start:]:
            if name is not None and record:
                self.inputs[name] = x
            x = without_branch(module, x) if name in deleted else module(x)
        return x

    def logits(self, deleted: Sequence[str] = ()) -> torch.Tensor:
        """The logits with the blocks named in ``deleted`` removed, recomputed from the first."""
        if not deleted:
            return self.base
        unknown = [n for n in deleted if n not in self.position]
        if unknown:
            raise UsageError(f"no block {unknown[0]!r} in {self.model.spec.name}")
        first = min(deleted, key=self.position.__getitem__)
        with torch.inference_mode():
            return self._run(self.inputs[first], self.position[first], frozenset(deleted))
