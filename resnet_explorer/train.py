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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import distributed as D
from . import ghost_bn
from .checkpoint import Checkpoint, TrainState, Window, nonfinite
from .data import DataSource, as_source, make_loaders, mix_seed
from .devices import Accel, check_memory, environment, pick_device
from .errors import TrainingError, UserError, one_line
from .evaluate import evaluate, evaluate_sharded
from .model import build
from .options import RunOptions
from .recipes import LRSchedule, Recipe
from .runs import MetricsWriter, Opened, RunDir
from .safeio import io_error_words, read_json
from .spec import ArchSpec
from .stopsignals import on_stop_signals
from .step import Stepper


@dataclass
class RunResult:
    run_dir: Path
    iteration: int
    finished: bool
    last_eval: dict | None


def train(
    spec: ArchSpec | None = None,
    data: str | DataSource | None = None,
    recipe: Recipe | None = None,
    out: str | Path | None = None,
    *,
    options: RunOptions | None = None,
    resume: bool = False,
    seed: int | None = None,
    should_stop: Callable[[int], bool] | None = None,
    on_metrics: Callable[[dict], None] | None = None,
    **option_fields: Any,
) -> RunResult:
    """Train ``spec`` on ``data`` (a `DataSource` or a ``--data`` string) with ``recipe`` into
    the run directory ``out``, run as ``options`` say (a `RunOptions`; its fields may also be
    given as keywords: ``train(..., device="cpu", progress=False)``).

    With ``resume=True`` the run in ``out`` continues from its last checkpoint; spec,
    recipe, data and seed then come from the run directory (any given must equal the
    run's records: a difference is one line). ``seed`` defaults to 0 for a new run.
    One process writes a run at a time: a second is refused, naming the holder.
    ``should_stop(iteration)`` is asked after each iteration: when it says yes, a
    checkpoint is written and the run returns unfinished. SIGINT and SIGTERM (in the main
    thread) do the same, then raise a `TrainingError` saying where to resume from.
    ``on_metrics`` receives every metrics line as it is written (for live plots).

    Started by ``torchrun`` with ``WORLD_SIZE`` > 1, the run is data-parallel
    (`resnet_explorer.distributed`): DDP over ``options.dist_backend`` (auto: NCCL on GPUs,
    gloo on CPUs), the recipe's batch split across the ranks, ``options.sync_bn`` for
    BatchNorm statistics over the whole batch (GPUs only); rank 0 alone writes the run directory.
    """
    options = RunOptions.of(options, **option_fields)
    if out is None or not str(out).strip():
        raise TrainingError("train() needs out=, the run directory (an empty one names none)")
    check_seed(seed)
    run = RunDir(out)
    if options.threads:
        torch.set_num_threads(options.threads)
    launch = D.launch_env()
    dev = pick_device(options.device)
    batch = recipe.batch_size if recipe is not None and not resume else None
    if resume and launch.enabled and (run.path / "recipe.json").is_file():  # fail before joining
        saved = read_json(run.path / "recipe.json")
        batch = saved.get("batch_size") if isinstance(saved, dict) else None
    backend = D.check_launch(launch, dev, options.dist_backend, options.sync_bn, batch)
    env, dev = D.setup(launch, dev, backend)
    ok, lock, created = False, None, not run.path.exists()
    try:
        source = None if data is None else as_source(data)
        opened, lock = _open_on_all_ranks(env, run, created, resume=resume, spec=spec, recipe=recipe,
                                          source=source, seed=seed)
        if opened.threads and dev.type == "cpu" and not env.enabled:
            torch.set_num_threads(opened.threads)  # the run's own: other counts round differently
        session = Session.start(env=env, dev=dev, run=run, opened=opened, options=options, on_metrics=on_metrics)
        result = session.run(should_stop)
        ok = True
        return result
    except OSError as e:  # writing the records (a full or read-only disk), or reading the data
        raise TrainingError(f"{run.path}: {io_error_words(e)}; nothing written before is lost") from None
    except Exception as e:
        if not (env.enabled and D.is_comm_failure(e)):
            raise
        raise TrainingError(f"another process of the job failed or stopped answering ({one_line(e)}); "
                            f"the last checkpoint is kept in {run.checkpoint_path} (continue with --resume)") from None
    finally:
        if lock is not None:
            lock.release(remove_if_unused=created and not ok)  # refused at once: leave no trace
        D.teardown(env, ok)


def check_seed(seed: int | None) -> None:
    """A seed a run can record and resume with (0 <= seed < 2**63), or one line, before anything is written."""
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise TrainingError(f"seed {seed!r} is invalid: use a whole number from 0 to 2**63 - 1")


def _open_on_all_ranks(env: D.DistEnv, run: RunDir, created: bool, *, resume: bool, spec: ArchSpec | None,
                       recipe: Recipe | None, source: DataSource | None, seed: int | None) -> tuple[Opened, Any]:
    """`RunDir.open` on rank 0 alone, under the run's lock (which rank 0 keeps); every rank
    then fails, or goes on, alike. A refused run whose directory this call ``created``
    leaves none behind."""
    lock = None
    opened: Any = None
    if env.is_main:
        try:
            if resume and not run.path.is_dir():  # a resume never makes a directory
                raise TrainingError(f"{run.path}: no checkpoint to resume from (no such run directory)")
            lock = run.lock()
            opened = run.open(resume, spec, recipe, source, seed)
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


@dataclass
class Session:
    """A run in progress in this process: the net, its optimizer and schedule, the loaders,
    the metrics file, and the `TrainState`. `start` builds it, `run` is the loop."""

    env: D.DistEnv
    dev: torch.device
    rundir: RunDir
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
    writer: MetricsWriter
    loss_acc: torch.Tensor  # summed on the device: no sync per iteration
    wrong_acc: torch.Tensor
    start_wall: float
    progress: bool = True
    bar: Any = None
    clock: float = 0.0  # when the window's time was last counted (training time only)
    kept: int | None = None  # the iteration of the checkpoint on disk (finite), if any
    stop_signal: str | None = None  # SIGINT or SIGTERM, once received

    @classmethod
    def start(cls, *, env: D.DistEnv, dev: torch.device, run: RunDir, opened: Opened, options: RunOptions,
              on_metrics: Callable[[dict], None] | None = None) -> Session:
        """Build the net, its optimizer, schedule and loaders for ``opened`` (restored from its
        checkpoint on a resume), and write the run's records (rank 0)."""
        spec, recipe, source, seed, ckpt = opened.spec, opened.recipe, opened.source, opened.seed, opened.ckpt
        if spec is None or recipe is None or source is None:
            raise TrainingError("a new run needs an architecture, a dataset and a recipe")
        spec.validate()
        recipe.validate()
        D.check_divisible(recipe.batch_size, env.world_size)
        accel = Accel.resolve(dev, options.amp, options.channels_last, options.compile)
        # the data decides the classes and the input size; the records say what was trained
        spec = spec.replace(num_classes=source.num_classes, input_size=source.image_size).validate()
        per_rank = recipe.batch_size // env.world_size
        check_memory(spec, per_rank, dev, accel.amp)
        sync_bn = options.sync_bn and env.enabled

        bn_batch = ghost_bn.per_process(recipe.bn_batch, per_rank, sync_bn)
        torch.manual_seed(seed)
        model = accel.prepare(ghost_bn.convert(D.convert_sync_bn(build(spec), env, options.sync_bn), bn_batch), dev)
        train_loader, eval_loader, data_info = make_loaders(
            source, recipe.batch_size, dev, seed, val_split=recipe.val_split,
            augment=recipe.augment, channels_last=accel.channels_last,
            eval_batch_size=max(recipe.batch_size, 500), rank=env.rank, world_size=env.world_size,
            workers=options.workers, loader=options.loader,
        )
        if len(train_loader) == 0:
            raise TrainingError(f"the training set has {data_info['train_size']} images, fewer than one "
                                f"batch of {recipe.batch_size}: use more data or --set batch_size=N")
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                    weight_decay=recipe.weight_decay)
        schedule = LRSchedule(recipe, warmup=spec.depth >= recipe.warmup_min_depth)
        loss_acc = torch.zeros((), device=dev)
        wrong_acc = torch.zeros((), device=dev, dtype=torch.long)
        step = Stepper(model, optimizer, accel, dev, forward=D.wrap(model, env, dev))
        state = TrainState()
        if ckpt is not None:
            state = _restore(ckpt, run, model, optimizer, schedule, step, loss_acc, wrong_acc, env.is_main)
        batches = len(train_loader)
        if not state.batch_in_epoch < batches or state.epoch * batches + state.batch_in_epoch != state.iteration:
            raise TrainingError(f"{run.checkpoint_path} cannot be resumed: it stands at epoch {state.epoch}, batch "
                                f"{state.batch_in_epoch} (epochs of {batches}), which is not iteration "
                                f"{state.iteration:,}: start again in a new --out")
        if env.rank > 0:  # dropout masks differ between ranks, as between the images of a batch
            torch.manual_seed(mix_seed("rank", seed, env.rank, state.iteration))
        if env.is_main:
            if run.metrics_path.exists():  # a resume: what came after the checkpoint is redone
                run.truncate_metrics(state.iteration)
            if ckpt is None:
                run.write_config(spec, recipe, {**data_info, "arg": source.arg})
            run.write_env({**environment(dev, accel), "seed": seed, "distributed": {
                **env.to_dict(), "sync_bn": sync_bn, "batch_per_rank": per_rank}})
        return cls(env=env, dev=dev, rundir=run, spec=spec, recipe=recipe, seed=seed, model=model,
                   optimizer=optimizer, schedule=schedule, step=step, train_loader=train_loader,
                   eval_loader=eval_loader, accel=accel, state=state,
                   writer=MetricsWriter(run if env.is_main else None, on_metrics), loss_acc=loss_acc,
                   wrong_acc=wrong_acc, start_wall=time.perf_counter() - (ckpt.wall_time if ckpt else 0.0),
                   progress=options.progress, kept=state.iteration if ckpt is not None else None)

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
                                f"{self.rundir.checkpoint_path} (continue with: resnet-explorer "
                                f"train --resume --out {self.rundir.path})")
                        if stop:
                            return RunResult(self.rundir.path, it, False, st.last_eval)
                        if last or st.batch_in_epoch == 0:
                            break
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread: no checkpoint now
            raise TrainingError(f"interrupted at iteration {st.iteration}; {self._kept()} (continue with: "
                                f"resnet-explorer train --resume --out {self.rundir.path})") from None
        except OSError as e:
            raise TrainingError(f"{self.spec.name}: at iteration {st.iteration}, {io_error_words(e)}; the run is stopped "
                                f"and {self._kept()} (continue with: resnet-explorer train --resume --out "
                                f"{self.rundir.path})") from None
        finally:
            self.bar.close()
            self.writer.close()
        return RunResult(self.rundir.path, st.iteration, True, st.last_eval)

    # -- what the loop does between steps --------------------------------------------------------------
    def tick(self) -> None:
        """Count the training time since the last tick into the window."""
        now = time.perf_counter()
        self.state.window.time += now - self.clock
        self.clock = now

    def _kept(self) -> str:
        if self.kept is None:
            return "no checkpoint had been written yet"
        return (f"its last good checkpoint is kept in {self.rundir.checkpoint_path} "
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
        bad = nonfinite(model)
        if bad:
            raise self._diverged(f"{len(bad)} weight tensors became non-finite ({bad[0]} …)")
        if self.env.is_main:
            self.rundir.save_checkpoint(Checkpoint(
                model=model, spec=self.spec, state=self.state, optimizer=self.optimizer.state_dict(),
                schedule=self.schedule.state_dict(), scaler=self.step.scaler.state_dict(), acc=acc,
                rng=_rng_state(), wall_time=time.perf_counter() - self.start_wall, recipe=self.recipe.to_dict(),
                seed=self.seed))
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


def _restore(ckpt: Checkpoint, run: RunDir, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             schedule: LRSchedule, step: Stepper, loss_acc: torch.Tensor, wrong_acc: torch.Tensor,
             is_main: bool) -> TrainState:
    """Load a checkpoint's pieces into the net, optimizer, schedule, scaler, sums and RNG: a
    piece that does not fit (another architecture, a hand-edited file) is one line."""
    try:
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        schedule.load_state_dict(ckpt.schedule)
        step.scaler.load_state_dict(ckpt.scaler)
        if is_main:  # the saved sums are over all ranks: one rank carries them on
            loss_acc.copy_(ckpt.acc[0])
            wrong_acc.copy_(ckpt.acc[1])
        torch.set_rng_state(ckpt.rng["torch"])
        if "cuda" in ckpt.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt.rng["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise TrainingError(f"{run.checkpoint_path} cannot be resumed: it does not fit this run "
                            f"({type(e).__name__}: {one_line(e, 120)}): start again in a new --out") from None
    return ckpt.state


def _progress(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="it",
                dynamic_ncols=True, leave=False)
