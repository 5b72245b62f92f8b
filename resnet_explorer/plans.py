"""Experiments as plans: named sets of runs (spec + recipe each) that the runner trains.

``degradation`` trains plain and residual nets of several depths (Fig. 1, 6);
``shortcuts`` trains one depth with options A, B and C (Table 3) and a gated (highway)
shortcut; ``preact`` trains the paper's post-activation block against He et al. 2016's
pre-activation one at one depth; ``cpu_demo`` is the CPU demo's degradation experiment;
`load_plans` reads a user's own from JSON. `experiments.run_experiment` trains a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import UsageError, UserError
from .safeio import UnsafeFile, read_record
from .recipes import Recipe, get_recipe
from .spec import ArchSpec
from .zoo import get_spec


@dataclass
class RunPlan:
    """One run of an experiment: a name (its directory), an architecture, a recipe."""

    name: str
    spec: ArchSpec
    recipe: Recipe

    def to_dict(self) -> dict:
        return {"name": self.name, "dir": self.name, "spec": self.spec.to_dict(), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> RunPlan:
        return cls(d["name"], ArchSpec.from_dict(d["spec"]), Recipe.from_dict(d["recipe"]))


def degradation(depths: Sequence[int] = (20, 32, 44, 56), recipe: Recipe | None = None,
                width: int = 16) -> list[RunPlan]:
    """Plain and residual CIFAR nets at each depth (option A: same parameters)."""
    recipe = recipe or get_recipe("cifar-paper")
    plans = []
    for residual in (False, True):
        for d in depths:
            spec = get_spec(f"cifar-{'resnet' if residual else 'plain'}{d}", width=width)
            plans.append(RunPlan(f"{'resnet' if residual else 'plain'}-{d}", spec, recipe))
    return plans


# The CPU demo's experiment (`resnet-explorer demo`, notebook 03's cpu mode, the benchmark
# benchmarks/demo_orderings.py): its data and net width; its recipe is `cpu-demo`. The nets are
# 8 wide (the paper's 16; ResNet-20 68k weights, ResNet-56 215k) on 10,000 training images:
# 4-wide nets land where luck puts them (ResNet-56's training error spread 15 points over 3
# seeds), and at 8 wide the deeper ResNet learns more slowly per iteration at lr 0.01 and above
# (see the `cpu-demo` recipe for the lr).
CPU_DEMO_DATA = "synthetic-demo"
CPU_DEMO_WIDTH = 8


def cpu_demo(depths: Sequence[int] = (20, 56), iters: int | None = None, width: int | None = None,
             **recipe_overrides: object) -> tuple[list[RunPlan], str]:
    """The CPU demo's degradation experiment: plain and residual nets of ``depths``,
    ``CPU_DEMO_WIDTH`` wide, all trained with the one `cpu-demo` recipe on
    ``CPU_DEMO_DATA``. Returns the plans and the ``--data`` string."""
    recipe = get_recipe("cpu-demo", **({"iters": iters} if iters else {}), **recipe_overrides)
    return degradation(depths, recipe, width or CPU_DEMO_WIDTH), CPU_DEMO_DATA


SHORTCUT_KINDS = ("A", "B", "C", "gated")


def shortcuts(depth: int = 20, recipe: Recipe | None = None, width: int = 16,
              kinds: Sequence[str] = SHORTCUT_KINDS) -> list[RunPlan]:
    """One residual depth with shortcut options A, B and C (Table 3), a highway-gated one
    (``gated``: option A's shapes, T·F + (1 − T)·S), and its plain twin."""
    recipe = recipe or get_recipe("cifar-paper")
    unknown = [k for k in kinds if k not in SHORTCUT_KINDS]
    if unknown:
        raise UsageError(f"shortcut kind(s) {', '.join(map(str, unknown))} invalid: use {', '.join(SHORTCUT_KINDS)}")
    plans = [RunPlan(f"plain-{depth}", get_spec(f"cifar-plain{depth}", width=width), recipe)]
    for kind in kinds:
        if kind == "gated":
            plans.append(RunPlan(f"resnet-{depth}-gated", get_spec(f"cifar-highway{depth}", width=width), recipe))
        else:
            spec = get_spec(f"cifar-resnet{depth}", width=width, shortcut=kind)
            plans.append(RunPlan(f"resnet-{depth}-{kind}", spec, recipe))
    return plans


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``--kinds A,gated`` -> ("A", "gated"); None: every kind (`SHORTCUT_KINDS`)."""
    if text is None:
        return SHORTCUT_KINDS
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds:
        raise UsageError(f"--kinds {text!r} names no shortcut kind: use some of {','.join(SHORTCUT_KINDS)}")
    return kinds


def preact(depth: int = 20, recipe: Recipe | None = None, width: int = 16) -> list[RunPlan]:
    """The paper's (post-activation) ResNet and He et al. 2016's pre-activation one at one
    CIFAR depth, same blocks and shortcuts (``cifar-preresnetD``'s: basic for 6n+2, the
    2016 paper's bottlenecks for 164 and 1001)."""
    recipe = recipe or get_recipe("cifar-paper")
    pre = get_spec(f"cifar-preresnet{depth}", width=width)
    post = get_spec(f"cifar-resnet{depth}", width=width, block=pre.stages[1].block, shortcut=pre.shortcut)
    return [RunPlan(f"resnet-{depth}-post", post, recipe), RunPlan(f"resnet-{depth}-pre", pre, recipe)]


EXPERIMENTS: dict[str, Callable[..., list[RunPlan]]] = {
    "degradation": degradation, "shortcuts": shortcuts, "preact": preact}


def load_plans(path: str | Path) -> list[RunPlan]:
    """A user-defined experiment: a JSON list of {"name", "arch" or "spec", "recipe", overrides}."""
    try:
        items = read_record(path)
        plans = []
        for item in items:
            spec = ArchSpec.from_dict(item["spec"]) if "spec" in item else get_spec(item["arch"], **item.get("arch_options", {}))
            recipe = get_recipe(item.get("recipe", "cifar-paper"), **item.get("recipe_options", {}))
            plans.append(RunPlan(item.get("name", spec.name), spec, recipe))
    except FileNotFoundError:
        raise UsageError(f"experiment file {path} not found") from None
    except (UnsafeFile, OSError, UserError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise UsageError(f"experiment file {path} is invalid ({e}): expected a JSON list of "
                        '{"name": ..., "arch": "cifar-resnet20", "recipe": "cifar-paper"}') from None
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise UsageError(f"experiment file {path}: run names must be unique, got {names}")
    return plans
