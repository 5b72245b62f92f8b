"""Opening a run directory to train into: a new run, or a resume checked against the run's records.

`open_run` takes the run's lock (`runs.lock_run`: one writer per run), then either checks
that ``out`` holds no run yet, or, for a resume, that what is asked (architecture, recipe,
data, seed) equals what the run was started with, and that its last checkpoint is one this
project wrote, of this run's architecture, with finite weights. Anything else is one line
that says what differs and what to do; nothing in the run directory is touched.
A run killed before its first checkpoint resumes from its records, at iteration 0.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import distributed as D
from . import runs
from .data import DataSource, parse_data
from .errors import TrainingError, UserError, one_line
from .recipes import Recipe
from .spec import ArchSpec

RESUME_KEYS = {"optimizer": dict, "schedule": dict, "scaler": dict, "iteration": int, "epoch": int,
               "batch_in_epoch": int, "window": dict, "acc": (tuple, list), "rng": dict}


@dataclass
class Opened:
    """What `open_run` found: the configuration to train with and the checkpoint to go on from."""

    spec: ArchSpec | None
    recipe: Recipe | None
    data: Any
    seed: int
    ckpt: dict | None


def open_run(run_dir: Path, resume: bool, spec: ArchSpec | None, recipe: Recipe | None, data: Any,
             seed: int | None) -> Opened:
    """Check ``run_dir`` for a new run or a resume (see the module's docstring)."""
    ckpt_path = runs.checkpoint_path(run_dir)
    if not resume:
        if runs.metrics_path(run_dir).exists() or ckpt_path.exists():
            raise TrainingError(f"{run_dir} already holds a run: continue it with --resume, "
                                "or choose a new --out directory")
        return Opened(spec, recipe, data, 0 if seed is None else seed, None)
    if not ckpt_path.exists() and not runs.is_run(run_dir):
        raise TrainingError(f"{run_dir}: no checkpoint to resume from (expected {ckpt_path})")
    saved_spec, saved_recipe, saved_data, saved_seed = runs.load_run_config(run_dir)
    data = data if data is not None else saved_data.get("arg")
    if data is None:
        raise TrainingError(f"{run_dir} does not record its data by name: resume with data= the same DataSource")
    source: DataSource = parse_data(data) if isinstance(data, str) else data
    differs = runs.record_mismatch(run_dir, spec, recipe, source.spec, seed)
    if differs:
        raise TrainingError(f"{run_dir} was started with {differs}: resume with the run's own settings "
                            "(leave those options out), or start a new run in another --out")
    ckpt = checkpoint(ckpt_path, saved_spec) if ckpt_path.exists() else None
    return Opened(saved_spec, saved_recipe, data, saved_seed, ckpt)


def checkpoint(path: Path, spec: ArchSpec) -> dict:
    """A checkpoint to resume ``spec``'s run from, checked: safely loaded, complete, of this
    architecture, with finite weights."""
    state = runs.load_checkpoint(path)
    missing = [k for k, kind in RESUME_KEYS.items() if not isinstance(state.get(k), kind)]
    if missing:
        raise TrainingError(f"{path} cannot be resumed: it lacks {', '.join(missing)} (a checkpoint for "
                            "evaluation only, or a foreign one): start the run again in a new --out")
    window = state["window"]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in window.values())
    if (set(window) != {"loss", "wrong", "seen", "time"} or not numbers
            or any(isinstance(state[k], bool) or state[k] < 0 for k in ("iteration", "epoch", "batch_in_epoch"))
            or not isinstance(state.get("last_eval"), (dict, type(None)))):
        raise TrainingError(f"{path} cannot be resumed: its position in the run (iteration, epoch, metrics "
                            "window) is malformed: start the run again in a new --out")
    try:
        theirs = ArchSpec.from_dict(state["spec"])
    except (TrainingError, ValueError, TypeError, AttributeError) as e:
        raise TrainingError(f"{path} cannot be resumed: its architecture is malformed ({e})") from None
    if theirs.replace(num_classes=spec.num_classes, input_size=spec.input_size) != spec:
        raise TrainingError(f"{path} holds a {theirs.name} but the run trains {spec.name} (its spec.json): "
                            "put back the run's own checkpoint, or start again in a new --out")
    bad = runs.nonfinite(state["model"])
    if bad:
        raise TrainingError(f"{path} holds {len(bad)} non-finite tensors ({bad[0]} …): it is not a good "
                            "checkpoint to resume from; start the run again in a new --out")
    return state


def open_run_on_all_ranks(env: D.DistEnv, run_dir: Path, created: bool, resume: bool,
                          *args: Any) -> tuple[Opened, runs.RunLock | None]:
    """`open_run` on rank 0 alone, under the run's lock (which rank 0 keeps); every rank
    then fails, or goes on, alike. A refused run whose directory this call ``created``
    leaves none behind."""
    lock = None
    opened: Any = None
    if env.is_main:
        try:
            if resume and not run_dir.is_dir():  # a resume never makes a directory
                raise TrainingError(f"{run_dir}: no checkpoint to resume from (no such run directory)")
            lock = runs.lock_run(run_dir)
            opened = open_run(run_dir, resume, *args)
        except BaseException as e:
            if lock is not None:
                lock.release(remove_if_unused=created)
            if not (env.enabled and isinstance(e, UserError)):
                raise
            opened = str(e)
    if env.enabled:
        opened = D.broadcast_object(env, opened)
    if isinstance(opened, str):
        raise TrainingError(opened)
    return opened, lock


@contextmanager
def restoring(run_dir: Path) -> Iterator[None]:
    """Loading a checkpoint's pieces into the net, optimizer, schedule and RNG: a piece that
    does not fit (another architecture, a hand-edited file) is one line."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise TrainingError(f"{runs.checkpoint_path(run_dir)} cannot be resumed: it does not fit this run "
                            f"({type(e).__name__}: {one_line(e, 120)}): start again in a new --out") from None
