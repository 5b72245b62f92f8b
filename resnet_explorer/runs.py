"""The run directory: where one training run lives on disk, and the one owner of it (`RunDir`).

A run directory holds::

    spec.json             the architecture (the single source of truth, see spec.py)
    recipe.json           the training recipe
    data.json             the dataset (its ``--data`` string under ``arg``) and the loaders' facts
    env.json              versions, device, helpers used, command line, seed
    metrics.jsonl         one JSON object a line: train lines every log_every iterations, eval
                          lines every eval_every (the one source for every plot)
    checkpoints/last.pt   a `checkpoint.Checkpoint`, written atomically, only with finite weights
    analysis.json         layer responses and gradient norms of the last checkpoint (`run_analysis`)
    .lock                 the OS lock of the one process writing the run (`safeio.RunLock`)

`RunDir` creates and locks a run, opens it for a new run or a resume (checked against its
records), writes its records, metrics and checkpoints, and reads them back. Everything that
reads or writes these files asks it: the trainer, evaluation, experiments, figures, the
report and the widgets. Every file in a run directory may be hostile (shared, downloaded,
truncated by a crash): checkpoints load with ``torch.load(weights_only=True)`` only, and a
malformed record is one line.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from .checkpoint import Checkpoint, stored_iteration
from .data import DataSource, parse_data
from .errors import RecipeError, SpecError, TrainingError
from .recipes import Recipe
from .safeio import (NOFOLLOW, RunLock, UnsafeFile, atomic_write, make_dir, parse_json, read_json, read_record,
                     read_regular, write_json)
from .spec import ArchSpec

SPEC, RECIPE, DATA, ENV = "spec.json", "recipe.json", "data.json", "env.json"
METRICS, ANALYSIS = "metrics.jsonl", "analysis.json"
MAX_METRICS = 1 << 30  # bytes: 600k ImageNet iterations with gradient norms are a few hundred MB
CHECKPOINT = Path("checkpoints") / "last.pt"

PathLike = str | os.PathLike


class RunConfig(NamedTuple):
    """What a run was started with (its records)."""

    spec: ArchSpec
    recipe: Recipe
    data: dict
    seed: int


@dataclass
class Opened:
    """What `RunDir.open` found: the configuration to train with and the checkpoint to go on from."""

    spec: ArchSpec | None
    recipe: Recipe | None
    source: DataSource | None  # None only for a new run given none (refused when it starts)
    seed: int
    ckpt: Checkpoint | None
    threads: int | None = None  # a resumed run's CPU threads, as it started (the same numbers need them)


@dataclass(frozen=True)
class RunStatus:
    """How far a run is: ``pending`` (nothing written), ``partial``, ``trained`` (at its
    recipe's end, no analysis yet) or ``finished``; and its last checkpoint's iteration."""

    state: str
    iteration: int
    max_iters: int | None


def _corrupt(path: Path, why: str) -> TrainingError:
    return TrainingError(f"{path} is malformed ({why}): restore it from a copy of the run, "
                         "or start the run again in a new --out")


class RunDir:
    """One run directory (see the module's docstring); cheap to make, it reads nothing until asked."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- where things are --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def analysis_path(self) -> Path:
        return self.path / ANALYSIS

    def is_run(self) -> bool:
        """Whether this is a run directory (it holds a spec.json)."""
        return (self.path / SPEC).is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def has_started(self) -> bool:
        """Whether a run has begun writing here (metrics or a checkpoint)."""
        return self.metrics_path.exists() or (self.path / CHECKPOINT.parent).exists()

    def lock(self) -> RunLock:
        """Create the directory if needed and take its lock: the one writer of the run, until
        `RunLock.release` or the process's death (one line naming the holder when it is taken)."""
        return RunLock(make_dir(self.path)).acquire()

    # -- records -----------------------------------------------------------------------------------
    def write_config(self, spec: ArchSpec, recipe: Recipe, data: dict[str, Any]) -> None:
        """The records a new run starts with: its spec, recipe and data."""
        make_dir(self.path)
        write_json(self.path / SPEC, spec.to_dict())
        write_json(self.path / RECIPE, recipe.to_dict())
        write_json(self.path / DATA, data)

    def write_env(self, env: dict[str, Any]) -> None:
        write_json(self.path / ENV, env)

    def _record(self, name: str) -> Any:
        """A record's JSON; one line when it is missing, unreadable or not JSON."""
        path = self.path / name
        try:
            return read_record(path)
        except FileNotFoundError:
            raise TrainingError(f"{self.path} is not a run directory: {name} is missing") from None
        except UnsafeFile as e:
            raise _corrupt(path, str(e)) from None
        except OSError as e:
            raise _corrupt(path, f"cannot be read: {e.strerror}") from None

    def config(self) -> RunConfig:
        """The spec, recipe, data record and seed the run was started with, each checked (a
        malformed record is one line naming the file)."""
        raw = {name: self._record(name) for name in (SPEC, RECIPE, DATA, ENV)}
        try:
            spec = ArchSpec.from_dict(raw[SPEC]).validate()
        except (SpecError, AttributeError, TypeError, ValueError) as e:
            raise _corrupt(self.path / SPEC, str(e)) from None
        try:
            if not isinstance(raw[RECIPE], dict):
                raise TypeError("not an object")
            recipe = Recipe.from_dict(raw[RECIPE]).validate()
        except (RecipeError, TypeError, ValueError) as e:
            raise _corrupt(self.path / RECIPE, str(e)) from None
        data = raw[DATA]
        if not (isinstance(data, dict) and isinstance(data.get("arg"), (str, type(None)))
                and isinstance(data.get("data", {}), dict)):
            raise _corrupt(self.path / DATA, 'expected an object with "arg" (the --data string) and "data"')
        seed = raw[ENV].get("seed", 0) if isinstance(raw[ENV], dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise _corrupt(self.path / ENV, 'expected an object with a "seed" >= 0')
        return RunConfig(spec, recipe, data, seed)

    def mismatch(self, spec: ArchSpec | None = None, recipe: Recipe | None = None,
                 data_spec: str | None = None, seed: int | None = None) -> str | None:
        """How the run differs from the spec, recipe, data (its `DataSource.spec` string) and
        seed asked for, in words; None when it does not (None asks nothing). The number of
        classes and the input size come from the data, so they are not compared."""
        saved = self.config()
        diffs = []
        if spec is not None:
            spec = spec.replace(num_classes=saved.spec.num_classes, input_size=saved.spec.input_size)
            if spec != saved.spec:
                diffs.append(_spec_words(saved.spec, spec))
        if recipe is not None and recipe != saved.recipe:
            a, b = saved.recipe.to_dict(), recipe.to_dict()
            diffs.append("recipe " + ", ".join(f"{k}={a[k]!r} (asked {b[k]!r})" for k in a if a[k] != b[k]))
        saved_source = (saved.data.get("data") or {}).get("spec")
        if data_spec is not None and saved_source is not None and data_spec != saved_source:
            diffs.append(f"data {saved_source}, not {data_spec}")
        if seed is not None and seed != saved.seed:
            diffs.append(f"seed {saved.seed}, not {seed}")
        return "; ".join(diffs) or None

    def spec(self) -> ArchSpec | None:
        """The run's architecture (None without a readable spec.json; one line when it is malformed)."""
        d = read_json(self.path / SPEC)
        try:
            return None if d is None else ArchSpec.from_dict(d)
        except (SpecError, AttributeError, TypeError, ValueError) as e:
            raise _corrupt(self.path / SPEC, str(e)) from None

    def env(self) -> dict:
        env = read_json(self.path / ENV)
        return env if isinstance(env, dict) else {}

    def data_arg(self) -> str | None:
        """The ``--data`` the run was trained on, if its records say."""
        d = read_json(self.path / DATA)
        arg = d.get("arg") if isinstance(d, dict) else None
        return arg if isinstance(arg, str) else None

    def recorded_threads(self) -> int | None:
        """The CPU threads the run trained with (env.json), if it says."""
        n = self.env().get("cpu_threads")
        return n if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 4096 else None

    def analysis(self) -> dict | None:
        return read_json(self.analysis_path)

    def write_analysis(self, analysis: dict) -> None:
        write_json(self.analysis_path, analysis)

    # -- metrics -----------------------------------------------------------------------------------
    def metrics(self, strict: bool = False) -> list[dict]:
        """Every line of metrics.jsonl that is a metrics row (`metrics_row`). A torn last line
        (a crash or a full disk mid-write) is skipped; any other malformed line is skipped
        too, or with ``strict`` (a resume, which rewrites the file) refused in one line."""
        try:
            data = read_regular(self.metrics_path, MAX_METRICS) if self.metrics_path.exists() else b""
        except (OSError, UnsafeFile) as e:
            raise _corrupt(self.metrics_path, str(e) if isinstance(e, UnsafeFile) else e.strerror or str(e)) from None
        lines = data.split(b"\n")
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = metrics_row(parse_json(line, allow_nan=True))
            except UnsafeFile as e:
                if strict and i < len(lines):  # the last piece has no newline: torn, redone on resume
                    raise TrainingError(f"{self.metrics_path} line {i} is malformed ({e}): the run cannot be "
                                        "resumed without losing it; restore the file from a copy, or start the run "
                                        "again in a new --out") from None
                continue
            rows.append(row)
        return rows

    def truncate_metrics(self, iteration: int) -> None:
        """Drop metrics written after the checkpoint we resume from (they will be redone)."""
        keep = [json.dumps(r) for r in self.metrics(strict=True) if r["iter"] <= iteration]
        atomic_write(self.metrics_path, "".join(k + "\n" for k in keep).encode())

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, ckpt: Checkpoint) -> None:
        ckpt.save(self.checkpoint_path)

    def load_checkpoint(self, spec: ArchSpec) -> Checkpoint:
        """The last checkpoint, to resume ``spec``'s run from: safely loaded, complete, of this
        architecture, with finite weights."""
        path = self.checkpoint_path
        ckpt = Checkpoint.load(path)
        if ckpt.spec.replace(num_classes=spec.num_classes, input_size=spec.input_size) != spec:
            raise TrainingError(f"{path} holds a {ckpt.spec.name} but the run trains {spec.name} (its spec.json): "
                                "put back the run's own checkpoint, or start again in a new --out")
        return ckpt

    def iteration(self) -> int:
        """The iteration of the last checkpoint (0 if none), without reading its tensors."""
        return stored_iteration(self.checkpoint_path) if self.checkpoint_path.exists() else 0

    def analysis_current(self) -> bool:
        """Whether analysis.json was made from the last checkpoint."""
        done = self.analysis()
        return isinstance(done, dict) and done.get("iteration") == self.iteration()

    def status(self, max_iters: int | None = None) -> RunStatus:
        """How far the run is, against ``max_iters`` (default: its recipe's); the one place
        that says pending, partial, trained or finished."""
        if max_iters is None and self.is_run():
            max_iters = self.config().recipe.max_iters
        it = self.iteration()
        if max_iters is not None and it >= max_iters:
            return RunStatus("finished" if self.analysis_path.exists() else "trained", it, max_iters)
        return RunStatus("partial" if self.has_started() else "pending", it, max_iters)

    # -- opening to train ----------------------------------------------------------------------------
    def open(self, resume: bool, spec: ArchSpec | None, recipe: Recipe | None, source: DataSource | None,
             seed: int | None) -> Opened:
        """Check the directory for a new run (it must hold none) or a resume: what is asked
        (architecture, recipe, data, seed; None asks nothing) must equal the run's records,
        and its last checkpoint must be one this project wrote, of this run's architecture,
        with finite weights. Anything else is one line that says what differs and what to
        do; nothing is touched. A run killed before its first checkpoint resumes from its
        records, at iteration 0. A resume without ``source`` reads the run's ``--data``
        record (its ``--data`` string, parsed again: the dataset must still be there)."""
        if not resume:
            if self.has_started():
                raise TrainingError(f"{self.path} already holds a run: continue it with --resume, "
                                    "or choose a new --out directory")
            return Opened(spec, recipe, source, 0 if seed is None else seed, None)
        if not self.checkpoint_path.exists() and not self.is_run():
            raise TrainingError(f"{self.path}: no checkpoint to resume from (expected {self.checkpoint_path})")
        saved = self.config()
        if source is None:
            if self.data_arg() is None:
                raise TrainingError(f"{self.path} does not record its data by name: resume with data= the same "
                                    "DataSource")
            source = parse_data(self.data_arg())
        differs = self.mismatch(spec, recipe, source.spec, seed)
        if differs:
            raise TrainingError(f"{self.path} was started with {differs}: resume with the run's own settings "
                                "(leave those options out), or start a new run in another --out")
        ckpt = self.load_checkpoint(saved.spec) if self.checkpoint_path.exists() else None
        if ckpt is not None and ckpt.iteration > saved.recipe.max_iters:
            raise TrainingError(f"{self.checkpoint_path} stands at iteration {ckpt.iteration:,}, past the end of "
                                f"its recipe ({saved.recipe.max_iters:,}): it is not this run's checkpoint; put "
                                "back the run's own, or start again in a new --out")
        return Opened(saved.spec, saved.recipe, source, saved.seed, ckpt, self.recorded_threads())


def _spec_words(saved: ArchSpec, asked: ArchSpec) -> str:
    """The architecture recorded and the one asked, by name or by what tells them apart."""
    if saved.name != asked.name:
        return f"architecture {saved.name}, not {asked.name}"

    def facts(s: ArchSpec) -> dict[str, Any]:
        return {"depth": s.depth, "widths": [st.out_channels for st in s.stages], "residual": s.residual,
                "shortcut": s.shortcut, "stride_at": s.stride_at, "head": s.head.kind}

    a, b = facts(saved), facts(asked)
    told = [f"{k} {a[k]} (asked {b[k]})" for k in a if a[k] != b[k]] or ["other details"]
    return f"architecture {saved.name} with " + ", ".join(told)


class MetricsWriter:
    """Appends metrics lines to a run's metrics.jsonl, each line one write to the file (not
    following a link put in its place); ``None`` as the run directory makes a writer that
    writes nothing (the other ranks of a torchrun job)."""

    def __init__(self, run: RunDir | None, on_row: Callable[[dict], None] | None = None):
        self.path = None if run is None else run.metrics_path
        self.fd = None if self.path is None else _open_append(self.path)
        self.on_row = on_row

    def write(self, row: dict) -> None:
        if self.fd is None:
            return
        data = (json.dumps(row) + "\n").encode()
        try:
            while data:  # a short write (a full disk) raises on the next round
                data = data[os.write(self.fd, data):]
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        if self.on_row:
            self.on_row(row)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open_append(path: Path) -> int:
    """``path`` open for appending, never through a planted link and never waiting on a FIFO."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | NOFOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TrainingError(f"{path} is not a regular file: remove what is there, or use a new --out")
    os.set_blocking(fd, True)
    return fd


_ROW_NUMBERS = ("epoch", "lr", "train_loss", "train_error", "images_per_s", "wall_time", "test_loss",
                "test_error", "test_top5_error")


def metrics_row(row: Any) -> dict:
    """``row`` if it is a metrics row as the trainer writes them (a "kind", an integer "iter"
    >= 0, numbers where numbers are due, gradient norms a mapping of numbers); else `UnsafeFile`."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(row, dict) or not isinstance(row.get("kind"), str):
        raise UnsafeFile('not an object with a "kind"')
    it = row.get("iter")
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise UnsafeFile(f'"iter" {it!r} is not an iteration')
    bad = [k for k in _ROW_NUMBERS if k in row and not (number(row[k]) or row[k] is None)]
    norms = row.get("norms", {})
    if bad or not (isinstance(norms, dict) and all(isinstance(k, str) and number(v) for k, v in norms.items())):
        raise UnsafeFile(f"{', '.join(bad) or 'norms'} not numbers")
    return row


def read_metrics(run_dir: PathLike) -> list[dict]:
    """Every line of a run's metrics.jsonl (`RunDir.metrics`)."""
    return RunDir(run_dir).metrics()


def find_runs(path: PathLike) -> list[Path]:
    """``path`` if it is a run directory, else the run directories directly inside it (an
    experiment, a folder of runs); a `TrainingError` when there are none."""
    path = Path(str(path)).expanduser()
    found = [path] if RunDir(path).is_run() else sorted(p.parent for p in path.glob(f"*/{SPEC}"))
    if not found:
        raise TrainingError(f"{path} is not a run directory (no {SPEC}) nor a folder of runs")
    return found


# -- reading runs whole (figures, reports) -------------------------------------------------------
@dataclass
class Run:
    """What the figures and reports need from one run directory."""

    dir: Path
    spec: ArchSpec
    metrics: list[dict] = field(default_factory=list)
    analysis: dict | None = None
    env: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run's name: its directory's name (``plain-20``, ``resnet-20-B`` …)."""
        return self.dir.name

    def rows(self, kind: str) -> list[dict]:
        return [r for r in self.metrics if r.get("kind") == kind]


def load_run(run_dir: PathLike) -> Run | None:
    """A run directory's spec, metrics, analysis and environment (None without a spec.json)."""
    run = RunDir(run_dir)
    spec = run.spec()
    if spec is None:
        return None
    return Run(run.path, spec, run.metrics(), run.analysis(), run.env())


def load_runs(run_dirs: Iterable[PathLike]) -> list[Run]:
    """The readable runs among ``run_dirs``, in order (directories without a spec are skipped)."""
    return [r for r in (load_run(d) for d in run_dirs) if r is not None]
