"""Experiments: a named set of runs (spec + recipe each) on one dataset, in one directory.

``degradation`` trains plain and residual nets of several depths (Fig. 1, 6);
``shortcuts`` trains one depth with options A, B and C (Table 3) and a gated (highway)
shortcut; ``preact`` trains the paper's post-activation block against He et al. 2016's
pre-activation one at one depth. Runs go one after the
other into ``<out>/<run name>/``; ``manifest.json`` lists them with their status, so
running the experiment again skips finished runs and resumes a partial one. After each
run, ``analysis.json`` records its layer responses (Fig. 7) and gradient norms at
initialisation and at the end (and a gated net's per-block mean gate).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import runs
from .analysis import gate_means, gradient_norms, layer_responses
from .count import count
from .data import GpuCifarLoader, make_loaders, parse_data
from .data.loaders import load_tensors, pixel_mean, split_train_val
from .errors import TrainingError, UsageError
from .evaluate import evaluate, load_model
from .jobs import Job, Outcome, check_jobs, run_jobs
from .model import build
from .recipes import Recipe, get_recipe
from .runs import analysis_current, checkpoint_iteration, experiment_runs  # noqa: F401 (re-exported)
from .spec import ArchSpec
from .train import train
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
        items = json.loads(Path(path).read_text())
        plans = []
        for item in items:
            spec = ArchSpec.from_dict(item["spec"]) if "spec" in item else get_spec(item["arch"], **item.get("arch_options", {}))
            recipe = get_recipe(item.get("recipe", "cifar-paper"), **item.get("recipe_options", {}))
            plans.append(RunPlan(item.get("name", spec.name), spec, recipe))
    except FileNotFoundError:
        raise UsageError(f"experiment file {path} not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UsageError(f"experiment file {path} is invalid ({e}): expected a JSON list of "
                        '{"name": ..., "arch": "cifar-resnet20", "recipe": "cifar-paper"}') from None
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise UsageError(f"experiment file {path}: run names must be unique, got {names}")
    return plans


def _probe_batch(data: str, n: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of test images (preprocessed as in training) for the analyses."""
    source = parse_data(data)
    _, test, _ = make_loaders(source, n, "cpu", seed, augment=False, eval_batch_size=n)
    return next(iter(test))


def cpu_demo_note(recipe: Recipe, width: int) -> str:
    """One sentence for a student: the CPU demo's settings (the same for every net)."""
    return (f"a CPU demo: nets {width} wide (the paper's are 16), every one trained with the same recipe "
            f"{recipe.name}: SGD, momentum {recipe.momentum}, weight decay {recipe.weight_decay:g}, "
            f"{recipe.max_iters} iterations of batch {recipe.batch_size} (the paper: 64,000 of 128), "
            f"lr {recipe.lr} divided by 10 at iterations {' and '.join(map(str, recipe.milestones))}, "
            + ("random crops and flips" if recipe.augment else "no augmentation (the demo asks how well "
               "each net fits a fixed training set)"))


def data_notes(data: str) -> list[str]:
    """What a report should say about the embedded datasets (nothing for real ones)."""
    if data.startswith("synthetic-demo"):
        return ["data: the embedded synthetic-demo set (10,000 training images of 10 classes of generated "
                "16×16 patterns: a colour cast per class, which even a badly trained net can use, and 5 "
                "textured sub-types per class, which take depth and training to fit), not CIFAR-10: "
                "errors are not comparable with the paper's"]
    if data.startswith("synthetic"):
        return ["data: the embedded synthetic CIFAR-shaped set (10 classes of generated patterns), "
                "not CIFAR-10: errors are not comparable with the paper's"]
    return []


TRAIN_SUBSET = 2000  # training images of the eval-mode pass that measures training error


def train_subset_error(model: torch.nn.Module, data: str, n: int = TRAIN_SUBSET,
                       val_split: int | None = None, seed: int = 0) -> dict | None:
    """Training error measured as the paper's curves mean it, but without their noise: one
    pass in eval mode (BN running statistics, no augmentation) over the first ``n`` images
    the net was trained on, preprocessed as in training. Returns ``{"images", "error", "loss"}``;
    None for ImageNet, which is read lazily (its reports keep the training-window error)."""
    source = parse_data(data)
    if source.kind == "imagenet":
        return None
    train_x, train_y, _, _ = load_tensors(source)
    if val_split:
        train_x, train_y, _, _ = split_train_val(train_x, train_y, val_split, seed)
    mean = pixel_mean(train_x)  # the training loader's mean: over all images trained on
    n = min(n, int(train_x.shape[0]))
    loader = GpuCifarLoader(train_x[:n], train_y[:n], 500, "cpu", False, mean, seed, False)
    result = evaluate(model, loader, torch.device("cpu"))
    return {"images": n, "error": result["error"], "loss": result["loss"]}


def analyze_run(run_dir: str | Path, data: str, seed: int = 0) -> dict:
    """Layer responses of the trained net, gradient norms at init (same seed) and at the end,
    its training error in eval mode on a fixed training subset (`train_subset_error`), and
    for gated nets each block's mean gate T(x) at init and at the end (``gate_means``)."""
    run_dir = Path(run_dir)
    x, y = _probe_batch(data)
    model = load_model(run_dir).cpu()
    config = runs.load_run_config(run_dir) if runs.is_run(run_dir) else None
    seed = config[3] if config else seed
    torch.manual_seed(seed)
    init = build(model.spec)  # the run's initial weights: same seed, same build
    gates = {"init": gate_means(init, x), "final": gate_means(model, x)}  # before any training-mode pass
    result = {
        "iteration": checkpoint_iteration(run_dir),
        "images": int(y.numel()),
        "layer_responses": [{"name": r.name, "std": r.std} for r in layer_responses(model, x)],
        "gradient_norms": {"init": gradient_norms(init, x[:128], y[:128]),
                           "final": gradient_norms(model, x[:128], y[:128])},
    }
    subset = train_subset_error(model, data, val_split=config[1].val_split if config else None, seed=seed)
    if subset is not None:
        result["train_subset"] = subset
    if gates["final"]:
        result["gate_means"] = {k: [asdict(g) for g in v] for k, v in gates.items()}
    runs.write_analysis(run_dir, result)
    return result


def analyze_runs(run_dirs: Sequence[str | Path], data: str) -> list[Path]:
    """`analyze_run` for each finished run whose analysis is missing or older than its last
    checkpoint (a dashboard's runs, say); returns the run directories."""
    out = [Path(d) for d in run_dirs]
    for d in out:
        if not analysis_current(d):
            analyze_run(d, data)
    return out


def run_experiment(
    name: str,
    plans: Sequence[RunPlan],
    data: str,
    out: str | Path,
    device: str = "auto",
    amp: str = "auto",
    channels_last: bool | None = None,
    compile: str = "off",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    workers: int | None = None,
    jobs: int = 1,
) -> Path:
    """Run every plan into ``out``; finished runs are skipped, a partial one resumed.
    ``workers``: ImageNet loader processes (see `train`). ``jobs`` > 1: up to that many runs
    at once, one process each, on the same device (`resnet_explorer.jobs`: each run's numbers
    are its solo run's; a failed run is recorded in the manifest and the others go on).

    A run is known by its records, not by its folder's name: every run directory already in
    ``out`` must hold this plan's spec, recipe, data and seed, or the experiment is refused
    (one line), so a lost ``manifest.json`` is rebuilt from the runs and a corrupt one is
    one line. One process writes an experiment at a time (`runs.lock_run`)."""
    out = Path(out)
    check_jobs(jobs)
    planned = [p.to_dict() for p in plans]
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise UsageError(f"an experiment's run names must be unique, got {names}")
    source = parse_data(data)
    lock = runs.lock_run(out)
    try:
        if runs.manifest_path(out).exists():
            old = runs.read_manifest(out)
            old_plans = [{k: r.get(k) for k in ("name", "dir", "spec", "recipe")} for r in old["runs"]]
            if old_plans != planned or old.get("data") != data or old.get("seed", seed) != seed:
                raise TrainingError(f"{out} holds a different experiment ({old['name']} on {old['data']}): "
                                    "use another --out, or the same settings to continue it")
        for plan in plans:
            d = out / plan.name
            differs = runs.has_started(d) and runs.record_mismatch(d, plan.spec, plan.recipe, source.spec, seed)
            if differs:
                raise TrainingError(f"{d} holds another run than this experiment's {plan.name} (it was started "
                                    f"with {differs}): use another --out, or move that run away")
        return _run_plans(name, plans, planned, data, out, seed, log,
                          dict(device=device, amp=amp, channels_last=channels_last, compile=compile,
                               seed=seed, progress=progress, workers=workers), jobs)
    finally:
        lock.release()


def train_plan(plan: dict, data: str, run_dir: str, state: str, seed: int, options: dict) -> dict:
    """Train one plan (`RunPlan.to_dict`) into ``run_dir`` (``state``: pending, partial to
    resume, or trained to analyse only), then analyse it: the one code path of a run, alone
    or as one of ``--jobs`` (where it runs in its own process). Returns its last test error."""
    p = RunPlan.from_dict(plan)
    if state != "trained":
        resume = state == "partial"
        train(None if resume else p.spec, data, None if resume else p.recipe, run_dir, resume=resume, **options)
    analyze_run(run_dir, data, seed)
    evals = [r for r in runs.read_metrics(run_dir) if r.get("kind") == "eval"]
    return {"test_error": evals[-1].get("test_error") if evals else None}


def _run_plans(name: str, plans: Sequence[RunPlan], planned: list[dict], data: str, out: Path, seed: int,
               log: Callable[[str], None], options: dict, jobs: int = 1) -> Path:
    """`run_experiment`'s loop, once the runs in ``out`` are known to be the plan's."""
    manifest = {"name": name, "data": data, "seed": seed,
                "runs": [{**p, "status": "pending"} for p in planned]}
    failed: dict[str, str] = {}

    def status_of(plan: RunPlan) -> str:
        """finished, trained (the analysis is missing), partial or pending."""
        d = out / plan.name
        if checkpoint_iteration(d) >= plan.recipe.max_iters:
            return "finished" if runs.analysis_path(d).exists() else "trained"
        return "partial" if runs.has_started(d) else "pending"

    def save() -> None:
        for r, p in zip(manifest["runs"], plans):
            r["status"] = status_of(p)
            r.pop("error", None)
            if p.name in failed and r["status"] != "finished":
                r["status"], r["error"] = "failed", failed[p.name]
        runs.write_manifest(out, manifest)

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
            train_plan(plan.to_dict(), data, str(out / plan.name), state, seed, options)
            save()
        else:
            todo.append((plan, state))
    if todo:
        _run_parallel(todo, data, out, seed, log, options, jobs, failed, save)
    return out


def _run_parallel(todo: list[tuple[RunPlan, str]], data: str, out: Path, seed: int, log: Callable[[str], None],
                  options: dict, n: int, failed: dict[str, str], save: Callable[[], None]) -> None:
    """The plans of ``todo`` as `jobs` (one process each, up to ``n`` at once); the manifest
    is rewritten as each ends; a failed run is recorded there with its reason, the others go
    on; a signal (Ctrl-C) checkpoints every running one and ends in one line. The costliest
    runs start first (multiply-adds × iterations × batch), so that the deep nets of an
    experiment overlap instead of the last one training alone."""
    todo = sorted(todo, key=lambda t: -count(t[0].spec).macs * t[0].recipe.max_iters * t[0].recipe.batch_size)
    work = [Job(p.name, "resnet_explorer.experiments:train_plan",
                dict(plan=p.to_dict(), data=data, run_dir=str(out / p.name), state=state, seed=seed,
                     options={**options, "progress": False}), runs.job_log_path(out, p.name))
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

    outcomes, stopped = run_jobs(work, n, log, on_done=done)
    save()
    if stopped:
        raise TrainingError(f"stopped by {stopped}: {sum(o.status == 'interrupted' for o in outcomes)} running "
                            f"run(s) checkpointed; run the same command again to resume them")
    if failed:
        why = "; ".join(f"{k}: {v}" for k, v in failed.items())
        raise TrainingError(f"{len(failed)} of {len(todo)} runs failed ({why}); "
                            f"the others finished; see {runs.manifest_path(out)} and the logs beside it, "
                            "and run the same command again to retry")
