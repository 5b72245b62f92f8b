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
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import distributed as D
from . import ghost_bn, runs
from .data import DataSource, make_loaders, mix_seed, parse_data
from .devices import COMPILE_MODES, Accel, check_memory, environment, pick_device  # noqa: F401 (re-exported)
from .errors import TrainingError, one_line
from .evaluate import evaluate, evaluate_sharded
from .model import build
from .recipes import LRSchedule, Recipe
from .resume import open_run_on_all_ranks, restoring
from .safeio import io_error_words
from .runs import atomic_write, load_run_config, read_metrics, save_checkpoint, write_json  # noqa: F401
from .spec import ArchSpec
from .stopsignals import on_stop_signals
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
    seed: int | None = None,
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
    recipe, data and seed then come from the run directory (any given must equal the
    run's records: a difference is one line). ``seed`` defaults to 0 for a new run.
    One process writes a run at a time: a second is refused, naming the holder.
    ``should_stop(iteration)`` is asked after each iteration: when it says yes, a
    checkpoint is written and the run returns unfinished. SIGINT and SIGTERM (in the main
    thread) do the same, then raise a `TrainingError` saying where to resume from.
    ``on_metrics`` receives every metrics line as it is written (for live plots).

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
        saved = runs.read_json(out / runs.RECIPE)
        batch = saved.get("batch_size") if isinstance(saved, dict) else None
    backend = D.check_launch(launch, dev, dist_backend, sync_bn, batch)
    env, dev = D.setup(launch, dev, backend)
    ok, lock, created = False, None, not out.exists()
    try:
        opened, lock = open_run_on_all_ranks(env, out, created, resume, spec, recipe, data, seed)
        session = Session.start(env, dev, out, opened.spec, opened.recipe, opened.data, opened.seed,
                                opened.ckpt, amp=amp, channels_last=channels_last, compile=compile,
                                progress=progress, on_metrics=on_metrics, sync_bn=sync_bn, workers=workers,
                                loader=loader)
        result = session.run(should_stop)
        ok = True
        return result
    except OSError as e:  # writing the records (a full or read-only disk), or reading the data
        raise TrainingError(f"{out}: {io_error_words(e)}; nothing written before is lost") from None
    except Exception as e:
        if not (env.enabled and D.is_comm_failure(e)):
            raise
        raise TrainingError(f"another process of the job failed or stopped answering ({one_line(e)}); "
                            f"the last checkpoint is kept in {runs.checkpoint_path(out)} (continue with --resume)") from None
    finally:
        if lock is not None:
            lock.release(remove_if_unused=created and not ok)  # refused at once: leave no trace
        D.teardown(env, ok)


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
    clock: float = 0.0  # when the window's time was last counted (training time only)
    kept: int | None = None  # the iteration of the checkpoint on disk (finite), if any
    stop_signal: str | None = None  # SIGINT or SIGTERM, once received

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
        # the data decides the classes and the input size; the records say what was trained
        spec = spec.replace(num_classes=source.num_classes, input_size=source.image_size).validate()
        check_memory(spec, recipe.batch_size // env.world_size, dev, accel.amp)

        bn_batch = ghost_bn.per_process(recipe.bn_batch, recipe.batch_size // env.world_size, sync_bn and env.enabled)
        torch.manual_seed(seed)
        model = accel.prepare(ghost_bn.convert(D.convert_sync_bn(build(spec), env, sync_bn), bn_batch), dev)
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
            with restoring(run_dir):
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
                schedule.load_state_dict(ckpt["schedule"])
                state = TrainState.from_state_dict(ckpt)
                if env.is_main:  # the saved sums are over all ranks: one rank carries them on
                    loss_acc.copy_(ckpt["acc"][0])
                    wrong_acc.copy_(ckpt["acc"][1])
                _set_rng_state(ckpt["rng"])
        if not state.batch_in_epoch < len(train_loader):
            raise TrainingError(f"{runs.checkpoint_path(run_dir)} cannot be resumed: it stands at batch "
                                f"{state.batch_in_epoch} of an epoch of {len(train_loader)}: start again in a new --out")
        if env.rank > 0:  # dropout masks differ between ranks, as between the images of a batch
            torch.manual_seed(mix_seed("rank", seed, env.rank, state.iteration))
        step = Stepper(model, optimizer, accel, dev, forward=D.wrap(model, env, dev))
        if ckpt is not None:
            with restoring(run_dir):
                step.scaler.load_state_dict(ckpt["scaler"])
        if env.is_main:
            if runs.metrics_path(run_dir).exists():  # a resume: what came after the checkpoint is redone
                runs.truncate_metrics(run_dir, state.iteration)
            if ckpt is None:
                runs.write_config(run_dir, spec, recipe,
                                  {**data_info, "arg": data if isinstance(data, str) else None})
            runs.write_env(run_dir, {**environment(dev, accel), "seed": seed, "distributed": {
                **env.to_dict(), "sync_bn": sync_bn and env.enabled,
                "batch_per_rank": recipe.batch_size // env.world_size}})
        start_wall = time.perf_counter() - (ckpt or {}).get("wall_time", 0.0)
        writer = runs.MetricsWriter(run_dir if env.is_main else None, on_metrics)
        return cls(env, dev, run_dir, spec, recipe, seed, model, optimizer, schedule, step,
                   train_loader, eval_loader, accel, state, writer, loss_acc, wrong_acc, start_wall,
                   progress, kept=state.iteration if ckpt is not None else None)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, should_stop: Callable[[int], bool] | None = None) -> RunResult:
        """Train to the recipe's end, or until ``should_stop`` (or SIGINT / SIGTERM) says so:
        then checkpoint, and return (``should_stop``) or raise a `TrainingError` (a signal)."""
        st, r = self.state, self.recipe
        batches = len(self.train_loader)
        self.bar = _progress(self.progress and self.env.is_main, r.max_iters, st.iteration, self.spec.name)
        self.model.train()
        self.clock = time.perf_counter()  # the window's time runs on across epochs
        try:
            with _stop_signals(self):
                while st.iteration < r.max_iters:
                    self.train_loader.set_epoch(st.epoch, start_batch=st.batch_in_epoch)
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
                        stop = not last and (self.stop_signal is not None or self.stop_asked(should_stop))
                        if it % r.checkpoint_every == 0 or last or stop:
                            self.checkpoint()
                        self.bar.update(1)
                        if stop and self.stop_signal:
                            raise TrainingError(
                                f"stopped by {self.stop_signal} at iteration {it}; its checkpoint is in "
                                f"{runs.checkpoint_path(self.run_dir)} (continue with: resnet-explorer "
                                f"train --resume --out {self.run_dir})")
                        if stop:
                            return RunResult(self.run_dir, it, False, st.last_eval)
                        if last or st.batch_in_epoch == 0:
                            break
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread: no checkpoint now
            raise TrainingError(f"interrupted at iteration {st.iteration}; {self._kept()} (continue with: "
                                f"resnet-explorer train --resume --out {self.run_dir})") from None
        except OSError as e:
            raise TrainingError(f"{self.spec.name}: at iteration {st.iteration}, {io_error_words(e)}; the run is stopped "
                                f"and {self._kept()} (continue with: resnet-explorer train --resume --out "
                                f"{self.run_dir})") from None
        finally:
            self.bar.close()
            self.writer.close()
        return RunResult(self.run_dir, st.iteration, True, st.last_eval)

    # -- what the loop does between steps --------------------------------------------------------------
    def tick(self) -> None:
        """Count the training time since the last tick into the window."""
        now = time.perf_counter()
        self.state.window.time += now - self.clock
        self.clock = now

    def _kept(self) -> str:
        if self.kept is None:
            return "no checkpoint had been written yet"
        return (f"its last good checkpoint is kept in {runs.checkpoint_path(self.run_dir)} "
                f"(iteration {self.kept}, its weights finite)")

    def _diverged(self, what: str) -> TrainingError:
        return TrainingError(f"{self.spec.name}: {what} by iteration {self.state.iteration}; the run is stopped "
                             f"and {self._kept()}: lower the lr or warm up")

    def flush(self) -> None:
        """Move the device-side sums (over the ranks) into the window; stop on a NaN/inf loss
        (every rank sees the same sums, so every rank stops)."""
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        both = torch.stack([self.loss_acc.double(), self.wrong_acc.double()])
        sums = D.all_reduce_sum(self.env, both).tolist()
        self.tick()
        w = self.state.window
        w.loss += sums[0]
        w.wrong += int(sums[1])
        self.loss_acc.zero_()
        self.wrong_acc.zero_()
        if not math.isfinite(w.loss):
            raise self._diverged(f"the loss became {w.loss}")

    def log_train(self, lr: float) -> None:
        """A train line (and a grad line) of the window, which then starts afresh. Its
        images/s are the window's images over the window's wall-clock time (evaluations excluded)."""
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
        st = self.state
        self.tick()
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
        self.clock = time.perf_counter()

    def stop_asked(self, should_stop: Callable[[int], bool] | None) -> bool:
        """Whether ``should_stop`` says stop now (all ranks at the same iteration)."""
        if should_stop is None:
            return False
        return D.any_rank(self.env, should_stop(self.state.iteration), self.dev)

    def checkpoint(self) -> None:
        """Everything a resume needs, written atomically by rank 0, and only when the loss and
        every weight are finite (a diverged model is never called a good checkpoint)."""
        acc = (D.all_reduce_sum(self.env, self.loss_acc).cpu(), D.all_reduce_sum(self.env, self.wrong_acc).cpu())
        self.tick()  # the window's time so far is saved with it
        if not math.isfinite(acc[0].item() + self.state.window.loss):
            raise self._diverged(f"the loss became {acc[0].item() + self.state.window.loss}")
        model = self.model.state_dict()
        bad = runs.nonfinite(model)
        if bad:
            raise self._diverged(f"{len(bad)} weight tensors became non-finite ({bad[0]} …)")
        if self.env.is_main:
            runs.save_checkpoint(runs.checkpoint_path(self.run_dir), {
                "model": model, "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.step.scaler.state_dict(),
                **self.state.state_dict(), "acc": acc, "rng": _rng_state(),
                "wall_time": time.perf_counter() - self.start_wall, "spec": self.spec.to_dict(),
                "recipe": self.recipe.to_dict(), "seed": self.seed,
            })
        self.kept = self.state.iteration


@contextmanager
def _stop_signals(session: Session) -> Iterator[None]:
    """While training in the main thread of a single process: SIGINT and SIGTERM ask the
    loop to checkpoint where it is and stop (a second SIGINT interrupts at once)."""
    if session.env.enabled:
        yield
        return

    def ask(signum: int, frame: Any) -> None:
        if session.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        session.stop_signal = signal.Signals(signum).name

    with on_stop_signals(ask):
        yield


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
