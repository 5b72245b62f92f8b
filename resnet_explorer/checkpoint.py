"""The checkpoint format: what a run saves to resume exactly, and every check of it in one place.

A checkpoint is a ``torch.save`` of a plain dict (tensors and plain data only)::

    model, spec               the weights and the architecture they belong to (all an eval needs)
    optimizer, schedule, scaler   SGD's state, the lr schedule's, the fp16 grad scaler's
    iteration, epoch, batch_in_epoch, window, last_eval   where the run stands (`TrainState`)
    acc, rng, wall_time       the device-side sums since the last train line, the RNG, the clock
    recipe, seed              what the run trains with (also in its run directory's records)

`Checkpoint` turns such a dict into checked fields and back (`from_dict` / `to_dict`);
`read_state` reads a file with ``torch.load(weights_only=True)`` alone. Every way a file can
fail to be a checkpoint (missing, empty, truncated, foreign, hostile, malformed, non-finite)
is a `TrainingError` of one line. Every checkpoint this project has written loads.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import SpecError, TrainingError
from .safeio import UnsafeFile, atomic_write, make_dir, open_regular
from .spec import ArchSpec

PathLike = str | Path


@dataclass
class Window:
    """Sums over the iterations since the last train line."""

    loss: float = 0.0
    wrong: int = 0
    seen: int = 0
    time: float = 0.0


@dataclass
class TrainState:
    """Where a run stands besides its weights: the position in the data order (counted in
    global batches), the open metrics window and the last evaluation."""

    iteration: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    window: Window = field(default_factory=Window)
    last_eval: dict | None = None

    def advance(self, batches_per_epoch: int) -> None:
        self.iteration += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch == batches_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def epoch_now(self, batches_per_epoch: int) -> float:
        return self.epoch + self.batch_in_epoch / batches_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "window": asdict(self.window), "last_eval": self.last_eval}


RESUME_KEYS = {"optimizer": dict, "schedule": dict, "scaler": dict, "iteration": int, "epoch": int,
               "batch_in_epoch": int, "window": dict, "acc": (tuple, list), "rng": dict}


@dataclass
class Checkpoint:
    """A run's saved state, checked. ``state`` and the optimizer's parts are None in a
    checkpoint made for evaluation only (weights and architecture)."""

    model: dict[str, torch.Tensor]
    spec: ArchSpec
    state: TrainState | None = None
    optimizer: dict | None = None
    schedule: dict | None = None
    scaler: dict | None = None
    acc: tuple[torch.Tensor, torch.Tensor] | None = None
    rng: dict | None = None
    wall_time: float = 0.0
    recipe: dict | None = None
    seed: int | None = None

    @property
    def iteration(self) -> int:
        return self.state.iteration if self.state is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """The plain dict `torch.save` writes (the format every earlier checkpoint has)."""
        out: dict[str, Any] = {"model": self.model}
        if self.state is not None:
            out.update({"optimizer": self.optimizer, "schedule": self.schedule, "scaler": self.scaler,
                        **self.state.to_dict(), "acc": self.acc, "rng": self.rng, "wall_time": self.wall_time})
        out.update({"spec": self.spec.to_dict(), "recipe": self.recipe, "seed": self.seed})
        return out

    @classmethod
    def from_dict(cls, d: Any, path: PathLike, resume: bool = True) -> Checkpoint:
        """``d`` (what `read_state` read from ``path``) checked: weights that are a state dict of
        tensors, an architecture that parses, and with ``resume`` everything a resume needs,
        well-formed, with finite weights."""
        weights(d, path)
        try:
            spec = ArchSpec.from_dict(d["spec"]).validate()
        except (SpecError, AttributeError, TypeError, ValueError, KeyError, RecursionError) as e:
            raise TrainingError(f"{path} is not a resnet-explorer checkpoint (its architecture is malformed: "
                                f"{e})") from None
        if not resume:
            return cls(d["model"], spec)
        missing = [k for k, kind in RESUME_KEYS.items() if not isinstance(d.get(k), kind)]
        if missing:
            raise TrainingError(f"{path} cannot be resumed: it lacks {', '.join(missing)} (a checkpoint for "
                                "evaluation only, or a foreign one): start the run again in a new --out")
        state = _train_state(d, path)
        bad = nonfinite(d["model"]) + nonfinite(_tensors(d["optimizer"], "optimizer"))
        if bad:
            raise TrainingError(f"{path} holds {len(bad)} non-finite tensors ({bad[0]} …): it is not a good "
                                "checkpoint to resume from; start the run again in a new --out")
        wall = d.get("wall_time", 0.0)
        return cls(d["model"], spec, state, d["optimizer"], d["schedule"], d["scaler"], tuple(d["acc"]), d["rng"],
                   float(wall) if _number(wall) else 0.0, d.get("recipe"), d.get("seed"))

    def save(self, path: PathLike) -> None:
        """torch.save to ``path`` via a temporary file and a rename: never a half-written file."""
        path = Path(path)
        make_dir(path.parent)
        state = self.to_dict()

        def write(f: Any) -> None:
            kept = _KeepsWriteError(f)
            try:
                torch.save(state, kept)
            except RuntimeError:  # torch.save reports a full disk as an opaque RuntimeError
                if kept.error is not None:
                    raise kept.error from None
                raise

        atomic_write(path, write)

    @classmethod
    def load(cls, path: PathLike, resume: bool = True) -> Checkpoint:
        """`read_state` then `from_dict`: a checkpoint file, read safely and checked."""
        return cls.from_dict(read_state(path), path, resume)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _tensors(tree: Any, name: str) -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts and lists, by its path (``optimizer.state.0.momentum_buffer``)."""
    out, stack = {}, [(name, tree)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, torch.Tensor):
            out[key] = item
        elif isinstance(item, dict):
            stack += [(f"{key}.{k}", v) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            stack += [(f"{key}.{i}", v) for i, v in enumerate(item)]
    return out


def _train_state(d: dict, path: PathLike) -> TrainState:
    window = d["window"]
    if (set(window) != {"loss", "wrong", "seen", "time"} or not all(_number(v) for v in window.values())
            or any(isinstance(d[k], bool) or d[k] < 0 for k in ("iteration", "epoch", "batch_in_epoch"))
            or not isinstance(d.get("last_eval"), (dict, type(None)))):
        raise TrainingError(f"{path} cannot be resumed: its position in the run (iteration, epoch, metrics "
                            "window) is malformed: start the run again in a new --out")
    return TrainState(d["iteration"], d["epoch"], d["batch_in_epoch"], Window(**window), d["last_eval"])


def weights(d: Any, path: PathLike) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint's dict, after checking it is one of ours (a model state
    dict of tensors beside an architecture)."""
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict) or not isinstance(d.get("spec"), dict):
        kind = f"a dict of {len(d)} entries" if isinstance(d, dict) else type(d).__name__
        raise TrainingError(f"{path} is not a resnet-explorer checkpoint ({kind} without 'model' and 'spec'; "
                            "a bare state dict, e.g. torchvision's, has no architecture): use a checkpoint "
                            "written by resnet-explorer train")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d["model"].items()):
        raise TrainingError(f"{path} is not a resnet-explorer checkpoint: its 'model' is not a state dict of tensors")
    return d["model"]


def read_state(path: PathLike, mmap: bool = False) -> Any:
    """What a checkpoint file holds (tensors on the CPU), read with the safe loader alone.

    ``torch.load(weights_only=True)`` builds tensors and plain data only, never an object
    that could run code; a file that needs more is refused in one line."""
    path = Path(path)
    try:
        with warnings.catch_warnings(), open_regular(path) as f:  # a FIFO in its place is never waited on
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols: not the user's line
            if mmap:  # by the open file's own name: the file checked is the file mapped
                fd_path = Path(f"/proc/self/fd/{f.fileno()}")
                try:
                    return torch.load(fd_path if fd_path.exists() else path, map_location="cpu", weights_only=True,
                                      mmap=True)
                except RuntimeError as e:
                    if "mmap can only be used" not in str(e):
                        raise
            return torch.load(f, map_location="cpu", weights_only=True)  # (an old, non-zip file cannot be mapped)
    except UnsafeFile as e:
        raise TrainingError(f"{path} is {e}, not a checkpoint file: remove it, or restore the run's own") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise TrainingError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - whatever torch.load makes of hostile bytes is one line
        wants = re.search(r"GLOBAL (\S+)", str(e)) if "Weights only load failed" in str(e) else None
        if wants:
            raise TrainingError(
                f"{path} is refused: it asks to build {wants.group(1)}, not just tensors and plain data, and "
                "loading it could run code; resnet-explorer checkpoints never need that: do not load this file") from None
        raise TrainingError(f"{path} is not a resnet-explorer checkpoint (it is empty, truncated or not a "
                            f"torch.save file: {type(e).__name__}): restore it, or train again") from None


def stored_iteration(path: PathLike) -> int:
    """The iteration a checkpoint file stands at, without reading its tensors (memory-mapped)."""
    d = read_state(path, mmap=True)
    weights(d, path)
    it = d.get("iteration")
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise TrainingError(f"{path} is not a training checkpoint (no iteration): train the run again")
    return it


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity (one sync in all)."""
    floats = [(k, t) for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return []
    ok = torch.stack([t.isfinite().all() for _, t in floats]).cpu().tolist()
    return [k for (k, _), good in zip(floats, ok) if not good]


class _KeepsWriteError:
    """A binary file that keeps the first `OSError` of its writes (for `Checkpoint.save`)."""

    def __init__(self, f: Any):
        self.f, self.error = f, None

    def write(self, b: bytes) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()
