"""The experiment runner: a plan's runs (`plans.RunPlan`) trained into one directory, resumably.

Runs go one after the other (or ``jobs`` at a time, one process each: `jobs`) into
``<out>/<run name>/``; ``manifest.json`` lists them with their status, so running the
experiment again skips finished runs and resumes a partial one. After each run,
``analysis.json`` records its layer responses and gradient norms (`run_analysis`). The
experiment directory's files (manifest, job logs) are this module's; each run's are its
`runs.RunDir`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .count import count
from .data import DataSource, as_source
from .errors import TrainingError, UsageError
from .jobs import Job, Outcome, check_jobs, run_jobs
from .options import RunOptions
from .plans import RunPlan
from .run_analysis import analyze_run
from .runs import RunDir
from .safeio import RunLock, UnsafeFile, make_dir, read_record, write_json
from .train import check_seed, train

MANIFEST = "manifest.json"


# -- the experiment directory -------------------------------------------------------------------
def manifest_path(exp_dir: str | Path) -> Path:
    return Path(exp_dir) / MANIFEST


def read_manifest(exp_dir: str | Path) -> dict:
    """An experiment directory's manifest, checked (`FileNotFoundError` when there is none;
    one line when it is truncated, empty or malformed, or names a run outside the folder)."""
    path = manifest_path(exp_dir)
    try:
        manifest = read_record(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{exp_dir} is not an experiment directory: {MANIFEST} is missing") from None
    except UnsafeFile as e:
        raise _bad_manifest(path, str(e)) from None
    except OSError as e:
        raise _bad_manifest(path, e.strerror or str(e)) from None
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


def experiment_runs(exp_dir: str | Path) -> list[Path]:
    """The run directories of an experiment, in its manifest's order."""
    exp_dir = Path(exp_dir)
    return [exp_dir / r["dir"] for r in read_manifest(exp_dir)["runs"]]


def job_log_path(exp_dir: str | Path, name: str) -> Path:
    """Where ``experiment --jobs`` appends the output of the run ``name``'s process."""
    return Path(exp_dir) / "logs" / f"{name}.log"


# -- running it ------------------------------------------------------------------------------------
def run_experiment(name: str, plans: Sequence[RunPlan], data: str | DataSource, out: str | Path,
                   options: RunOptions | None = None, *, seed: int = 0, log: Callable[[str], None] = print,
                   jobs: int = 1, **option_fields: Any) -> Path:
    """Run every plan into ``out`` on ``data``, as ``options`` say (`RunOptions`, or its
    fields as keywords); finished runs are skipped, a partial one resumed. ``jobs`` > 1: up
    to that many runs at once, one process each, on the same device (`resnet_explorer.jobs`:
    each run's numbers are its solo run's; a failed run is recorded in the manifest and the
    others go on).

    A run is known by its records, not by its folder's name: every run directory already in
    ``out`` must hold this plan's spec, recipe, data and seed, or the experiment is refused
    (one line), so a lost ``manifest.json`` is rebuilt from the runs and a corrupt one is
    one line. One process writes an experiment at a time (its lock)."""
    options = RunOptions.of(options, **option_fields)
    out = Path(out)
    check_jobs(jobs)
    check_seed(seed)
    planned = [p.to_dict() for p in plans]
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise UsageError(f"an experiment's run names must be unique, got {names}")
    source = as_source(data)
    data = source.arg or source.spec  # the manifest's record of the data
    lock = RunLock(make_dir(out)).acquire()
    try:
        if manifest_path(out).exists():
            old = read_manifest(out)
            old_plans = [{k: r.get(k) for k in ("name", "dir", "spec", "recipe")} for r in old["runs"]]
            if old_plans != planned or old.get("data") != data or old.get("seed", seed) != seed:
                raise TrainingError(f"{out} holds a different experiment ({old['name']} on {old['data']}): "
                                    "use another --out, or the same settings to continue it")
        for plan in plans:
            d = out / plan.name
            run = RunDir(d)
            differs = run.has_started() and run.mismatch(plan.spec, plan.recipe, source.spec, seed)
            if differs:
                raise TrainingError(f"{d} holds another run than this experiment's {plan.name} (it was started "
                                    f"with {differs}): use another --out, or move that run away")
        return _run_plans(name, plans, planned, source, out, seed, log, options, jobs)
    finally:
        lock.release()


def train_plan(plan: dict, data: str | DataSource, run_dir: str, state: str, seed: int,
               options: dict | RunOptions, should_stop: Callable[[int], bool] | None = None,
               on_metrics: Callable[[dict], None] | None = None) -> dict:
    """Train one plan (`RunPlan.to_dict`) into ``run_dir`` (``state``: pending, partial to
    resume, or trained to analyse only), then analyse it: the one code path of a run, alone,
    as one of ``--jobs`` (where it runs in its own process, its arguments JSON) or from the
    dashboard (``should_stop``, ``on_metrics``: see `train`). Returns its last test error and
    whether it finished (a run stopped early is not analysed)."""
    p, source = RunPlan.from_dict(plan), as_source(data)
    finished = True
    if state != "trained":
        resume = state == "partial"
        options = options if isinstance(options, RunOptions) else RunOptions(**options)
        finished = train(None if resume else p.spec, source, None if resume else p.recipe, run_dir, options=options,
                         resume=resume, seed=seed, should_stop=should_stop, on_metrics=on_metrics).finished
    if finished:
        analyze_run(run_dir, source, seed)
    evals = [r for r in RunDir(run_dir).metrics() if r.get("kind") == "eval"]
    return {"test_error": evals[-1].get("test_error") if evals else None, "finished": finished}


def _run_plans(name: str, plans: Sequence[RunPlan], planned: list[dict], source: DataSource, out: Path, seed: int,
               log: Callable[[str], None], options: RunOptions, jobs: int = 1) -> Path:
    """`run_experiment`'s loop, once the runs in ``out`` are known to be the plan's."""
    manifest = {"name": name, "data": source.arg or source.spec, "seed": seed,
                "runs": [{**p, "status": "pending"} for p in planned]}
    failed: dict[str, str] = {}

    def status_of(plan: RunPlan) -> str:
        return RunDir(out / plan.name).status(plan.recipe.max_iters).state

    def save() -> None:
        for r, p in zip(manifest["runs"], plans):
            r["status"] = status_of(p)
            r.pop("error", None)
            if p.name in failed and r["status"] != "finished":
                r["status"], r["error"] = "failed", failed[p.name]
        write_json(manifest_path(out), manifest)

    save()
    todo = []
    for i, plan in enumerate(plans, 1):
        state = status_of(plan)
        if state == "finished":
            log(f"[{i}/{len(plans)}] {plan.name}: finished earlier, skipped")
            continue
        log(f"[{i}/{len(plans)}] {plan.name}: {plan.spec.depth} layers, {plan.recipe.max_iters} iterations"
            + {"partial": " (resumed)", "trained": " (trained; analysing)"}.get(state, ""))
        if jobs == 1:
            train_plan(plan.to_dict(), source, str(out / plan.name), state, seed, options)
            save()
        else:
            todo.append((plan, state))
    if todo:
        _run_parallel(todo, source.arg or source.spec, out, seed, log, options, jobs, failed, save)
    return out


def _run_parallel(todo: list[tuple[RunPlan, str]], data: str, out: Path, seed: int, log: Callable[[str], None],
                  options: RunOptions, n: int, failed: dict[str, str], save: Callable[[], None]) -> None:
    """The plans of ``todo`` as `jobs` (one process each, up to ``n`` at once); the manifest
    is rewritten as each ends; a failed run is recorded there with its reason, the others go
    on; a signal (Ctrl-C) checkpoints every running one and ends in one line. The costliest
    runs start first (multiply-adds × iterations × batch), so that the deep nets of an
    experiment overlap instead of the last one training alone."""
    todo = sorted(todo, key=lambda t: -count(t[0].spec).macs * t[0].recipe.max_iters * t[0].recipe.batch_size)
    work = [Job(p.name, "resnet_explorer.experiments:train_plan",
                dict(plan=p.to_dict(), data=data, run_dir=str(out / p.name), state=state, seed=seed,
                     options={**options.to_dict(), "progress": False}), job_log_path(out, p.name))
            for p, state in todo]

    def done(o: Outcome) -> None:
        if o.status == "done":
            err = (o.value or {}).get("test_error")
            log(f"{o.name}: finished in {o.seconds:.0f} s"
                + (f", test error {err:.2%}" if isinstance(err, float) else ""))
        elif o.status == "failed":
            failed[o.name] = o.error or "failed"
            log(f"{o.name}: FAILED: {o.error}")
        else:
            log(f"{o.name}: stopped ({o.error})")
        save()

    outcomes, stopped = run_jobs(work, n, log, on_done=done, watch=out)
    save()
    if stopped:
        raise TrainingError(f"stopped by {stopped}: {sum(o.status == 'interrupted' for o in outcomes)} running "
                            f"run(s) checkpointed; run the same command again to resume them")
    if failed:
        why = "; ".join(f"{k}: {v}" for k, v in failed.items())
        raise TrainingError(f"{len(failed)} of {len(todo)} runs failed ({why}); "
                            f"the others finished; see {manifest_path(out)} and the logs beside it, "
                            "and run the same command again to retry")
