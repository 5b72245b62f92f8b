"""The training dashboard: train nets in a background thread with live Fig. 6 error curves.

Start trains every selected spec into ``out/<name>`` one after the other; Stop makes the
running net checkpoint and return; Resume continues every unfinished run shown; Open shows
an existing run or experiment. Training never holds the kernel: the buttons work while it
runs, and a notebook's later cells ask `TrainingDashboard.finished_runs` for what is done.
Runs are known by their directory everywhere (the figure keys its traces by path), so
runs of one net in two ``out`` folders never mix. Everything about run directories is
asked of `runs`.

One ``out`` folder is trained by one thread: a dashboard made for a folder that another
dashboard is training into (the cell run again) adopts that training (`Training`): it shows
its progress and curves, its Stop stops it, and both dashboards say so; the old one no longer
trains anything of its own. A page reload redraws the curves as they are (`page.keep_state`).
A cell that awaits `wait_async` keeps the widgets working while it waits, so Stop works
during Run All.
"""

from __future__ import annotations

import copy
import html
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from ..data import as_source
from ..devices import Accel, pick_device
from ..errors import SpecError, TrainingError, UserError
from ..figures import error_curves, update_error_curves
from ..recipes import RECIPES, Recipe, get_recipe
from ..runs import RunDir, find_runs
from ..options import RunOptions
from ..spec import ArchSpec
from ..zoo import get_spec
from .builder import ArchitectureBuilder
from .controls import PRESETS
from .messages import message_html, one_line
from .page import KernelLink, Reconnecting, keep_state
from .training import Training, fmt_time, run_ends, run_progress, same_dirs, train_job

SpecSource = str | ArchSpec | ArchitectureBuilder
GIVEN = "(given)"  # the recipe dropdown's value for a Recipe object passed to the dashboard
FIELD = dict(layout=W.Layout(width="100%", min_width="0"), style={"description_width": "80px"})
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
    _by_out: ClassVar[dict[Path, Training]] = {}  # the training going on into each out folder

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
        self._training: Training | None = None  # the thread this dashboard shows (its own, or adopted)
        self._adopted_line = ""
        self._last_draw = 0.0
        self._make_widgets(sources, data, recipe, iters, out)
        self._adopt()

    def _make_widgets(self, sources: list, data: str, recipe: str | Recipe, iters: int | None, out: str) -> None:
        """The fields, buttons, progress line and figure, and their layout."""

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
        self.iters_note = W.HTML(layout=W.Layout(margin="0 0 0 84px"))
        self.recipe.observe(lambda _: self._note_iters(), names="value")
        self.iters.observe(lambda _: self._note_iters(), names="value")
        self._note_iters()
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
                                layout=W.Layout(flex="1 1 240px", min_width="0"), style={"description_width": "50px"})
        self.open_button = W.Button(description="Open", icon="folder-open")
        self.progress = W.HTML()
        self.progress.add_class("rx-progress")
        self.message = W.HTML()
        self.figure: go.FigureWidget = error_curves([], widget=True)
        self.figure.update_yaxes(range=[0, 100])  # errors in %: a fixed scale while the curves come in
        self.figure.update_xaxes(range=[0, 1])
        self.link = KernelLink(self.figure)

        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.resume_button.on_click(lambda _: self.resume())
        self.open_button.on_click(lambda _: self.open(self.open_path.value))
        fields = W.VBox([self.data, self.recipe, self.iters, self.iters_note, self.out],
                        layout=W.Layout(flex="1 1 320px", min_width="0"))
        wrap = dict(width="100%", flex_flow="row wrap", grid_gap="8px 16px")  # narrow pages: rows wrap, never overflow
        self.widget = W.VBox([
            W.HBox([self.specs, fields], layout=W.Layout(**wrap)),
            W.HBox([self.start_button, self.stop_button, self.resume_button, self.open_path, self.open_button],
                   layout=W.Layout(**wrap)),
            self.message, self.progress, self.figure, self.link,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class("rx-dashboard")
        for name, w in (("out", self.out), ("recipe", self.recipe), ("data", self.data), ("nets", self.specs)):
            w.add_class(f"rx-{name}")

    def _note_iters(self) -> None:
        """Say next to the iterations field what 0 means: the recipe's own number, given."""
        try:
            own = self._recipe_named().max_iters
        except (UserError, ValueError):
            own = None
        self.iters_note.value = ("" if own is None else
                                 f"<small style='color:#555'>0: the recipe's own, {own:,} iterations</small>")

    def _live(self) -> W.Widget:
        return self.widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- what to train ----------------------------------------------------------------------------------
    def _recipe_named(self) -> Recipe:
        """The recipe the dropdown names, before the iterations field changes it."""
        if self.recipe.value == GIVEN and self._given_recipe is not None:
            return self._given_recipe
        return get_recipe(self.recipe.value)

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
        if self._adopt():  # another dashboard trains into this out folder: shown here now
            return None
        if self.running:  # what runs goes on; the message says why nothing new started
            return self._note("training is running: Stop it before a new Start")
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
        if self._adopt():
            return None
        if self.running:  # running this cell again is safe: nothing to do until it stops
            return self._note("training is running: Resume continues runs once they stop")
        try:
            self._check_accel()
            recipe = self._recipe()
            planned = {d.resolve(): (spec, d) for spec, d in self._plan()} if self.specs.value else {}
        except (SpecError, TrainingError, ValueError) as e:
            return self._fail(one_line(e))
        jobs = []
        dirs = same_dirs([*self.runs, *(d for _, d in planned.values())])
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
        t = self._training
        if self.running and t is not None and not t.stop.is_set():
            t.stop.set()
            self._show(self.progress.value + " · stopping (writing a checkpoint)…")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until training ends (or ``timeout`` seconds); True when it has finished. This holds
        the kernel (the buttons wait meanwhile): for scripts; a notebook awaits `wait_async`."""
        if self._training is not None:
            self._training.wait(timeout)
        return not self.running

    async def wait_async(self, timeout: float | None = None) -> bool:
        """In a notebook cell, ``await dashboard.wait_async()``: wait until training ends with the
        buttons working meanwhile (Stop ends the wait, also during Run All); True when finished."""
        if self._training is not None:
            await self._training.wait_async(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._training is not None and self._training.alive

    # -- one training per out folder ----------------------------------------------------------------------
    def _out_key(self) -> Path:
        return Path(self.out.value).expanduser().resolve()

    def _adopt(self) -> bool:
        """Show the training another dashboard runs into this out folder, if any (True then):
        its curves and progress appear here, Stop stops it; the other dashboard says so."""
        t = self._by_out.get(self._out_key())
        if t is None or not t.alive or self in t.shown_on:
            return False
        before = list(t.shown_on)
        t.shown_on[:] = [self]
        self._training, self.runs = t, list(before[0].runs) if before else [t.current]
        for old in before:
            old.message.value = message_html(
                f"replaced by a newer dashboard for {t.out}: the training goes on there (its Stop stops it)", "info")
            old._set_running(False, buttons=(old,))
            old.start_button.disabled = old.resume_button.disabled = True
        self.message.value = self._adopted_line = message_html(
            f"adopted the training already running into {t.out} (started by this cell's earlier run): "
            "its progress and curves are shown here, and Stop stops it", "info")
        self.progress.value = before[0].progress.value if before else ""
        self._set_running(True, buttons=(self,))
        self.redraw()
        return True

    def open(self, run_dir: str | Path) -> None:
        """Show an existing run directory (or every run of an experiment / folder of runs)."""
        try:
            found = find_runs(run_dir)
        except UserError as e:
            return self._fail(one_line(e))
        self.runs = same_dirs([*self.runs, *found])
        try:
            status = " · ".join(self._status(d) for d in found)
        except UserError as e:  # shown (its curves are read from metrics, never the checkpoint)
            return self._fail(one_line(e))
        self.message.value = ""
        self.redraw()
        self.progress.value = html.escape(status)

    def redraw(self) -> None:
        """Make the error curves those of `runs` (one batched update), on the iterations the
        runs will reach; the page is sent the whole figure too, so a reload draws every point."""
        with self.link.lock:
            update_error_curves(self.figure, list(self.runs))
            if any(len(t.x or ()) for t in self.figure.data):  # the points so far, from 0
                self.figure.update_xaxes(autorange=True, rangemode="tozero")
            else:  # no point yet: the iterations the runs will reach
                self.figure.update_xaxes(range=[0, max(run_ends(self.runs) or [1])])
            keep_state(self.figure)
            self._last_draw = time.monotonic()

    # -- what has finished -----------------------------------------------------------------------------
    def _name(self, d: Path) -> str:
        """A run's short name; with its folder when another run shown has the same name."""
        same = [r for r in self.runs if r.name == d.name and r.resolve() != d.resolve()]
        return f"{d.parent.name}/{d.name}" if same else d.name

    def _status(self, d: Path) -> str:
        done = run_progress(d)
        if done is None:
            return f"{self._name(d)}: not started"
        it, total = done
        return f"{self._name(d)}: {it} / {total} iterations" + (" (finished)" if it >= total else "")

    def finished_runs(self, report: bool = True) -> list[Path]:
        """The runs shown that reached their recipe's end. With ``report``, prints how many,
        and which are still to come, so a notebook cell that needs finished runs says so."""
        done, waiting = [], []
        for d in self.runs:
            state = run_progress(d)
            if state is not None and state[0] >= state[1]:
                done.append(d)
                continue
            current = self._training.current if self._training is not None else None
            now = self.running and current is not None and d.resolve() == current.resolve()
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

    def _note(self, text: str) -> None:
        """An information line; after an adoption's line, which stays (what this dashboard shows)."""
        self.message.value = (self._adopted_line if self.running else "") + message_html(text, "info")

    def _show(self, progress: str) -> None:
        """The progress line, on every dashboard that shows this training."""
        for d in self._training.shown_on if self._training is not None else [self]:
            d.progress.value = progress

    def _launch(self, jobs: list, dirs: list[Path]) -> None:
        self.runs = same_dirs(dirs)
        self.error = None
        self.message.value = ""
        thread = threading.Thread(target=self._work, args=(jobs,), daemon=True, name="rx-train")
        # the first run is current before the thread starts: a cell run right after sees it training
        self._training = t = Training(thread, self._out_key(), current=jobs[0][1], shown_on=[self])
        self._by_out[t.out] = t
        self._set_running(True)
        thread.start()

    def _set_running(self, running: bool, buttons: Sequence[TrainingDashboard] | None = None) -> None:
        for d in buttons if buttons is not None else (self._training.shown_on if self._training else [self]):
            d.start_button.disabled = d.resume_button.disabled = running
            d.stop_button.disabled = not running

    def _draw_all(self) -> None:
        for d in self._training.shown_on:
            d.redraw()

    def _work(self, jobs: list) -> None:
        """The training thread: each job in turn, through the experiment runner (`training.train_job`)."""
        t = self._training
        try:
            for i, (spec, d, recipe, data, _resume) in enumerate(jobs):
                if t.stop.is_set():  # Stop came between two nets
                    return self._show(f"stopped before run {i + 1}/{len(jobs)} {self._name(d)}; Resume continues")
                run_recipe = recipe or RunDir(d).config().recipe
                total, batch = run_recipe.max_iters, run_recipe.batch_size
                tag = f"run {i + 1}/{len(jobs)} {self._name(d)}"
                t.current = d
                self._show(f"{tag}: starting…")
                left = sum((j[2].max_iters if j[2] else 0) for j in jobs[i + 1:])

                def on_metrics(row: dict, tag=tag, total=total, batch=batch, left=left) -> None:
                    if row.get("kind") == "train":
                        speed = row["images_per_s"]
                        eta = (total - row["iter"] + left) * batch / max(speed, 1e-9)
                        self._show(f"{tag}: iteration {row['iter']:,} / {total:,} · {speed:,.0f} images/s · "
                                   f"train error {100 * row['train_error']:.1f} % · ETA {fmt_time(eta)}")
                    if row.get("kind") == "eval" or time.monotonic() - self._last_draw >= self.update_every:
                        self._draw_all()

                self._draw_all()  # the new run's (empty) traces appear at once
                options = RunOptions(device=self.device, amp=self.amp, compile=self.compile, progress=False)
                finished = train_job(spec, d, recipe, data, options, lambda it: t.stop.is_set(), on_metrics)
                self._draw_all()
                if not finished:
                    return self._show(f"{tag}: stopped at iteration {RunDir(d).iteration():,} / {total:,}; "
                                      "checkpoint saved, Resume continues")
            self._show("done: " + " · ".join(self._status(d) for _, d, *_ in jobs))
        except Exception as e:  # noqa: BLE001 - shown in the widget as one line, never a traceback
            for shown in t.shown_on:
                shown._fail(one_line(e))
        finally:
            self._set_running(False)
