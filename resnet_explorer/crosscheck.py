"""The analytic count checked against tools that look at the built model: fvcore's traced
multiply-adds and torchinfo's summary. PyTorch is imported only when a model is built (``resnet-explorer info NAME --check / --summary``,
the builder's "check with fvcore" button).

`count` walks the spec without a module; here the spec is built (`model.build`) and run
once on a zero image of its input size, so the two can disagree only if the builder and
the counter do. fvcore counts one multiply-add per FLOP for conv and fc layers, as the
paper and `count` do, so its total is compared exactly, and layer by layer. Both tools
are optional (the ``check`` extra): without one, the answer is one line saying how to
install it.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from dataclasses import dataclass, field

from .count import count
from .errors import UsageError
from .spec import ArchSpec

CHECK_EXTRA = 'pip install "resnet-explorer[check]"'
_FVCORE_OPS = ("conv", "linear", "addmm", "matmul")  # conv and fc layers: the paper's convention


@dataclass
class CountCheck:
    """Our multiply-adds beside fvcore's (None where fvcore is not installed)."""

    arch: str
    ours: int
    fvcore: int | None
    differing: list[str] = field(default_factory=list)  # layers whose counts differ

    @property
    def agrees(self) -> bool | None:
        """True or False when fvcore could check; None when it is not installed."""
        return None if self.fvcore is None else self.fvcore == self.ours and not self.differing

    def line(self) -> str:
        """One line: agreement, or the two numbers and the layers that differ, or how to install."""
        if self.fvcore is None:
            return f"fvcore is not installed, so the count is not cross-checked: {CHECK_EXTRA}"
        if self.agrees:
            return f"fvcore agrees: {self.fvcore:,} multiply-adds traced, {self.ours:,} counted"
        layers = f" (layers: {', '.join(self.differing[:5])}{' …' if len(self.differing) > 5 else ''})"
        return (f"fvcore DISAGREES: {self.fvcore:,} multiply-adds traced, {self.ours:,} counted"
                + (layers if self.differing else ""))


def _example(spec: ArchSpec):
    import torch

    return torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size)


def check_count(spec: ArchSpec) -> CountCheck:
    """Count ``spec`` analytically and, where fvcore is installed, trace the built model with
    fvcore and compare the totals and every conv and fc layer."""
    c = count(spec)
    if importlib.util.find_spec("fvcore") is None:
        return CountCheck(c.arch, c.macs, None)
    import torch

    from .model import build

    model = build(spec).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # fvcore warns about every op it does not count (relu, add, ...)
        from fvcore.nn import FlopCountAnalysis

        fa = FlopCountAnalysis(model, _example(spec)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        traced = sum(v for k, v in fa.by_operator().items() if k in _FVCORE_OPS)
        by_module = fa.by_module()
    differing = [r.name for r in c.rows if r.kind in ("conv", "fc") and by_module.get(r.name) != r.macs]
    return CountCheck(c.arch, c.macs, int(traced), differing)


def summary(spec: ArchSpec, depth: int = 3) -> str:
    """torchinfo's summary table of the built model at the spec's input size (layers ``depth``
    levels deep: stages, blocks, layers). Raises `UsageError` when torchinfo is missing."""
    if importlib.util.find_spec("torchinfo") is None:
        raise UsageError(f"--summary needs torchinfo, which is not installed: {CHECK_EXTRA}")
    from torchinfo import summary as torchinfo_summary

    from .model import build

    model = build(spec).eval()
    stats = torchinfo_summary(model, input_data=_example(spec), depth=depth, verbose=0,
                              col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    # torchinfo 1.8 on Python >= 3.11 prints its unit enum ("Units.GIGABYTES") for mult-adds: say G
    return re.sub(r"Total mult-adds \(Units\.(\w)\w*\)", r"Total mult-adds (\1)", str(stats))
