"""The training engine: one run = one directory (`runs`), resumable, the same on a CPU and a GPU.

`train(spec, data, recipe, out)` builds the net, the loaders, SGD and the recipe's schedule,
then runs the loop in `Session.run`: a step (`step.Stepper`), and every ``log_every`` /
``eval_every`` / ``checkpoint_every`` iterations a train line, an evaluation, a checkpoint.
Where the run stands lives in one `TrainState`; a checkpoint saves it with the model,
optimizer, schedule and RNG, so a resumed run (``resume=True``) replays exactly the
batches it would have seen and a resumed CPU run gives the same metrics as one that was
never interrupted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import distributed as D
from . import runs
from .data import DataSource, make_loaders, mix_seed, parse_data
from .devices import COMPILE_MODES, Accel, environment, pick_device  # noqa: F401 (re-exported)
from .errors import TrainingError
from .evaluate import evaluate, evaluate_sharded
from .model import build
from .recipes import LRSchedule, Recipe
from .runs import atomic_write, load_run_config, read_metrics, save_checkpoint, write_json  # noqa: F401
from .spec import ArchSpec
from .step import Stepper


@dataclass
class RunResult:
    run_dir: Path
    iteration: int
    finished: bool
    last_eval: dict | None


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

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "window": asdict(self.window), "last_eval": self.last_eval}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(d["iteration"], d["epoch"], d["batch_in_epoch"], Window(**d["window"]), d["last_eval"])


def train(
    spec: ArchSpec | None = None,
    data: Any = None,
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    *,
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
    loader: str = "auto",
) -> RunResult:
    """Train ``spec`` on ``data`` (a `DataSource` or a ``--data`` string) with ``recipe`` into
    the run directory ``out``.

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
    ``loader``: ImageNet's input path, ``cpu``, ``gpu`` or ``auto`` (gpu on CUDA; `data.resolve_loader`).
    """
    if out is None:
        raise TrainingError("train() needs out=, the run directory")
    out = Path(out)
    launch = D.launch_env()
    dev = pick_device(device)
    batch = recipe.batch_size if recipe is not None and not resume else None
    if resume and launch.enabled and (out / runs.RECIPE).is_file():  # fail before joining
        batch = (runs.read_json(out / runs.RECIPE) or {}).get("batch_size")
    backend = D.check_launch(launch, dev, dist_backend, sync_bn, batch)
    env, dev = D.setup(launch, dev, backend)
    ok = False
    try:
        opened = _open_run_on_all_ranks(env, out, resume, spec, recipe, data, seed)
        session = Session.start(env, dev, out, *opened, amp=amp, channels_last=channels_last,
                                compile=compile, progress=progress, on_metrics=on_metrics,
                                sync_bn=sync_bn, workers=workers, loader=loader)
        result = session.run(should_stop)
        ok = True
        return result
    except Exception as e:
        if not (env.enabled and D.is_comm_failure(e)):
            raise
        raise TrainingError(f"another process of the job failed or stopped answering ({D.first_line(e)}); "
                            f"the last checkpoint is kept in {runs.checkpoint_path(out)} (continue with --resume)") from None
    finally:
        D.teardown(env, ok)


def _open_run(run_dir: Path, resume: bool, spec: ArchSpec | None, recipe: Recipe | None, data: Any,
              seed: int) -> tuple[ArchSpec | None, Recipe | None, Any, int, dict | None]:
    """Check ``run_dir`` for a new run or a resume; for a resume, the saved configuration and
    the checkpoint's state."""
    ckpt_path = runs.checkpoint_path(run_dir)
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
        state = runs.load_checkpoint(ckpt_path)
    elif runs.metrics_path(run_dir).exists() or ckpt_path.exists():
        raise TrainingError(f"{run_dir} already holds a run: continue it with --resume, "
                            "or choose a new --out directory")
    return spec, recipe, data, seed, state


def _open_run_on_all_ranks(env: D.DistEnv, run_dir: Path, *args: Any) -> tuple:
    """`_open_run` on rank 0 alone; every rank then fails, or goes on, alike."""
    if not env.enabled:
        return _open_run(run_dir, *args)
    opened: Any = None
    if env.is_main:
        try:
            opened = _open_run(run_dir, *args)
        except TrainingError as e:
            opened = str(e)
    opened = D.broadcast_object(env, opened)
    if isinstance(opened, str):
        raise TrainingError(opened)
    return opened


@dataclass
class Session:
    """A run in progress in this process: the net, its optimizer and schedule, the loaders,
    the metrics file, and the `TrainState`. `start` builds it, `run` is the loop."""

    env: D.DistEnv
    dev: torch.device
    run_dir: Path
    spec: ArchSpec
    recipe: Recipe
    seed: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    step: Stepper
    train_loader: Any
    eval_loader: Any
    accel: Accel
    state: TrainState
    writer: runs.MetricsWriter
    loss_acc: torch.Tensor  # summed on the device: no sync per iteration
    wrong_acc: torch.Tensor
    start_wall: float
    progress: bool = True
    bar: Any = None
    clock: float = 0.0  # when the open window's training time started

    @classmethod
    def start(cls, env: D.DistEnv, dev: torch.device, run_dir: Path, spec: ArchSpec | None,
              recipe: Recipe | None, data: Any, seed: int, ckpt: dict | None, *, amp: str,
              channels_last: bool | None, compile: str | bool, progress: bool,
              on_metrics: Callable[[dict], None] | None, sync_bn: bool, workers: int | None,
              loader: str = "auto") -> Session:
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
            workers=workers, loader=loader,
        )
        if len(train_loader) == 0:
            raise TrainingError(f"the training set has {data_info['train_size']} images, fewer than one "
                                f"batch of {recipe.batch_size}: use more data or --set batch_size=N")
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        schedule = LRSchedule(recipe, warmup=spec.depth >= recipe.warmup_min_depth)
        loss_acc = torch.zeros((), device=dev)
        wrong_acc = torch.zeros((), device=dev, dtype=torch.long)
        state = TrainState()
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["schedule"])
            state = TrainState.from_state_dict(ckpt)
            if env.is_main:  # the saved sums are over all ranks: one rank carries them on
                loss_acc.copy_(ckpt["acc"][0])
                wrong_acc.copy_(ckpt["acc"][1])
            _set_rng_state(ckpt["rng"])
        if env.rank > 0:  # dropout masks differ between ranks, as between the images of a batch
            torch.manual_seed(mix_seed("rank", seed, env.rank, state.iteration))
        step = Stepper(model, optimizer, accel, dev, forward=D.wrap(model, env, dev))
        if ckpt is not None:
            step.scaler.load_state_dict(ckpt["scaler"])
        if env.is_main:
            if ckpt is not None:
                runs.truncate_metrics(run_dir, state.iteration)
            else:
                runs.write_config(run_dir, spec, recipe,
                                  {**data_info, "arg": data if isinstance(data, str) else None})
            runs.write_env(run_dir, {**environment(dev, accel), "seed": seed, "distributed": {
                **env.to_dict(), "sync_bn": sync_bn and env.enabled,
                "batch_per_rank": recipe.batch_size // env.world_size}})
        start_wall = time.perf_counter() - (ckpt or {}).get("wall_time", 0.0)
        writer = runs.MetricsWriter(run_dir if env.is_main else None, on_metrics)
        return cls(env, dev, run_dir, spec, recipe, seed, model, optimizer, schedule, step,
                   train_loader, eval_loader, accel, state, writer, loss_acc, wrong_acc, start_wall,
                   progress)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[int], bool] | None = None) -> RunResult:
        """Train to the recipe's end, or until ``should_stop`` says so (then checkpoint)."""
        st, r = self.state, self.recipe
        batches = len(self.train_loader)
        self.bar = _progress(self.progress and self.env.is_main, r.max_iters, st.iteration, self.spec.name)
        self.model.train()
        try:
            while st.iteration < r.max_iters:
                self.train_loader.set_epoch(st.epoch, start_batch=st.batch_in_epoch)
                self.clock = time.perf_counter()
                for x, y in self.train_loader:
                    lr = self.schedule.lr(st.iteration)
                    loss, logits = self.step(x, y, lr)
                    self.loss_acc += loss * y.numel()
                    self.wrong_acc += (logits.argmax(1) != y).sum()
                    st.window.seen += y.numel() * self.env.world_size  # every rank's slice is equal
                    st.advance(batches)
                    it, last = st.iteration, st.iteration == r.max_iters
                    if it % r.log_every == 0 or last:
                        self.log_train(lr)
                    if it % r.eval_every == 0 or last:
                        self.log_eval(lr)
                    stop = not last and self.stop_asked(should_stop)
                    if it % r.checkpoint_every == 0 or last or stop:
                        self.checkpoint()
                    self.bar.update(1)
                    if stop:
                        return RunResult(self.run_dir, it, False, st.last_eval)
                    if last or st.batch_in_epoch == 0:
                        break
        except KeyboardInterrupt:
            raise TrainingError(
                f"interrupted at iteration {st.iteration}; the last checkpoint is kept in "
                f"{runs.checkpoint_path(self.run_dir)} (continue with: resnet-explorer train --resume "
                f"--out {self.run_dir})") from None
        finally:
            self.bar.close()
            self.writer.close()
        return RunResult(self.run_dir, st.iteration, True, st.last_eval)

    # -- what the loop does between steps --------------------------------------------------------------
    def flush(self) -> None:
        """Move the device-side sums (over the ranks) into the window; stop on a NaN/inf loss
        (every rank sees the same sums, so every rank stops)."""
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        both = torch.stack([self.loss_acc.double(), self.wrong_acc.double()])
        sums = D.all_reduce_sum(self.env, both).tolist()
        now, w = time.perf_counter(), self.state.window
        w.time += now - self.clock
        self.clock = now
        w.loss += sums[0]
        w.wrong += int(sums[1])
        self.loss_acc.zero_()
        self.wrong_acc.zero_()
        if not math.isfinite(w.loss):
            ckpt = runs.checkpoint_path(self.run_dir)
            kept = f"its last good checkpoint is kept in {ckpt}" if ckpt.exists() else "no checkpoint had been written yet"
            raise TrainingError(f"{self.spec.name}: the loss became {w.loss} by iteration "
                                f"{self.state.iteration}; the run is stopped and {kept}: lower the lr or warm up")

    def log_train(self, lr: float) -> None:
        """A train line (and a grad line) of the window, which then starts afresh."""
        self.flush()
        st, w = self.state, self.state.window
        err = w.wrong / w.seen
        self.schedule.observe_train_error(err)
        speed = w.seen / max(w.time, 1e-9)
        self.writer.write({"kind": "train", "iter": st.iteration, "epoch": st.epoch_now(len(self.train_loader)),
                           "lr": lr, "train_loss": w.loss / w.seen, "train_error": err, "images_per_s": speed,
                           "wall_time": time.perf_counter() - self.start_wall})
        self.bar.set_postfix(loss=f"{w.loss / w.seen:.3f}", err=f"{err:.3f}", img_s=f"{speed:.0f}")
        st.window = Window()
        if self.recipe.log_grad_norms and self.env.is_main:
            self.writer.write({"kind": "grad", "iter": st.iteration, "norms": self.step.grad_norms()})

    def log_eval(self, lr: float) -> None:
        """An eval line on the test (or val) set; its time is not training time."""
        t, st = time.perf_counter(), self.state
        if self.env.enabled:
            D.broadcast_buffers(self.env, self.model)  # evaluate rank 0's model, the one that is saved
            ev = evaluate_sharded(self.env, self.model, self.eval_loader, self.dev, self.accel,
                                  self.spec.num_classes)
        else:
            ev = evaluate(self.model, self.eval_loader, self.dev, self.accel)
        self.schedule.observe_eval_error(ev["error"])
        st.last_eval = {"iter": st.iteration, **ev}
        self.writer.write({"kind": "eval", "iter": st.iteration, "epoch": st.epoch_now(len(self.train_loader)),
                           "lr": lr, **{f"test_{k}": v for k, v in ev.items()},
                           "wall_time": time.perf_counter() - self.start_wall})
        self.clock += time.perf_counter() - t

    def stop_asked(self, should_stop: Callable[[int], bool] | None) -> bool:
        """Whether to stop now (all ranks at the same iteration); never with a diverged model."""
        if should_stop is None:
            return False
        stop = D.any_rank(self.env, should_stop(self.state.iteration), self.dev)
        if stop and not torch.isfinite(D.all_reduce_sum(self.env, self.loss_acc)):
            self.flush()  # raises: never checkpoint a diverged model
        return stop

    def checkpoint(self) -> None:
        """Everything a resume needs, written atomically by rank 0."""
        acc = (D.all_reduce_sum(self.env, self.loss_acc).cpu(), D.all_reduce_sum(self.env, self.wrong_acc).cpu())
        if not self.env.is_main:
            return
        runs.save_checkpoint(runs.checkpoint_path(self.run_dir), {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.step.scaler.state_dict(),
            **self.state.state_dict(), "acc": acc, "rng": _rng_state(),
            "wall_time": time.perf_counter() - self.start_wall, "spec": self.spec.to_dict(),
            "recipe": self.recipe.to_dict(), "seed": self.seed,
        })


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _progress(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="it",
                dynamic_ncols=True, leave=False)
