"""The widgets in a real browser: JupyterLab + headless Chromium (Playwright).

One JupyterLab and one Chromium for the whole session (the ``lab`` and ``browser`` fixtures of
tests/conftest.py, driven through tests/browser_support.py); each test opens a notebook in a tab
of its own, works the widgets as a student does, and shuts its kernel down:

- the builder: a block count typed into conv3_x recounts to ``count(spec).params``; every
  preset shows its own depth (ResNet-50: 50, not 34); VGG's residual toggle is disabled
  with its reason; a custom net named ResNet-101 again when its blocks match; diagram
  labels never overlap and table numbers never wrap; after a page reload the diagram and the
  summary show the same net;
- the dashboard: a page reload mid-run draws every point so far within 5 s and goes on
  updating; the dashboard cell run again during training adopts the training (one thread,
  said on screen); notebook 03 in smoke mode under Run All: Stop stops it within 5 s while the
  cell waits;
- notebook 03 itself (in cpu mode, shrunk to two tiny nets by an injected cell, as
  papermill would): every cell runs while the dashboard trains, Stop during the run leaves
  a checkpoint below the recipe's end, Resume finishes it, the later cells read the
  finished runs; after a save, a kernel shutdown and a reload, the dashboard's output says
  "re-run this cell to reconnect";
- the layer-response view: plain and residual nets of one depth in two colours, Add keeps
  the current choice.

Screenshots go to ``artifacts/`` (``builder-1280x800.png``, ``dashboard-reload-1280x800.png`` …),
also when a test fails.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from browser_support import (IDLE, OVERLAPS, ROOT, SIZES, WAIT, WRAPPED, at_size, close_notebook, code_notebook,
                             open_notebook, output_text, reload, run_cell, save, shoot, wait_current, wait_output)

from resnet_explorer import count, get_spec
from resnet_explorer.recipes import get_recipe
from resnet_explorer.runs import RunDir, read_metrics
from resnet_explorer.widgets import PRESETS, RECONNECT, controls_for

pytestmark = pytest.mark.slow  # run the fast part alone with: pytest -m 'not slow'

ITERS = 600  # notebook 03's shrunk runs: long enough to press Stop in the middle after Run All, under load too
LONG = 100_000  # iterations of a run that a test stops: it never ends by itself


def builder_page(lab, browser, name: str, preset: str):
    """A tab with a notebook of one cell, a builder opened on ``preset``, run."""
    nbformat.write(nbformat.from_dict(code_notebook(
        f"from resnet_explorer.widgets import ArchitectureBuilder\nbuilder = ArchitectureBuilder({preset!r})\nbuilder")),
        lab.root / name)
    page = browser.new_page()
    try:
        open_notebook(page, lab, name)
    except Exception:
        close_notebook(page, lab, name)
        raise
    return page


def summary(page) -> tuple:
    """The builder summary's net name and parameter count (locators)."""
    return page.locator(".rx-summary .rx-name"), page.locator(".rx-summary .rx-params")


# -- the builder ------------------------------------------------------------------------------------
def test_builder_counts_names_and_draws_what_it_shows(lab, browser):
    from playwright.sync_api import expect

    spec = get_spec("cifar-resnet20")
    spec.stages[2].num_blocks = 5  # conv3_x: 3 -> 5 blocks
    expected_after = count(spec).params
    assert (count(get_spec("cifar-resnet20")).params, expected_after) == (269_722, 269_722 + 2 * 2 * (32 * 32 * 9 + 64))
    page = builder_page(lab, browser, "builder.ipynb", "cifar-resnet20")
    try:
        name, params = summary(page)
        expect(params).to_have_text("269,722")
        field = page.locator(".rx-num_blocks-conv3_x input")
        expect(field).to_have_value("3")
        field.fill("5")
        field.press("Enter")
        expect(params).to_have_text(f"{expected_after:,}")
        expect(name).to_have_text("custom-resnet24")
        expect(page.locator(".rx-family select")).to_have_value("custom")
        field.fill("3")
        field.press("Enter")
        expect(name).to_have_text("cifar-resnet20")
        expect(page.locator(".rx-family select")).to_have_value("CIFAR (6n+2)")

        # every preset shows its own family, depth and n (ResNet-50: depth 50, not 34)
        depth, n = page.locator(".rx-depth select"), page.locator(".rx-n select")
        for preset in PRESETS:
            page.locator(".rx-preset select").select_option(preset)
            expect(name).to_have_text(preset)
            c = controls_for(get_spec(preset))
            expect(depth).to_have_value(str(c.depth) if c.depth else "—")
            expect(n).to_have_value(f"{c.n} ({6 * c.n + 2} layers)" if c.n else "—")
            expect(params).to_have_text(f"{count(get_spec(preset)).params:,}")

        # VGG-E has no blocks: residual / plain is disabled, and the builder says why
        page.locator(".rx-preset select").select_option("vgg-e")
        expect(page.locator(".rx-residual button").first).to_be_disabled()
        expect(page.locator(".rx-reasons")).to_contain_text("no blocks to add shortcuts to")
        expect(page.locator(".rx-summary")).not_to_contain_text("residual, option")

        # ResNet-101, a block count changed and put back: custom, then ResNet-101 again
        page.locator(".rx-preset select").select_option("resnet101")
        expect(params).to_have_text("44,549,160")
        blocks = page.locator(".rx-num_blocks-conv4_x input")
        blocks.fill("5")
        blocks.press("Enter")
        expect(page.locator(".rx-family select")).to_have_value("custom")
        expect(depth).to_be_disabled()
        blocks.fill("23")
        blocks.press("Enter")
        expect(page.locator(".rx-family select")).to_have_value("ImageNet (Table 1)")
        expect(depth).to_have_value("101")
        expect(name).to_have_text("resnet101")
        expect(params).to_have_text("44,549,160")

        # the layout: diagram labels never overlap nor leave the figure, table numbers never wrap
        for width, height in SIZES:
            for preset in ("resnet152", "vgg-e"):  # the widest labels of the ImageNet nets, and VGG's
                page.locator(".rx-preset select").select_option(preset)
                expect(name).to_have_text(preset)
                at_size(page, width, height)
                labels = page.evaluate(OVERLAPS, ".rx-diagram")
                assert labels["count"] > 10 and labels["hit"] == [] and labels["out"] == [], (preset, width, labels)
                assert page.evaluate(WRAPPED, ".rx-builder") == [], (preset, width)
            page.locator(".rx-preset select").select_option("resnet50")
            expect(name).to_have_text("resnet50")
            at_size(page, width, height)
            shoot(page, "builder", width, height, page.locator(".rx-builder"))
            shoot(page, "builder-diagram", width, height, page.locator(".rx-summary"))
    finally:
        close_notebook(page, lab, "builder.ipynb", "builder-last.png")


def test_builder_after_a_reload_draws_the_net_its_summary_names(lab, browser):
    """A page reload redraws the builder from the kernel: the diagram is the net the summary
    names (it used to come back as the net first displayed)."""
    from playwright.sync_api import expect

    page = builder_page(lab, browser, "builder-reload.ipynb", "resnet34")
    try:
        name, params = summary(page)
        expect(name).to_have_text("resnet34")
        page.locator(".rx-preset select").select_option("resnet50")
        expect(name).to_have_text("resnet50")
        expect(page.locator(".rx-diagram .gtitle")).to_contain_text("resnet50")
        reload(page, "builder-reload.ipynb")
        expect(name).to_have_text("resnet50")
        title = page.locator(".rx-diagram .gtitle")
        expect(title).to_contain_text("resnet50")
        expect(title).to_contain_text(f"{params.inner_text()} parameters")
        assert params.inner_text() == f"{count(get_spec('resnet50')).params:,}"
        expect(page.locator("li.rx-paper")).to_have_count(3)  # Table 1 and Table 3 numbers of ResNet-50 B
        at_size(page, *SIZES[0])
        shoot(page, "builder-reload", *SIZES[0], page.locator(".rx-summary"))
    finally:
        close_notebook(page, lab, "builder-reload.ipynb", "builder-reload-last.png")


def dashboard_notebook(path: Path, out: str) -> None:
    """A dashboard of two tiny nets that never finish by themselves, started in the next cell."""
    nbformat.write(nbformat.from_dict(code_notebook(
        "from resnet_explorer import get_spec\nfrom resnet_explorer.widgets import TrainingDashboard\n"
        "dashboard = TrainingDashboard([get_spec('cifar-plain8', width=4), get_spec('cifar-resnet8', width=4)], "
        f"data='synthetic:256', recipe='test', iters={LONG}, out={out!r}, device='cpu', update_every=0.5)\n"
        "dashboard",
        "dashboard.start()",
        "import threading\nprint(sum(t.name == 'rx-train' and t.is_alive() for t in threading.enumerate()), "
        "'training threads')")), path)


# the points of cifar-plain8's training-error curve in the dashboard's chart, as drawn
TRAIN_POINTS = """() => { const gd = document.querySelector('.rx-dashboard .js-plotly-plot');
  const t = gd && gd.data ? gd.data.find((t) => t.name === 'cifar-plain8 train') : null;
  return t ? (t.x || []).length : 0; }"""


def _train_rows(run: Path) -> int:
    return sum(r["kind"] == "train" for r in read_metrics(run)) if (run / "metrics.jsonl").exists() else 0


def test_a_reload_mid_run_redraws_every_point_so_far_and_keeps_updating(lab, browser):
    from playwright.sync_api import expect

    dashboard_notebook(lab.root / "reload.ipynb", "reload-runs")
    run = lab.root / "reload-runs" / "cifar-plain8"
    page = browser.new_page()
    try:
        open_notebook(page, lab, "reload.ipynb")
        expect(page.locator(".rx-progress")).to_contain_text(re.compile(r"iteration ([3-9]\d|[\d,]{3,}) /"))  # >= 30
        before = _train_rows(run)  # every point the chart must show again
        reload(page, "reload.ipynb")
        start = time.monotonic()
        page.wait_for_selector(".rx-dashboard .js-plotly-plot")  # the page has drawn the widget again
        drawn = time.monotonic()
        page.wait_for_function(f"(n) => ({TRAIN_POINTS})() >= n", arg=before, timeout=60_000)
        took = time.monotonic() - drawn
        # JupyterLab's own restoring of the widgets (about 1.5 s on an idle 2-core machine, 3-6 s
        # under a load of 10) is not the chart's: the chart is timed from the widget drawn again
        assert took < 5, f"{before} points {took:.1f} s after the widget (and {drawn - start:.1f} s before it)"
        shown = page.evaluate(f"({TRAIN_POINTS})()")
        assert shown >= before > 5, (shown, before)
        page.wait_for_function(f"(n) => ({TRAIN_POINTS})() > n", arg=shown, timeout=60_000)  # still updating
        at_size(page, *SIZES[0])
        shoot(page, "dashboard-reload", *SIZES[0], page.locator(".rx-dashboard"))
        page.locator("button.rx-stop").click()
        expect(page.locator(".rx-progress")).to_contain_text("stopped at iteration")
    finally:
        close_notebook(page, lab, "reload.ipynb", "dashboard-reload-last.png")


def test_the_dashboard_cell_run_again_during_training_adopts_it(lab, browser):
    """One training thread per out folder: the new dashboard shows the training, says so, and its
    Stop stops it; Start in it starts no second thread."""
    from playwright.sync_api import expect

    dashboard_notebook(lab.root / "again.ipynb", "again-runs")
    page = browser.new_page()
    try:
        open_notebook(page, lab, "again.ipynb")
        wait_output(page, "cell-2", "1 training threads")
        expect(page.locator(".rx-progress")).to_contain_text("iteration")
        run_cell(page, "cell-0")  # the dashboard cell again, while its nets train
        message = page.locator(".rx-dashboard .rx-info")
        expect(message).to_contain_text("adopted the training already running into")
        expect(page.locator(".rx-dashboard")).to_have_count(1)
        expect(page.locator(".rx-progress")).to_contain_text("iteration")
        run_cell(page, "cell-1")  # and Start again
        run_cell(page, "cell-2")
        page.wait_for_function(IDLE)
        wait_output(page, "cell-2", "1 training threads")
        at_size(page, *SIZES[0])
        shoot(page, "dashboard-adopted", *SIZES[0], page.locator(".rx-dashboard"))
        page.locator("button.rx-stop").click()
        expect(page.locator(".rx-progress")).to_contain_text("stopped at iteration")
        run_cell(page, "cell-2")
        page.wait_for_function(IDLE)
        wait_output(page, "cell-2", "0 training threads")
    finally:
        close_notebook(page, lab, "again.ipynb", "dashboard-adopted-last.png")


def test_run_all_in_smoke_mode_stop_stops_within_5_s(lab, browser):
    """Notebook 03 in smoke mode under Run All waits for training in a cell; a click on Stop is
    handled while it waits, the training stops within 5 s, and the cells below run."""
    from playwright.sync_api import expect

    notebook_03(lab.root / "03-smoke.ipynb", mode="smoke", iters=LONG)
    page = browser.new_page()
    try:
        open_notebook(page, lab, "03-smoke.ipynb", wait=False)  # Run All ends only after the Stop below
        progress = page.locator(".rx-progress")
        expect(progress).to_contain_text("run 1/2 cifar-plain8: iteration")
        assert page.evaluate(IDLE) is False  # the smoke cell waits: the kernel is busy
        page.locator("button.rx-stop").click()
        start = time.monotonic()
        expect(progress).to_contain_text("stopped at iteration", timeout=60_000)
        took = time.monotonic() - start
        assert took < 5, f"the training stopped {took:.1f} s after the click"
        wait_output(page, "03-09c", "0 of 2 runs finished")  # the wait ended; the next cells ran
        out = lab.root / "runs" / "03_degradation_cifar10" / "smoke"
        assert 0 < RunDir(out / "cifar-plain8").iteration() < LONG
        at_size(page, *SIZES[0])
        shoot(page, "dashboard-run-all-stop", *SIZES[0], page.locator(".rx-dashboard"))
    finally:
        close_notebook(page, lab, "03-smoke.ipynb", "dashboard-run-all-stop-last.png")


# -- notebook 03: the dashboard trains while the notebook goes on ----------------------------------
def notebook_03(path: Path, mode: str = "cpu", iters: int = ITERS) -> None:
    """Notebook 03 in ``mode``, shrunk by one injected cell after its parameters cell (as papermill
    injects parameters) to two tiny nets of ``iters`` iterations on a small synthetic set."""
    nb = nbformat.read(ROOT / "notebooks" / "03_degradation_cifar10.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(
        f'MODE = "{mode}"\nDATA = "synthetic:256"\nSETTINGS[MODE] = {{**SETTINGS[MODE], "depths": (8,), "width": 4, '
        f'"iters": {iters}, "batch_size": 16, "log_every": 10, "eval_every": {iters}, "device": "cpu"}}')
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    nbformat.write(nb, path)


def test_notebook_03_trains_in_the_background_with_stop_resume_and_a_reload(lab, browser):
    from playwright.sync_api import expect

    notebook_03(lab.root / "03.ipynb")
    out = lab.root / "runs" / "03_degradation_cifar10" / "cpu"
    plain, resnet = out / "cifar-plain8", out / "cifar-resnet8"
    page = browser.new_page()
    try:
        open_notebook(page, lab, "03.ipynb")
        progress = page.locator(".rx-progress")
        # every cell runs while the first net trains: the later ones say what is still to come
        wait_output(page, "03-09c", "0 of 2 runs finished; still to come: cifar-plain8")
        wait_output(page, "03-18", "orderings")
        page.wait_for_function(IDLE)
        expect(progress).to_contain_text("run 1/2 cifar-plain8: iteration")
        assert "cifar-plain8 (starting now)" in output_text(page, "03-09c")  # written while the net trained
        expect(page.locator(".rx-offline")).to_be_hidden()  # the widget is live: no reconnect line

        # Stop during the run: the checkpoint is below the recipe's end; the second net waits
        page.locator("button.rx-stop").click()
        expect(progress).to_contain_text("stopped at iteration")
        stopped = RunDir(plain).iteration()
        assert 0 < stopped < ITERS and f"stopped at iteration {stopped} / {ITERS}" in progress.inner_text()
        assert not resnet.exists()
        # Resume finishes it, then trains the second net
        page.locator("button.rx-resume").click()
        expect(progress).to_contain_text("done:", timeout=2 * WAIT)
        assert RunDir(plain).iteration() == RunDir(resnet).iteration() == ITERS
        assert f"cifar-resnet8: {ITERS} / {ITERS} iterations (finished)" in progress.inner_text()

        # the cells that need finished runs, run again as the notebook says
        page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = nb.widgets.findIndex((c) => c.model.id === '03-09c');
            return window.jupyterapp.commands.execute('notebook:run-all-below'); }""")
        wait_output(page, "03-09c", "2 of 2 runs finished.")
        wait_output(page, "03-14", "cifar-resnet8: training error")
        page.wait_for_function(IDLE)
        for width, height in SIZES:
            at_size(page, width, height)
            for field in (".rx-out input", ".rx-data input"):  # the whole path is shown
                assert page.locator(field).evaluate("e => e.scrollWidth <= e.clientWidth"), (field, width)
            shoot(page, "dashboard", width, height, page.locator(".rx-dashboard"))

        # save, shut the kernel down, reload: the student is told what to do
        save(page)
        lab.shutdown("03.ipynb")
        page.reload()
        wait_current(page, "03.ipynb")
        page.wait_for_function(IDLE)
        line = page.locator(".rx-offline")
        expect(line).to_have_count(1)
        expect(line).to_be_visible()
        expect(line).to_contain_text(RECONNECT)
        for width, height in SIZES:
            at_size(page, width, height)
            shoot(page, "reload", width, height, line)
    finally:
        close_notebook(page, lab, "03.ipynb", "dashboard-last.png")


# -- the layer-response view ------------------------------------------------------------------------
def test_layer_response_view_colours_and_add(lab, browser):
    from playwright.sync_api import expect

    from resnet_explorer.train import train

    recipe = get_recipe("test", iters=20)
    for name in ("cifar-plain8", "cifar-resnet8"):
        train(get_spec(name, width=4), "synthetic:128", recipe, lab.root / "layers" / name, device="cpu",
              progress=False)
    shutil.copytree(lab.root / "layers" / "cifar-plain8", lab.root / "other" / "cifar-plain8")
    nbformat.write(nbformat.from_dict(code_notebook(
        "from resnet_explorer.widgets import LayerResponseView\n"
        "view = LayerResponseView(['layers/cifar-plain8', 'layers/cifar-resnet8'])\nview")),
        lab.root / "layers.ipynb")
    page = browser.new_page()
    try:
        open_notebook(page, lab, "layers.ipynb")
        legend = page.locator(".rx-figure .legend .traces")
        expect(legend).to_have_count(2)
        colours = page.locator(".rx-figure .scatterlayer .trace .js-line").evaluate_all(
            "ls => ls.map((l) => getComputedStyle(l).stroke)")
        assert len(colours) == 4 and len(set(colours)) == 2  # plain-8 and ResNet-8: one depth, two colours
        runs = page.locator(".rx-runs select")
        runs.select_option(["cifar-plain8"])
        page.locator(".rx-add input").fill("other")
        page.locator(".rx-add-button").click()
        expect(runs.locator("option")).to_have_count(3)
        expect(runs).to_have_attribute("size", "3")  # every run in view
        assert runs.evaluate("s => Array.from(s.selectedOptions).map((o) => o.textContent)") == [
            "layers/cifar-plain8", "other/cifar-plain8"]  # Add kept the choice
        page.locator(".rx-show").click()
        expect(legend).to_have_count(2)
        expect(page.locator(".rx-figure .legend")).to_contain_text("other/cifar-plain8")
        for width, height in SIZES:
            at_size(page, width, height)
            shoot(page, "layers", width, height, page.locator(".rx-layers"))
    finally:
        close_notebook(page, lab, "layers.ipynb", "layers-last.png")
