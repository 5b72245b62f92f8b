"""The run directory: where one training run lives on disk, and the one module that knows it.

A run directory holds::

    spec.json             the architecture (the single source of truth, see spec.py)
    recipe.json           the training recipe
    data.json             the dataset (its ``--data`` string under ``arg``) and the loaders' facts
    env.json              versions, device, helpers used, command line, seed
    metrics.jsonl         one JSON object a line: train lines every log_every iterations, eval
                          lines every eval_every (the one source for every plot)
    checkpoints/last.pt   model, optimizer, schedule, RNG and data position, written atomically
    analysis.json         layer responses and gradient norms of the last checkpoint (experiments)

An experiment directory is a folder of run directories with a ``manifest.json``.
Everything that reads or writes these files asks this module: the trainer, evaluation,
experiments, figures, the report, the widgets and the grader's score files.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .errors import TrainingError
from .recipes import Recipe
from .spec import ArchSpec

SPEC, RECIPE, DATA, ENV = "spec.json", "recipe.json", "data.json", "env.json"
METRICS, ANALYSIS, MANIFEST = "metrics.jsonl", "analysis.json", "manifest.json"
CHECKPOINT = Path("checkpoints") / "last.pt"

PathLike = str | os.PathLike


# -- writing files safely -------------------------------------------------------------------------
def atomic_write(path: PathLike, content: bytes | Callable[[Any], None]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to a temporary file,
    then rename it over ``path``: readers never see a half-written file.

    The temporary file has a private random name and is created with ``O_EXCL|O_NOFOLLOW``, so
    in a shared folder a link planted at ``path`` or at a guessed temporary name is never
    followed; the rename replaces a link at ``path`` instead of writing through it."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            content(f) if callable(content) else f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(path: PathLike, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically."""
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: PathLike) -> Any | None:
    """The JSON in ``path``, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# -- paths ------------------------------------------------------------------------------------------
def checkpoint_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT


def metrics_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / METRICS


def analysis_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / ANALYSIS


def is_run(path: PathLike) -> bool:
    """Whether ``path`` is a run directory (it holds a spec.json)."""
    return (Path(path) / SPEC).is_file()


def has_checkpoint(run_dir: PathLike) -> bool:
    return checkpoint_path(run_dir).is_file()


def has_started(run_dir: PathLike) -> bool:
    """Whether a run has begun writing into ``run_dir`` (metrics or a checkpoint)."""
    return metrics_path(run_dir).exists() or (Path(run_dir) / CHECKPOINT.parent).exists()


def find_runs(path: PathLike) -> list[Path]:
    """``path`` if it is a run directory, else the run directories directly inside it (an
    experiment, a folder of runs); a `TrainingError` when there are none."""
    path = Path(str(path)).expanduser()
    found = [path] if is_run(path) else sorted(p.parent for p in path.glob(f"*/{SPEC}"))
    if not found:
        raise TrainingError(f"{path} is not a run directory (no {SPEC}) nor a folder of runs")
    return found


# -- the run's records ---------------------------------------------------------------------------------
def write_config(run_dir: PathLike, spec: ArchSpec, recipe: Recipe, data: dict[str, Any]) -> None:
    """The records a new run starts with: its spec, recipe and data."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / SPEC, spec.to_dict())
    write_json(run_dir / RECIPE, recipe.to_dict())
    write_json(run_dir / DATA, data)


def write_env(run_dir: PathLike, env: dict[str, Any]) -> None:
    write_json(Path(run_dir) / ENV, env)


def load_run_config(run_dir: PathLike) -> tuple[ArchSpec, Recipe, dict, int]:
    """The spec, recipe, data record and seed a run directory was started with."""
    run_dir = Path(run_dir)
    try:
        spec = ArchSpec.from_json((run_dir / SPEC).read_text())
        recipe = Recipe.from_dict(json.loads((run_dir / RECIPE).read_text()))
        data = json.loads((run_dir / DATA).read_text())
        seed = json.loads((run_dir / ENV).read_text()).get("seed", 0)
    except FileNotFoundError as e:
        raise TrainingError(f"{run_dir} is not a run directory: {Path(e.filename).name} is missing") from None
    return spec, recipe, data, seed


def read_spec(run_dir: PathLike) -> ArchSpec | None:
    d = read_json(Path(run_dir) / SPEC)
    return None if d is None else ArchSpec.from_dict(d)


def read_env(run_dir: PathLike) -> dict:
    return read_json(Path(run_dir) / ENV) or {}


def data_arg(run_dir: PathLike) -> str | None:
    """The ``--data`` a run was trained on, if ``run_dir`` is a run directory that says."""
    d = read_json(Path(run_dir) / DATA)
    return d.get("arg") if isinstance(d, dict) else None


def read_analysis(run_dir: PathLike) -> dict | None:
    return read_json(analysis_path(run_dir))


def write_analysis(run_dir: PathLike, analysis: dict) -> None:
    write_json(analysis_path(run_dir), analysis)


# -- metrics ------------------------------------------------------------------------------------------
def read_metrics(run_dir: PathLike) -> list[dict]:
    """Every line of a run's metrics.jsonl (a torn last line, from a crash, is skipped)."""
    path = metrics_path(run_dir)
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_metrics(run_dir: PathLike, iteration: int) -> None:
    """Drop metrics written after the checkpoint we resume from (they will be redone)."""
    keep = [json.dumps(r) for r in read_metrics(run_dir) if r.get("iter", 0) <= iteration]
    atomic_write(metrics_path(run_dir), "".join(k + "\n" for k in keep).encode())


class MetricsWriter:
    """Appends metrics lines to a run's metrics.jsonl, flushed line by line; ``None`` as the
    run directory makes a writer that writes nothing (the other ranks of a torchrun job)."""

    def __init__(self, run_dir: PathLike | None, on_row: Callable[[dict], None] | None = None):
        self.file = open(metrics_path(run_dir), "a") if run_dir is not None else None
        self.on_row = on_row

    def write(self, row: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.on_row:
            self.on_row(row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# -- checkpoints -------------------------------------------------------------------------------------
def save_checkpoint(path: PathLike, state: dict) -> None:
    """torch.save to ``path`` via a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: PathLike, mmap: bool = False) -> dict:
    """The state dict saved by `save_checkpoint` (tensors on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def checkpoint_iteration(run_dir: PathLike) -> int:
    """The iteration of a run's last checkpoint (0 if none), without reading its tensors."""
    ckpt = checkpoint_path(run_dir)
    if not ckpt.exists():
        return 0
    return load_checkpoint(ckpt, mmap=True)["iteration"]


def analysis_current(run_dir: PathLike) -> bool:
    """Whether the run's ``analysis.json`` was made from its last checkpoint."""
    done = read_analysis(run_dir)
    return isinstance(done, dict) and done.get("iteration") == checkpoint_iteration(run_dir)


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
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    if spec is None:
        return None
    return Run(run_dir, spec, read_metrics(run_dir), read_analysis(run_dir), read_env(run_dir))


def load_runs(run_dirs: Iterable[PathLike]) -> list[Run]:
    """The readable runs among ``run_dirs``, in order (directories without a spec are skipped)."""
    return [r for r in (load_run(d) for d in run_dirs) if r is not None]


# -- experiment directories -------------------------------------------------------------------------
def manifest_path(exp_dir: PathLike) -> Path:
    return Path(exp_dir) / MANIFEST


def read_manifest(exp_dir: PathLike) -> dict:
    """An experiment directory's manifest (`FileNotFoundError` when there is none)."""
    try:
        return json.loads(manifest_path(exp_dir).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{exp_dir} is not an experiment directory: {MANIFEST} is missing") from None


def write_manifest(exp_dir: PathLike, manifest: dict) -> None:
    write_json(manifest_path(exp_dir), manifest)


def experiment_runs(exp_dir: PathLike) -> list[Path]:
    """The run directories of an experiment, in its manifest's order."""
    exp_dir = Path(exp_dir)
    return [exp_dir / r["dir"] for r in read_manifest(exp_dir)["runs"]]
