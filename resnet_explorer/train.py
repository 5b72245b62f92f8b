"""The training engine: one run = one directory, resumable, the same on a CPU and a GPU.

A run directory holds::

    spec.json      the architecture (the single source of truth, see spec.py)
    recipe.json    the training recipe
    data.json      the dataset
    env.json       versions, device, helpers used, command line
    metrics.jsonl  one JSON object a line: train lines every log_every iterations, eval
                   lines every eval_every (the one source for every plot)
    checkpoints/last.pt   written atomically (write, then rename) every checkpoint_every

`train()` continues a run from ``checkpoints/last.pt`` when ``resume=True``; model,
optimizer, schedule, RNG and the position in the data order are restored, so an interrupted
CPU run resumed gives the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .evaluate import evaluate
from .model import build
from .recipes import Recipe
from .spec import ArchSpec


class TrainingError(RuntimeError):
    """A run that cannot go on (divergence, a run directory in the way); one clear line."""


# -- the learning-rate schedule -------------------------------------------------------------
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
        self.warming, self.drops, self.best, self.bad_evals = d["warming"], d["drops"], d["best"], d["bad_evals"]


# -- devices and helpers ----------------------------------------------------------------------
def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked for, but PyTorch sees no GPU: use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise TrainingError(f"device {device!r} is invalid: use auto, cpu or cuda") from None


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class Accel:
    """The GPU helpers: mixed precision, memory format, compilation."""

    amp: str = "off"  # off | bf16 | fp16
    channels_last: bool = False
    compile: str = "off"  # off | default | reduce-overhead (CUDA graphs) | max-autotune

    @classmethod
    def resolve(cls, device: torch.device, amp: str = "auto", channels_last: bool | None = None,
                compile: str | bool = "off") -> Accel:
        compile = {True: "default", False: "off", None: "off"}.get(compile, compile)
        if compile not in COMPILE_MODES:
            raise TrainingError(f"--compile {compile!r} is invalid: use one of {', '.join(COMPILE_MODES)}")
        if amp == "auto":
            amp = "bf16" if device.type == "cuda" else "off"
        if amp not in ("off", "bf16", "fp16"):
            raise TrainingError(f"--amp {amp!r} is invalid: use bf16, fp16 or off")
        if amp == "fp16" and device.type != "cuda":
            raise TrainingError("--amp fp16 needs a GPU: use bf16 or off on the CPU")
        if channels_last is None:
            channels_last = True  # faster on GPUs and, measured, on the CPU too (benchmarks/)
        return cls(amp, channels_last, compile)

    def autocast(self, device: torch.device):
        if self.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to the device in the chosen memory format; cuDNN autotuning on GPUs."""
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return model


class Stepper:
    """One SGD step with the chosen helpers: autocast, grad scaling (fp16), compiled model.

    Returns the loss and logits still on the device, so the loop never waits for the GPU.
    ``forward`` is the module to call when it is not ``model`` itself (DDP around ``model``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, accel: Accel,
                 device: torch.device, forward: nn.Module | None = None):
        self.model, self.optimizer, self.accel, self.device = model, optimizer, accel, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=accel.amp == "fp16")
        net = model if forward is None else forward
        self.compiled = net if accel.compile == "off" else torch.compile(
            net, mode=None if accel.compile == "default" else accel.compile)
        self.criterion = nn.CrossEntropyLoss()

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of the last step's gradient for each conv and fc weight, in order."""
        named = [(n, p.grad) for n, p in self.model.named_parameters()
                 if n.endswith("weight") and p.dim() in (2, 4) and p.grad is not None]
        if not named:
            return {}
        norms = torch.stack(torch._foreach_norm([g for _, g in named])).float().cpu().tolist()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        return {n.removesuffix(".weight"): v / scale for (n, _), v in zip(named, norms)}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with self.accel.autocast(self.device):
            logits = self.compiled(x)
            loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()


# -- the run directory --------------------------------------------------------------------------
def atomic_write(path: Path, content: bytes | Callable[[Any], None]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to a temporary file,
    then rename it over ``path``: readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        content(f) if callable(content) else f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to ``path`` via a temporary file and a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every line of a run's metrics.jsonl (a torn last line, from a crash, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def environment(device: torch.device, accel: Accel) -> dict:
    import torchvision

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "amp": accel.amp,
        "channels_last": accel.channels_last,
        "compile": accel.compile,
        "argv": sys.argv,
    }
    return env


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- training -------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_dir: Path
    iteration: int
    finished: bool
    last_eval: dict | None


def load_run_config(run_dir: str | Path) -> tuple[ArchSpec, Recipe, dict, int]:
    """The spec, recipe, data record and seed a run directory was started with."""
    run_dir = Path(run_dir)
    try:
        spec = ArchSpec.from_json((run_dir / "spec.json").read_text())
        recipe = Recipe.from_dict(json.loads((run_dir / "recipe.json").read_text()))
        data = json.loads((run_dir / "data.json").read_text())
        seed = json.loads((run_dir / "env.json").read_text()).get("seed", 0)
    except FileNotFoundError as e:
        raise TrainingError(f"{run_dir} is not a run directory: {Path(e.filename).name} is missing") from None
    return spec, recipe, data, seed


def train(
    spec: ArchSpec | None,
    data: Any,
    recipe: Recipe | None,
    out: str | Path,
    device: str = "auto",
    amp: str = "auto",
    channels_last: bool | None = None,
    compile: str | bool = "off",
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    should_stop: Callable[[int], bool] | None = None,
    on_metrics: Callable[[dict], None] | None = None,
    sync_bn: bool = False,
    dist_backend: str = "auto",
    workers: int | None = None,
) -> RunResult:
    """Train ``spec`` on ``data`` (a `DataSource` or a ``--data`` string) with ``recipe``.

    With ``resume=True`` the run in ``out`` continues from its last checkpoint; spec,
    recipe, data and seed then come from the run directory (any given must match).
    ``should_stop(iteration)`` is asked after each iteration: when it says yes, a
    checkpoint is written and the run returns unfinished. ``on_metrics`` receives every
    metrics line as it is written (for live plots).

    Started by ``torchrun`` with ``WORLD_SIZE`` > 1, the run is data-parallel
    (`resnet_explorer.distributed`): DDP over ``dist_backend`` (auto: NCCL on GPUs, gloo on
    CPUs), the recipe's batch split across the ranks, ``sync_bn`` for BatchNorm statistics
    over the whole batch (GPUs only); rank 0 alone writes the run directory.

    ``workers`` is the number of ImageNet decoding processes per rank (default: the CPUs
    this process may use, shared among the node's ranks, at most 8); in-memory CIFAR-style
    sets use none. Batches do not depend on it, so a run may resume with another number.
    """
    from . import distributed as D

    launch = D.launch_env()
    dev = pick_device(device)
    batch = recipe.batch_size if recipe is not None and not resume else None
    if resume and launch.enabled and (Path(out) / "recipe.json").is_file():  # fail before joining
        batch = json.loads((Path(out) / "recipe.json").read_text()).get("batch_size")
    backend = D.check_launch(launch, dev, dist_backend, sync_bn, batch)
    env, dev = D.setup(launch, dev, backend)
    ok = False
    try:
        result = _train(env, dev, spec, data, recipe, Path(out), amp, channels_last, compile, resume,
                        seed, progress, should_stop, on_metrics, sync_bn, workers)
        ok = True
        return result
    except Exception as e:
        if not (env.enabled and D.is_comm_failure(e)):
            raise
        ckpt = Path(out) / "checkpoints" / "last.pt"
        raise TrainingError(f"another process of the job failed or stopped answering ({D.first_line(e)}); "
                            f"the last checkpoint is kept in {ckpt} (continue with --resume)") from None
    finally:
        D.teardown(env, ok)


def _open_run(run_dir: Path, resume: bool, spec: ArchSpec | None, recipe: Recipe | None, data: Any,
              seed: int) -> tuple[ArchSpec | None, Recipe | None, Any, int, dict | None]:
    """Check ``run_dir`` for a new run or a resume; for a resume, the saved configuration and
    the checkpoint's state."""
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    state = None
    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"{run_dir}: no checkpoint to resume from (expected {ckpt_path})")
        saved_spec, saved_recipe, saved_data, seed = load_run_config(run_dir)
        if spec is not None and spec.replace(num_classes=saved_spec.num_classes) != saved_spec:
            raise TrainingError(f"{run_dir} trains {saved_spec.name}, not {spec.name}: resume with "
                                "the same architecture, or start a new --out")
        if recipe is not None and recipe != saved_recipe:
            raise TrainingError(f"{run_dir} was started with recipe {saved_recipe.name} "
                                f"({saved_recipe.max_iters} iterations): resume without changing it")
        spec, recipe = saved_spec, saved_recipe
        data = data if data is not None else saved_data["arg"]
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    elif (run_dir / "metrics.jsonl").exists() or ckpt_path.exists():
        raise TrainingError(f"{run_dir} already holds a run: continue it with --resume, "
                            "or choose a new --out directory")
    return spec, recipe, data, seed, state


def _train(env, dev: torch.device, spec: ArchSpec | None, data: Any, recipe: Recipe | None,
           run_dir: Path, amp: str, channels_last: bool | None, compile: str | bool, resume: bool,
           seed: int, progress: bool, should_stop: Callable[[int], bool] | None,
           on_metrics: Callable[[dict], None] | None, sync_bn: bool, workers: int | None) -> RunResult:
    """`train` once the process group (if any) is joined: ``env`` says which rank this is."""
    from . import distributed as D
    from .data import DataSource, make_loaders, mix_seed, parse_data

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if env.enabled:  # rank 0 reads the run directory; every rank then fails, or goes on, alike
        opened: Any = None
        if env.is_main:
            try:
                opened = _open_run(run_dir, resume, spec, recipe, data, seed)
            except TrainingError as e:
                opened = str(e)
        opened = D.broadcast_object(env, opened)
        if isinstance(opened, str):
            raise TrainingError(opened)
    else:
        opened = _open_run(run_dir, resume, spec, recipe, data, seed)
    spec, recipe, data, seed, state = opened
    if spec is None or recipe is None or data is None:
        raise TrainingError("a new run needs an architecture, a dataset and a recipe")
    spec.validate()
    recipe.validate()
    D.check_divisible(recipe.batch_size, env.world_size)
    accel = Accel.resolve(dev, amp, channels_last, compile)
    source: DataSource = parse_data(data) if isinstance(data, str) else data
    if source.num_classes != spec.num_classes:
        spec = spec.replace(num_classes=source.num_classes)

    torch.manual_seed(seed)
    model = accel.prepare(D.convert_sync_bn(build(spec), env, sync_bn), dev)
    train_loader, eval_loader, data_info = make_loaders(
        source, recipe.batch_size, dev, seed, val_split=recipe.val_split,
        augment=recipe.augment, channels_last=accel.channels_last,
        eval_batch_size=max(recipe.batch_size, 500), rank=env.rank, world_size=env.world_size,
        workers=workers,
    )
    if len(train_loader) == 0:
        raise TrainingError(f"the training set has {data_info['train_size']} images, fewer than one "
                            f"batch of {recipe.batch_size}: use more data or --set batch_size=N")
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    schedule = LRSchedule(recipe, warmup=spec.depth >= recipe.warmup_min_depth)

    loss_acc = torch.zeros((), device=dev)  # summed on the device: no sync per iteration
    wrong_acc = torch.zeros((), device=dev, dtype=torch.long)
    pos = {"iteration": 0, "epoch": 0, "batch_in_epoch": 0}
    window = _empty_window()
    last_eval = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        pos = {k: state[k] for k in pos}
        window, last_eval = state["window"], state["last_eval"]
        if env.is_main:  # the saved sums are over all ranks: one rank carries them on
            loss_acc.copy_(state["acc"][0])
            wrong_acc.copy_(state["acc"][1])
        _set_rng_state(state["rng"])
    if env.rank > 0:  # dropout masks differ between ranks, as between the images of a batch
        torch.manual_seed(mix_seed("rank", seed, env.rank, pos["iteration"]))
    step = Stepper(model, optimizer, accel, dev, forward=D.wrap(model, env, dev))
    if state is not None:
        step.scaler.load_state_dict(state["scaler"])
    if env.is_main:
        if state is not None:
            _truncate_metrics(run_dir, pos["iteration"])
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "spec.json", spec.to_dict())
            write_json(run_dir / "recipe.json", recipe.to_dict())
            write_json(run_dir / "data.json", {**data_info, "arg": data if isinstance(data, str) else None})
        write_json(run_dir / "env.json", {**environment(dev, accel), "seed": seed, "distributed": {
            **env.to_dict(), "sync_bn": sync_bn and env.enabled,
            "batch_per_rank": recipe.batch_size // env.world_size}})
    start_wall = time.perf_counter() - (state or {}).get("wall_time", 0.0)
    batches = len(train_loader)
    clock = {"t0": time.perf_counter()}

    def emit(row: dict) -> None:
        if metrics_file is None:
            return
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        if on_metrics:
            on_metrics(row)

    def flush() -> None:
        """Move the device-side accumulators (summed over the ranks) into the window; stop on
        a NaN/inf loss (every rank sees the same sums, so every rank stops)."""
        if dev.type == "cuda":
            torch.cuda.synchronize()
        sums = D.all_reduce_sum(env, torch.stack([loss_acc.double(), wrong_acc.double()])).tolist()
        now = time.perf_counter()
        window["time"] += now - clock["t0"]
        clock["t0"] = now
        window["loss"] += sums[0]
        window["wrong"] += int(sums[1])
        loss_acc.zero_()
        wrong_acc.zero_()
        if not math.isfinite(window["loss"]):
            kept = f"its last good checkpoint is kept in {ckpt_path}" if ckpt_path.exists() else "no checkpoint had been written yet"
            raise TrainingError(f"{spec.name}: the loss became {window['loss']} by iteration "
                                f"{pos['iteration']}; the run is stopped and {kept}: lower the lr or warm up")

    def epoch_now() -> float:
        return pos["epoch"] + pos["batch_in_epoch"] / batches

    def log_train(lr: float) -> None:
        nonlocal window
        seen = window["seen"]
        err = window["wrong"] / seen
        schedule.observe_train_error(err)
        speed = seen / max(window["time"], 1e-9)
        emit({"kind": "train", "iter": pos["iteration"], "epoch": epoch_now(), "lr": lr,
              "train_loss": window["loss"] / seen, "train_error": err, "images_per_s": speed,
              "wall_time": time.perf_counter() - start_wall})
        bar.set_postfix(loss=f"{window['loss'] / seen:.3f}", err=f"{err:.3f}", img_s=f"{speed:.0f}")
        window = _empty_window()

    def log_eval(lr: float) -> None:
        nonlocal last_eval
        t = time.perf_counter()
        if env.enabled:
            D.broadcast_buffers(env, model)  # evaluate rank 0's model, the one that is saved
            ev = _evaluate_ranks(env, model, eval_loader, dev, accel, spec.num_classes)
        else:
            ev = evaluate(model, eval_loader, dev, accel)
        schedule.observe_eval_error(ev["error"])
        last_eval = {"iter": pos["iteration"], **ev}
        emit({"kind": "eval", "iter": pos["iteration"], "epoch": epoch_now(), "lr": lr,
              **{f"test_{k}": v for k, v in ev.items()}, "wall_time": time.perf_counter() - start_wall})
        clock["t0"] += time.perf_counter() - t  # evaluation is not training time

    def checkpoint() -> None:
        acc = (D.all_reduce_sum(env, loss_acc).cpu(), D.all_reduce_sum(env, wrong_acc).cpu())
        if not env.is_main:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": step.scaler.state_dict(), **pos,
            "window": window, "acc": acc, "rng": _rng_state(),
            "last_eval": last_eval,
            "wall_time": time.perf_counter() - start_wall, "spec": spec.to_dict(),
            "recipe": recipe.to_dict(), "seed": seed,
        })

    metrics_file = open(run_dir / "metrics.jsonl", "a") if env.is_main else None
    bar = _progress(progress and env.is_main, recipe.max_iters, pos["iteration"], spec.name)
    model.train()
    try:
        while pos["iteration"] < recipe.max_iters:
            train_loader.set_epoch(pos["epoch"], start_batch=pos["batch_in_epoch"])
            clock["t0"] = time.perf_counter()
            for x, y in train_loader:
                lr = schedule.lr(pos["iteration"])
                loss, logits = step(x, y, lr)
                loss_acc += loss * y.numel()
                wrong_acc += (logits.argmax(1) != y).sum()
                window["seen"] += y.numel() * env.world_size  # every rank's slice is equal
                pos["iteration"] += 1
                pos["batch_in_epoch"] += 1
                if pos["batch_in_epoch"] == batches:
                    pos["epoch"], pos["batch_in_epoch"] = pos["epoch"] + 1, 0
                it, last = pos["iteration"], pos["iteration"] == recipe.max_iters
                if it % recipe.log_every == 0 or last:
                    flush()
                    log_train(lr)
                    if recipe.log_grad_norms and env.is_main:
                        emit({"kind": "grad", "iter": it, "norms": step.grad_norms()})
                if it % recipe.eval_every == 0 or last:
                    log_eval(lr)
                stop = not last and should_stop is not None and should_stop(it)
                if should_stop is not None:
                    stop = D.any_rank(env, stop, dev)  # all ranks stop at the same iteration
                if stop and not torch.isfinite(D.all_reduce_sum(env, loss_acc)):
                    flush()  # raises: never checkpoint a diverged model
                if it % recipe.checkpoint_every == 0 or last or stop:
                    checkpoint()
                bar.update(1)
                if stop:
                    return RunResult(run_dir, it, False, last_eval)
                if last or pos["batch_in_epoch"] == 0:
                    break
    except KeyboardInterrupt:
        raise TrainingError(
            f"interrupted at iteration {pos['iteration']}; the last checkpoint is kept in {ckpt_path} "
            f"(continue with: resnet-explorer train --resume --out {run_dir})"
        ) from None
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    return RunResult(run_dir, pos["iteration"], True, last_eval)


def _evaluate_ranks(env, model: nn.Module, loader: Any, dev: torch.device, accel: Accel,
                    num_classes: int) -> dict[str, float]:
    """`evaluate` over the ranks' shards of the evaluation set: sums all-reduced, then divided."""
    from . import distributed as D
    from .evaluate import EvalError, error_sums, predict

    try:
        probs, labels = predict(model, loader, dev, accel)
    except EvalError:  # this rank's shard is empty
        probs, labels = torch.zeros(0, num_classes), torch.zeros(0, dtype=torch.long)
    sums = error_sums(probs, labels)
    keys = list(sums)
    total = D.all_reduce_sum(env, torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=dev))
    total = dict(zip(keys, total.tolist()))
    n = total.pop("count")
    return {k: v / n for k, v in total.items()}


def _empty_window() -> dict:
    """Sums over the iterations since the last train line."""
    return {"loss": 0.0, "wrong": 0, "seen": 0, "time": 0.0}


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop metrics written after the checkpoint we resume from (they will be redone)."""
    path = run_dir / "metrics.jsonl"
    keep = [json.dumps(r) for r in read_metrics(run_dir) if r.get("iter", 0) <= iteration]
    atomic_write(path, "".join(k + "\n" for k in keep).encode())


def _progress(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="it",
                dynamic_ncols=True, leave=False)
