"""The training dashboard: train nets in a background thread with live Fig. 6 error curves.

Start trains every selected spec into ``out/<name>`` one after the other; Stop makes the
running net checkpoint and return; Resume continues every unfinished run shown; Open shows
an existing run or experiment. Training never holds the kernel: the buttons work while it
runs, and a notebook's later cells ask `TrainingDashboard.finished_runs` for what is done.
Runs are known by their directory everywhere (the figure keys its traces by path), so
runs of one net in two ``out`` folders never mix. Everything about run directories is
asked of `runs`.
"""

from __future__ import annotations

import copy
import html
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..data import as_source
from ..devices import Accel, pick_device
from ..errors import SpecError, TrainingError, UserError
from ..figures import error_curves, update_error_curves
from ..recipes import RECIPES, Recipe, get_recipe
from ..runs import RunDir, find_runs
from ..spec import ArchSpec
from ..train import train
from ..zoo import get_spec
from .builder import ArchitectureBuilder
from .controls import PRESETS
from .messages import message_html, one_line
from .page import KernelLink, Reconnecting

SpecSource = str | ArchSpec | ArchitectureBuilder
GIVEN = "(given)"  # the recipe dropdown's value for a Recipe object passed to the dashboard
FIELD = dict(layout=W.Layout(width="100%"), style={"description_width": "80px"})


def _resolve(source: SpecSource) -> ArchSpec:
    if isinstance(source, ArchitectureBuilder):
        return source.spec
    if isinstance(source, ArchSpec):
        return copy.deepcopy(source).validate()
    return get_spec(source)


def _label(source: SpecSource) -> str:
    if isinstance(source, ArchitectureBuilder):
        return "builder"
    return source.name if isinstance(source, ArchSpec) else source


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _same_dirs(dirs: Sequence[Path]) -> list[Path]:
    """``dirs`` without repeats (two spellings of one directory are one run), in order."""
    seen, out = set(), []
    for d in dirs:
        key = Path(d).resolve()
        if key not in seen:
            seen.add(key)
            out.append(Path(d))
    return out


class TrainingDashboard(Reconnecting):
    """Train one or more nets in a background thread with live Fig. 6 error curves.

    Start trains every selected spec into ``out/<name>`` one after the other (a new set of
    runs: the figure shows only those); Stop makes the running one checkpoint and return;
    Resume continues every unfinished run shown. ``open(run_dir)`` shows an existing run
    (or an experiment's runs) beside them and lets Resume continue it. `finished_runs`
    is what the notebook's later cells read. Displayable; ``.widget`` is its ipywidgets box
    (not a subclass, because ipywidgets' ``Widget.open`` means something else).
    """

    _what = "This training dashboard"

    def __init__(self, specs: Sequence[SpecSource] | None = None, data: str = "synthetic:2000",
                 recipe: str | Recipe = "cpu-short", out: str = "runs/dashboard", iters: int | None = None,
                 device: str = "auto", update_every: float = 1.0, amp: str = "auto", compile: str = "off"):
        sources = list(specs) if specs else ["cifar-plain20", "cifar-resnet20"]
        self._sources: dict[str, SpecSource] = {}
        for s in sources:
            label = _label(s)
            while label in self._sources:
                label += "+"
            self._sources[label] = s
        for name in PRESETS:
            if name.startswith("cifar-") and "1202" not in name and name not in self._sources:
                self._sources[name] = name
        self.device, self.amp, self.compile = device, amp, compile
        self.update_every = update_every
        self.runs: list[Path] = []
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._current: Path | None = None  # the run the thread is training now
        self._stop = threading.Event()
        self._last_draw = 0.0
        self._lock = threading.Lock()

        chosen = [_label(s) for s in sources]
        self.specs = W.SelectMultiple(options=list(self._sources), value=[c for c in dict.fromkeys(chosen)],
                                      description="nets", rows=min(len(self._sources), 9),
                                      layout=W.Layout(width="300px", flex="0 0 auto"))
        self.data = W.Text(value=data, description="data", **FIELD)
        # a Recipe object (a named one with fields changed) is offered first, as given
        self._given_recipe = recipe if isinstance(recipe, Recipe) else None
        options = [(n, n) for n in RECIPES]
        if self._given_recipe is not None:
            options.insert(0, (f"{recipe.name}, batch {recipe.batch_size}, {recipe.max_iters:,} iterations (given)",
                               GIVEN))
        self.recipe = W.Dropdown(options=options, value=GIVEN if self._given_recipe else recipe,
                                 description="recipe", **FIELD)
        self.iters = W.IntText(value=iters or 0, description="iterations", tooltip="0: the recipe's own number",
                               **FIELD)
        self.out = W.Text(value=str(out), description="out", **FIELD)
        for w in (self.data, self.out, self.recipe):  # a value too long for its field is in its tooltip
            w.tooltip = w.label if w is self.recipe else w.value
            w.observe(lambda ch, w=w: setattr(w, "tooltip", w.label if w is self.recipe else ch["new"]),
                      names="value")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.resume_button = W.Button(description="Resume", icon="forward")
        for name, b in (("start", self.start_button), ("stop", self.stop_button), ("resume", self.resume_button)):
            b.add_class(f"rx-{name}")
        self.open_path = W.Text(placeholder="a run (or experiment) directory", description="open",
                                layout=W.Layout(flex="1 1 300px"), style={"description_width": "50px"})
        self.open_button = W.Button(description="Open", icon="folder-open")
        self.progress = W.HTML()
        self.progress.add_class("rx-progress")
        self.message = W.HTML()
        self.figure: go.FigureWidget = error_curves([], widget=True)
        self.link = KernelLink(self.figure)

        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.resume_button.on_click(lambda _: self.resume())
        self.open_button.on_click(lambda _: self.open(self.open_path.value))
        fields = W.VBox([self.data, self.recipe, self.iters, self.out], layout=W.Layout(flex="1 1 420px"))
        self.widget = W.VBox([
            W.HBox([self.specs, fields], layout=W.Layout(width="100%", grid_gap="16px")),
            W.HBox([self.start_button, self.stop_button, self.resume_button, self.open_path, self.open_button],
                   layout=W.Layout(width="100%")),
            self.message, self.progress, self.figure, self.link,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class("rx-dashboard")
        for name, w in (("out", self.out), ("recipe", self.recipe), ("data", self.data), ("nets", self.specs)):
            w.add_class(f"rx-{name}")

    def _live(self) -> W.Widget:
        return self.widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- what to train ----------------------------------------------------------------------------------
    def _recipe(self) -> Recipe:
        iters = self.iters.value or None
        if self.recipe.value == GIVEN and self._given_recipe is not None:
            return (self._given_recipe.with_iters(iters) if iters else self._given_recipe).validate()
        return get_recipe(self.recipe.value, **({"iters": iters} if iters else {}))

    def _plan(self) -> list[tuple[ArchSpec, Path]]:
        """(spec, run directory) for each selected net; directory names are unique."""
        out = Path(self.out.value)
        plan, used = [], set()
        for label in self.specs.value:
            spec = _resolve(self._sources[label])
            name, i = spec.name, 2
            while name in used:
                name, i = f"{spec.name}-{i}", i + 1
            used.add(name)
            plan.append((spec, out / name))
        if not plan:
            raise SpecError("select at least one net to train")
        return plan

    # -- buttons ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Train every selected net into a new run directory (in the background).

        A Start begins a new set of runs: the figure and `runs` show only them (Open brings
        other runs back beside them)."""
        if self.running:
            return self._fail("training is already running: Stop it first")
        try:
            plan = self._plan()
            recipe = self._recipe()
            as_source(self.data.value)
            self._check_accel()
            busy = [d for _, d in plan if RunDir(d).has_started()]
            if busy:
                raise TrainingError(f"{busy[0]} already holds a run: press Resume to continue it, "
                                    "or choose another out folder")
        except (SpecError, TrainingError, ValueError) as e:
            return self._fail(one_line(e))
        jobs = [(spec, d, recipe, self.data.value, False) for spec, d in plan]
        self._launch(jobs, [d for _, d in plan])

    def _check_accel(self) -> None:
        """The device, amp and compile settings, checked before any thread starts."""
        Accel.resolve(pick_device(self.device), self.amp, None, self.compile)

    def resume(self) -> None:
        """Continue every unfinished run shown (and start selected nets not yet begun)."""
        if self.running:
            return self._fail("training is already running")
        try:
            self._check_accel()
            recipe = self._recipe()
            planned = {d.resolve(): (spec, d) for spec, d in self._plan()} if self.specs.value else {}
        except (SpecError, TrainingError, ValueError) as e:
            return self._fail(one_line(e))
        jobs = []
        dirs = _same_dirs([*self.runs, *(d for _, d in planned.values())])
        for d in dirs:
            if RunDir(d).has_checkpoint():
                try:
                    status = RunDir(d).status()
                    unfinished = status.iteration < status.max_iters
                except UserError as e:
                    return self._fail(one_line(e))
                if unfinished:
                    jobs.append((None, d, None, None, True))
            elif d.resolve() in planned and not RunDir(d).metrics_path.exists():
                jobs.append((planned[d.resolve()][0], d, recipe, self.data.value, False))
        if not jobs:
            self.message.value = message_html("nothing to resume: every run shown is finished", "info")
            return
        self._launch(jobs, dirs)

    def stop(self) -> None:
        """Ask the running net to checkpoint and return; nets not yet started stay pending."""
        if self.running and not self._stop.is_set():
            self._stop.set()
            self.progress.value += " · stopping (writing a checkpoint)…"

    def wait(self, timeout: float | None = None) -> bool:
        """Join the training thread; True when it has finished. This holds the kernel (the
        buttons do nothing meanwhile): for scripts and CI, not for a notebook a student uses."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self, run_dir: str | Path) -> None:
        """Show an existing run directory (or every run of an experiment / folder of runs)."""
        try:
            found = find_runs(run_dir)
        except UserError as e:
            return self._fail(one_line(e))
        self.runs = _same_dirs([*self.runs, *found])
        try:
            status = " · ".join(self._status(d) for d in found)
        except UserError as e:  # shown (its curves are read from metrics, never the checkpoint)
            return self._fail(one_line(e))
        self.message.value = ""
        self.redraw()
        self.progress.value = html.escape(status)

    def redraw(self) -> None:
        """Make the error curves those of `runs` (one batched update)."""
        with self._lock:
            update_error_curves(self.figure, list(self.runs))
            self._last_draw = time.monotonic()

    # -- what has finished -----------------------------------------------------------------------------
    def _iterations(self, d: Path) -> tuple[int, int] | None:
        """(last checkpoint's iteration, the recipe's end) of a run; None before it started."""
        try:
            max_iters = RunDir(d).config().recipe.max_iters
        except TrainingError:
            return None
        return RunDir(d).iteration(), max_iters  # a hostile checkpoint raises: shown by the caller

    def _name(self, d: Path) -> str:
        """A run's short name; with its folder when another run shown has the same name."""
        same = [r for r in self.runs if r.name == d.name and r.resolve() != d.resolve()]
        return f"{d.parent.name}/{d.name}" if same else d.name

    def _status(self, d: Path) -> str:
        done = self._iterations(d)
        if done is None:
            return f"{self._name(d)}: not started"
        it, total = done
        return f"{self._name(d)}: {it} / {total} iterations" + (" (finished)" if it >= total else "")

    def finished_runs(self, report: bool = True) -> list[Path]:
        """The runs shown that reached their recipe's end. With ``report``, prints how many,
        and which are still to come, so a notebook cell that needs finished runs says so."""
        done, waiting = [], []
        for d in self.runs:
            state = self._iterations(d)
            if state is not None and state[0] >= state[1]:
                done.append(d)
                continue
            now = self.running and self._current is not None and d.resolve() == self._current.resolve()
            doing = "training now" if now else "queued" if self.running else "stopped"
            if state is None:
                doing = {"training now": "starting now", "stopped": "not started"}.get(doing, doing)
            where = [] if state is None else [f"{state[0]:,} / {state[1]:,} iterations"]
            waiting.append(f"{self._name(d)} ({', '.join([*where, doing])})")
        if report:
            line = f"{len(done)} of {len(self.runs)} runs finished"
            if waiting:
                line += (f"; still to come: {', '.join(waiting)}. "
                         + ("" if self.running else "Press Resume to continue them. ")
                         + "The cells below use the finished runs: run them again when the dashboard's "
                           "progress line says done.")
            print(line + ("" if waiting else "."))
        return done

    # -- the background thread ----------------------------------------------------------------------------
    def _fail(self, text: str) -> None:
        self.error = text
        self.message.value = message_html(text)

    def _launch(self, jobs: list, dirs: list[Path]) -> None:
        self.runs = _same_dirs(dirs)
        self._current = jobs[0][1]  # before the thread starts: a cell run right after sees it training
        self.error = None
        self.message.value = ""
        self._stop.clear()
        self._set_running(True)
        self._thread = threading.Thread(target=self._work, args=(jobs,), daemon=True, name="rx-train")
        self._thread.start()

    def _set_running(self, running: bool) -> None:
        self.start_button.disabled = self.resume_button.disabled = running
        self.stop_button.disabled = not running

    def _work(self, jobs: list) -> None:
        try:
            for i, (spec, d, recipe, data, resume) in enumerate(jobs):
                if self._stop.is_set():  # Stop came between two nets
                    self.progress.value = f"stopped before run {i + 1}/{len(jobs)} {self._name(d)}; Resume continues"
                    return
                run_recipe = recipe or RunDir(d).config().recipe
                total, batch = run_recipe.max_iters, run_recipe.batch_size
                tag = f"run {i + 1}/{len(jobs)} {self._name(d)}"
                self._current = d
                self.progress.value = f"{tag}: starting…"
                left = sum((j[2].max_iters if j[2] else 0) for j in jobs[i + 1:])

                def on_metrics(row: dict, tag=tag, total=total, batch=batch, left=left) -> None:
                    if row.get("kind") == "train":
                        speed = row["images_per_s"]
                        eta = (total - row["iter"] + left) * batch / max(speed, 1e-9)
                        self.progress.value = (
                            f"{tag}: iteration {row['iter']:,} / {total:,} · {speed:,.0f} images/s · "
                            f"train error {100 * row['train_error']:.1f} % · ETA {_fmt_time(eta)}")
                    if row.get("kind") == "eval" or time.monotonic() - self._last_draw >= self.update_every:
                        self.redraw()

                self.redraw()  # the new run's (empty) traces appear at once
                result = train(spec, data, recipe, d, device=self.device, amp=self.amp, compile=self.compile,
                               resume=resume, progress=False, should_stop=lambda it: self._stop.is_set(),
                               on_metrics=on_metrics)
                self.redraw()
                if not result.finished:
                    self.progress.value = (f"{tag}: stopped at iteration {result.iteration:,} / {total:,}; "
                                           "checkpoint saved, Resume continues")
                    return
            else:
                self.progress.value = "done: " + " · ".join(self._status(d) for _, d, *_ in jobs)
        except Exception as e:  # noqa: BLE001 - shown in the widget as one line, never a traceback
            self._fail(one_line(e))
        finally:
            self._set_running(False)
