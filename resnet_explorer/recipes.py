"""Training recipes as data, and the learning-rate schedule a recipe describes.

The paper's recipes (Sec. 3.4, 4.2) and short ones for CPU demos and tests. A recipe is a
plain dataclass; `get_recipe(name, **overrides)` returns a copy with fields changed
(`Recipe.override`, which a resumed run's ``--iters``/``--set`` use too).
``iters=N`` shortens or lengthens a run and moves the lr milestones with it (the paper's
32k/48k of 64k stay at 50 % and 75 %). `LRSchedule` turns a recipe into the lr of each
iteration (steps at milestones, on a plateau, and the warm-up of very deep nets).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import RecipeError


@dataclass
class Recipe:
    """SGD with momentum and a step schedule, counted in iterations (mini-batches)."""

    name: str
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "multistep"  # multistep: lr x gamma at each milestone; plateau: on eval error
    milestones: list[int] = field(default_factory=lambda: [32_000, 48_000])
    gamma: float = 0.1
    plateau_patience: int = 5  # evaluations without improvement before lr x gamma
    max_iters: int = 64_000
    warmup_lr: float | None = 0.01  # for deep nets: this lr until train error < warmup_until_error
    warmup_until_error: float = 0.8
    warmup_min_depth: int = 110  # warm-up applies to nets at least this deep
    augment: bool = True
    val_split: int | None = None  # hold out this many training images as the evaluation set
    log_every: int = 100  # iterations between train-metric lines
    eval_every: int = 1000  # iterations between evaluations on the test (or val) set
    checkpoint_every: int = 1000
    log_grad_norms: bool = True  # a "grad" line of per-layer gradient norms with each train line
    # BatchNorm statistics over groups of this many images of each batch (ghost BN,
    # `ghost_bn`): 64 is the paper's, its batch of 128 split over two GPUs; None: the whole batch
    bn_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        return cls(**d)

    def with_iters(self, iters: int) -> Recipe:
        """The same recipe for ``iters`` iterations, milestones scaled in proportion."""
        if not _is_int(iters) or iters <= 0:
            raise RecipeError(f"iters={iters!r} is invalid: use a positive number of iterations")
        scale = iters / self.max_iters
        milestones = [max(1, round(m * scale)) for m in self.milestones]
        return dataclasses.replace(
            self,
            max_iters=iters,
            milestones=milestones,
            log_every=min(self.log_every, iters),
            eval_every=min(self.eval_every, iters),
            checkpoint_every=min(self.checkpoint_every, iters),
        )

    def override(self, **changes: Any) -> Recipe:
        """This recipe with fields changed, checked: ``iters=N`` first rescales the schedule
        (`with_iters`; None leaves it), then the fields given replace theirs; a name that is
        not a field is one line listing them. What `get_recipe` and a resumed run's
        ``--iters``/``--set`` both use."""
        iters = changes.pop("iters", None)
        recipe = self.with_iters(iters) if iters is not None else self
        fields = [f.name for f in dataclasses.fields(Recipe)]
        bad = sorted(set(changes) - set(fields))
        if bad:
            raise RecipeError(f"recipe has no field(s) {', '.join(bad)}: use {', '.join(sorted(fields))}")
        return dataclasses.replace(recipe, **changes).validate()

    def validate(self) -> Recipe:
        """Every field's type and range, checked: a bad value is one line naming it (a recipe
        comes from ``--set``, a recipe.json or an experiment file, all of which can hold anything)."""

        def bad(name: str, want: str) -> RecipeError:
            return RecipeError(f"recipe {self.name}: {name}={getattr(self, name)!r} is invalid: use {want}")

        if not isinstance(self.name, str) or not self.name.strip():
            raise RecipeError(f"recipe name {self.name!r} is invalid: use a non-empty string")
        for name in ("batch_size", "max_iters", "log_every", "eval_every", "checkpoint_every",
                     "plateau_patience", "warmup_min_depth"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise bad(name, "a positive integer")
        if self.val_split is not None and (not _is_int(self.val_split) or self.val_split <= 0):
            raise bad("val_split", "a positive integer (images held out), or null")
        ranges = {"lr": (0, None, "lr > 0"), "momentum": (None, 1, "0 <= momentum < 1"),
                  "weight_decay": (None, None, "weight_decay >= 0"), "gamma": (0, None, "gamma > 0"),
                  "warmup_until_error": (None, None, "0 <= warmup_until_error <= 1")}
        for name, (above, below, want) in ranges.items():
            v = getattr(self, name)
            if not _is_number(v) or v < 0 or (above is not None and v <= above) or (below is not None and v >= below):
                raise bad(name, f"a finite number, {want}")
        if self.warmup_until_error > 1:
            raise bad("warmup_until_error", "a finite number, 0 <= warmup_until_error <= 1")
        if self.warmup_lr is not None and (not _is_number(self.warmup_lr) or self.warmup_lr <= 0):
            raise bad("warmup_lr", "a finite number > 0, or null for no warm-up")
        if self.bn_batch is not None and (not _is_int(self.bn_batch) or self.bn_batch <= 0
                                          or self.batch_size % self.bn_batch):
            raise bad("bn_batch", f"a divisor of batch_size={self.batch_size} (the images each BatchNorm "
                      "normalises together, e.g. 64 as on the paper's two GPUs), or null for the whole batch")
        if self.schedule not in ("multistep", "plateau"):
            raise bad("schedule", "multistep or plateau")
        if not isinstance(self.milestones, list) or not all(_is_int(m) and m > 0 for m in self.milestones):
            raise bad("milestones", "a list of positive iteration numbers, e.g. [32000, 48000]")
        for name in ("augment", "log_grad_norms"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        return self


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool, not NaN or an infinity, which JSON's NaN/Infinity allow)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


RECIPES: dict[str, Recipe] = {
    # Sec. 4.2: batch 128, lr 0.1 (/10 at 32k, 48k), stop at 64k, wd 1e-4, momentum 0.9;
    # depth >= 110 warms up at 0.01 until training error < 80 %.
    "cifar-paper": Recipe("cifar-paper"),
    # Sec. 3.4: batch 256, lr 0.1 /10 when the error plateaus, up to 600k iterations.
    "imagenet-paper": Recipe(
        "imagenet-paper", batch_size=256, schedule="plateau", milestones=[], max_iters=600_000,
        warmup_lr=None, eval_every=5000, checkpoint_every=5000, log_every=100,
    ),
    # The paper's CIFAR recipe, shortened for a CPU: 2,000 iterations, /10 at 50 % and 75 %.
    "cifar-short": Recipe("cifar-short").with_iters(2000),
    # A few minutes on a 2-core CPU for small nets (notebooks 00, 04, 05, the dashboard): the
    # paper's recipe (lr 0.1, augmentation) shortened to 600 iterations.
    "cpu-short": dataclasses.replace(
        Recipe("cpu-short").with_iters(600), log_every=20, eval_every=100, checkpoint_every=100,
    ),
    # The CPU demo (`resnet-explorer demo`, notebook 03's cpu mode), one recipe for every depth,
    # plain and residual: the paper's SGD (momentum 0.9, weight decay 1e-4, lr steps /10) for
    # 1,000 iterations of batch 64 without augmentation (the demo measures how well each net
    # fits its fixed training set; see experiments.cpu_demo), from lr 0.005, /10 at 80 % and
    # 90 %. Why so small and so late: at 1,000 iterations the 8-wide ResNet-20 learns faster per
    # iteration than ResNet-56 at lr 0.01-0.1 (it ends 4-21 points lower), and the two cross
    # only at about lr 0.005; the late steps leave most of the run at that lr.
    "cpu-demo": dataclasses.replace(
        Recipe("cpu-demo", batch_size=64, lr=0.005, augment=False).with_iters(1000), milestones=[800, 900],
        log_every=20, eval_every=200, checkpoint_every=200,
    ),
    # Seconds: for tests.
    "test": dataclasses.replace(
        Recipe("test", batch_size=32).with_iters(40), log_every=5, eval_every=10, checkpoint_every=10,
    ),
}


def get_recipe(name: str, /, **overrides: Any) -> Recipe:
    """A named recipe with fields overridden (``iters=`` scales the schedule; ``name=`` renames)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")
    return RECIPES[name].override(**overrides)


class LRSchedule:
    """The paper's schedules: lr x gamma at fixed milestones, or when the eval error plateaus;
    optionally a warm-up lr until the training error falls below a threshold (ResNet-110)."""

    def __init__(self, recipe: Recipe, warmup: bool):
        self.recipe = recipe
        self.warming = warmup and recipe.warmup_lr is not None
        self.drops = 0  # plateau schedule: how many times the lr was divided
        self.best = math.inf
        self.bad_evals = 0

    def lr(self, iteration: int) -> float:
        r = self.recipe
        if self.warming:
            return r.warmup_lr
        if r.schedule == "multistep":
            return r.lr * r.gamma ** sum(iteration >= m for m in r.milestones)
        return r.lr * r.gamma**self.drops

    def observe_train_error(self, error: float) -> None:
        if self.warming and error < self.recipe.warmup_until_error:
            self.warming = False

    def observe_eval_error(self, error: float) -> None:
        if self.recipe.schedule != "plateau":
            return
        if error < self.best - 1e-4:
            self.best, self.bad_evals = error, 0
        else:
            self.bad_evals += 1
            if self.bad_evals >= self.recipe.plateau_patience:
                self.drops, self.bad_evals = self.drops + 1, 0

    def state_dict(self) -> dict:
        return {"warming": self.warming, "drops": self.drops, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict) -> None:
        """A saved schedule state (a `ValueError` when it is not one: checkpoints may be hostile)."""
        warming, drops, best, bad = d["warming"], d["drops"], d["best"], d["bad_evals"]
        if not (isinstance(warming, bool) and _is_int(drops) and drops >= 0 and _is_int(bad) and bad >= 0
                and isinstance(best, (int, float)) and not isinstance(best, bool)):
            raise ValueError(f"a schedule state {d!r} is malformed")
        self.warming, self.drops, self.best, self.bad_evals = warming, drops, best, bad
