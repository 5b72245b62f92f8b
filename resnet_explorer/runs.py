"""The run directory: where one training run lives on disk, and the one module that knows it.

A run directory holds::

    spec.json             the architecture (the single source of truth, see spec.py)
    recipe.json           the training recipe
    data.json             the dataset (its ``--data`` string under ``arg``) and the loaders' facts
    env.json              versions, device, helpers used, command line, seed
    metrics.jsonl         one JSON object a line: train lines every log_every iterations, eval
                          lines every eval_every (the one source for every plot)
    checkpoints/last.pt   model, optimizer, schedule, RNG and data position, written atomically,
                          only with finite weights, holding tensors and plain data alone
    analysis.json         layer responses and gradient norms of the last checkpoint (experiments)
    .lock                 the OS lock of the one process writing the run (`RunLock`)

An experiment directory is a folder of run directories with a ``manifest.json``.
Everything that reads or writes these files asks this module: the trainer, evaluation,
experiments, figures, the report, the widgets and the grader's score files. Every file
in a run directory may be hostile (shared, downloaded, truncated by a crash): checkpoints
load with ``torch.load(weights_only=True)`` only, and a malformed record is one line.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .errors import RecipeError, SpecError, TrainingError
from .recipes import Recipe
from .safeio import LOCK_NAME, NOFOLLOW, RunLock, atomic_write, make_dir, read_json, write_json  # noqa: F401
from .spec import ArchSpec

SPEC, RECIPE, DATA, ENV = "spec.json", "recipe.json", "data.json", "env.json"
METRICS, ANALYSIS, MANIFEST = "metrics.jsonl", "analysis.json", "manifest.json"
CHECKPOINT = Path("checkpoints") / "last.pt"

PathLike = str | os.PathLike


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


def lock_run(run_dir: PathLike) -> RunLock:
    """Create ``run_dir`` if needed and take its lock: the one writer of that run, until
    `RunLock.release` or the process's death (one line naming the holder when it is taken)."""
    return RunLock(make_dir(Path(run_dir))).acquire()


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
    run_dir = make_dir(Path(run_dir))
    write_json(run_dir / SPEC, spec.to_dict())
    write_json(run_dir / RECIPE, recipe.to_dict())
    write_json(run_dir / DATA, data)


def write_env(run_dir: PathLike, env: dict[str, Any]) -> None:
    write_json(Path(run_dir) / ENV, env)


def _record(run_dir: Path, name: str) -> Any:
    """A record's JSON; one line when it is missing, unreadable or not JSON."""
    path = run_dir / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingError(f"{run_dir} is not a run directory: {name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"not JSON: {e}") from None


def _corrupt(path: Path, why: str) -> TrainingError:
    return TrainingError(f"{path} is malformed ({why}): restore it from a copy of the run, "
                         "or start the run again in a new --out")


def load_run_config(run_dir: PathLike) -> tuple[ArchSpec, Recipe, dict, int]:
    """The spec, recipe, data record and seed a run directory was started with, each
    checked (a malformed record is one line naming the file)."""
    run_dir = Path(run_dir)
    raw = {name: _record(run_dir, name) for name in (SPEC, RECIPE, DATA, ENV)}
    try:
        spec = ArchSpec.from_dict(raw[SPEC]).validate()
    except (SpecError, AttributeError, TypeError, ValueError) as e:
        raise _corrupt(run_dir / SPEC, str(e)) from None
    try:
        if not isinstance(raw[RECIPE], dict):
            raise TypeError("not an object")
        recipe = Recipe.from_dict(raw[RECIPE]).validate()
    except (RecipeError, TypeError, ValueError) as e:
        raise _corrupt(run_dir / RECIPE, str(e)) from None
    data = raw[DATA]
    if not (isinstance(data, dict) and isinstance(data.get("arg"), (str, type(None)))
            and isinstance(data.get("data", {}), dict)):
        raise _corrupt(run_dir / DATA, 'expected an object with "arg" (the --data string) and "data"')
    seed = raw[ENV].get("seed", 0) if isinstance(raw[ENV], dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _corrupt(run_dir / ENV, 'expected an object with a "seed" >= 0')
    return spec, recipe, data, seed


def record_mismatch(run_dir: PathLike, spec: ArchSpec | None = None, recipe: Recipe | None = None,
                    data_spec: str | None = None, seed: int | None = None) -> str | None:
    """How the run in ``run_dir`` differs from the spec, recipe, data (its `DataSource.spec`
    string) and seed asked for, in words; None when it does not (None asks nothing).
    The number of classes and the input size come from the data, so they are not compared."""
    saved_spec, saved_recipe, saved_data, saved_seed = load_run_config(run_dir)
    diffs = []
    if spec is not None:
        spec = spec.replace(num_classes=saved_spec.num_classes, input_size=saved_spec.input_size)
        if spec != saved_spec:
            diffs.append(_spec_words(saved_spec, spec))
    if recipe is not None and recipe != saved_recipe:
        a, b = saved_recipe.to_dict(), recipe.to_dict()
        diffs.append("recipe " + ", ".join(f"{k}={a[k]!r} (asked {b[k]!r})" for k in a if a[k] != b[k]))
    saved_source = (saved_data.get("data") or {}).get("spec")
    if data_spec is not None and saved_source is not None and data_spec != saved_source:
        diffs.append(f"data {saved_source}, not {data_spec}")
    if seed is not None and seed != saved_seed:
        diffs.append(f"seed {saved_seed}, not {seed}")
    return "; ".join(diffs) or None


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


def read_spec(run_dir: PathLike) -> ArchSpec | None:
    """A run's architecture (None without a readable spec.json; one line when it is malformed)."""
    d = read_json(Path(run_dir) / SPEC)
    try:
        return None if d is None else ArchSpec.from_dict(d)
    except (SpecError, AttributeError, TypeError, ValueError) as e:
        raise _corrupt(Path(run_dir) / SPEC, str(e)) from None


def read_env(run_dir: PathLike) -> dict:
    env = read_json(Path(run_dir) / ENV)
    return env if isinstance(env, dict) else {}


def data_arg(run_dir: PathLike) -> str | None:
    """The ``--data`` a run was trained on, if ``run_dir`` is a run directory that says."""
    d = read_json(Path(run_dir) / DATA)
    arg = d.get("arg") if isinstance(d, dict) else None
    return arg if isinstance(arg, str) else None


def read_analysis(run_dir: PathLike) -> dict | None:
    return read_json(analysis_path(run_dir))


def write_analysis(run_dir: PathLike, analysis: dict) -> None:
    write_json(analysis_path(run_dir), analysis)


# -- metrics ------------------------------------------------------------------------------------------
def read_metrics(run_dir: PathLike) -> list[dict]:
    """Every line of a run's metrics.jsonl (a torn line, from a crash or a full disk, is skipped)."""
    path = metrics_path(run_dir)
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def truncate_metrics(run_dir: PathLike, iteration: int) -> None:
    """Drop metrics written after the checkpoint we resume from (they will be redone)."""
    keep = [json.dumps(r) for r in read_metrics(run_dir)
            if isinstance(r.get("iter", 0), (int, float)) and r.get("iter", 0) <= iteration]
    atomic_write(metrics_path(run_dir), "".join(k + "\n" for k in keep).encode())


class MetricsWriter:
    """Appends metrics lines to a run's metrics.jsonl, each line one write to the file (not
    following a link put in its place); ``None`` as the run directory makes a writer that
    writes nothing (the other ranks of a torchrun job)."""

    def __init__(self, run_dir: PathLike | None, on_row: Callable[[dict], None] | None = None):
        self.path = None if run_dir is None else metrics_path(run_dir)
        self.fd = None if self.path is None else os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
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


# -- checkpoints -------------------------------------------------------------------------------------
def save_checkpoint(path: PathLike, state: dict) -> None:
    """torch.save to ``path`` via a temporary file and a rename: never a half-written file.
    ``state`` must hold tensors and plain data only (what `load_checkpoint` accepts)."""
    path = Path(path)
    make_dir(path.parent)

    def write(f: Any) -> None:
        kept = _KeepsWriteError(f)
        try:
            torch.save(state, kept)
        except RuntimeError:  # torch.save reports a full disk as an opaque RuntimeError
            if kept.error is not None:
                raise kept.error from None
            raise

    atomic_write(path, write)


class _KeepsWriteError:
    """A binary file that keeps the first `OSError` of its writes (for `save_checkpoint`)."""

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


def load_checkpoint(path: PathLike, mmap: bool = False) -> dict:
    """A checkpoint's state dict (tensors on the CPU), read with the safe loader alone.

    ``torch.load(weights_only=True)`` builds tensors and plain data only, never an object
    that could run code; a file that needs more is refused. Every way a file can fail to
    be a checkpoint (missing, empty, truncated, foreign, hostile) is a `TrainingError`
    of one line. Every checkpoint this project has written loads.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols: not the user's line
            warnings.simplefilter("ignore")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as e:
                if not (mmap and "mmap can only be used" in str(e)):
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)  # an old (non-zip) file
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
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(state.get("spec"), dict):
        kind = f"a dict of {len(state)} entries" if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path} is not a resnet-explorer checkpoint ({kind} without 'model' and 'spec'; "
                            "a bare state dict, e.g. torchvision's, has no architecture): use a checkpoint "
                            "written by resnet-explorer train")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise TrainingError(f"{path} is not a resnet-explorer checkpoint: its 'model' is not a state dict of tensors")
    return state


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity (one sync in all)."""
    floats = [(k, t) for k, t in tensors.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return []
    ok = torch.stack([t.isfinite().all() for _, t in floats]).cpu().tolist()
    return [k for (k, _), good in zip(floats, ok) if not good]


def checkpoint_iteration(run_dir: PathLike) -> int:
    """The iteration of a run's last checkpoint (0 if none), without reading its tensors."""
    ckpt = checkpoint_path(run_dir)
    if not ckpt.exists():
        return 0
    it = load_checkpoint(ckpt, mmap=True).get("iteration")
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise TrainingError(f"{ckpt} is not a training checkpoint (no iteration): train the run again")
    return it


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
    """An experiment directory's manifest, checked (`FileNotFoundError` when there is none;
    one line when it is truncated, empty or malformed, or names a run outside the folder)."""
    path = manifest_path(exp_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{exp_dir} is not an experiment directory: {MANIFEST} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad_manifest(path, str(e)) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad_manifest(path, f"{'empty' if not text.strip() else 'not JSON'}: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list) or not manifest["runs"]:
        raise _bad_manifest(path, 'expected an object with a non-empty "runs" list')
    for key in ("name", "data"):
        if not isinstance(manifest.get(key), str):
            raise _bad_manifest(path, f'"{key}" must be a string')
    for r in manifest["runs"]:
        name = r.get("dir") if isinstance(r, dict) else None
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise _bad_manifest(path, f"a run's \"dir\" must be the name of a folder inside it, not {name!r}")
    return manifest


def _bad_manifest(path: Path, why: str) -> TrainingError:
    return TrainingError(f"{path} is corrupt ({why}): delete it and run the experiment again to rebuild "
                         "it from its run directories (each is checked against the plan), or use another --out")


def write_manifest(exp_dir: PathLike, manifest: dict) -> None:
    write_json(manifest_path(exp_dir), manifest)


def experiment_runs(exp_dir: PathLike) -> list[Path]:
    """The run directories of an experiment, in its manifest's order."""
    exp_dir = Path(exp_dir)
    return [exp_dir / r["dir"] for r in read_manifest(exp_dir)["runs"]]


def job_log_path(exp_dir: PathLike, name: str) -> Path:
    """Where ``experiment --jobs`` appends the output of the run ``name``'s process."""
    return Path(exp_dir) / "logs" / f"{name}.log"
