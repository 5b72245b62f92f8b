"""The widgets in a real browser: JupyterLab + headless Chromium (Playwright).

One JupyterLab of its own (free port, a token, a temporary root, isolated settings) for
the module; each test opens a notebook in it, runs it and works the widgets as a student
does, at 1280×800 and at 1920×1080:

- the builder: a block count typed into conv3_x recounts to ``count(spec).params``; every
  preset shows its own depth (ResNet-50: 50, not 34); VGG's residual toggle is disabled
  with its reason; a custom net named ResNet-101 again when its blocks match; diagram
  labels never overlap and table numbers never wrap;
- notebook 03 itself (in cpu mode, shrunk to two tiny nets by an injected cell, as
  papermill would): every cell runs while the dashboard trains, Stop during the run leaves
  a checkpoint below the recipe's end, Resume finishes it, the later cells read the
  finished runs; after a save, a kernel shutdown and a reload, the dashboard's output says
  "re-run this cell to reconnect";
- the layer-response view: plain and residual nets of one depth in two colours, Add keeps
  the current choice.

Screenshots go to ``artifacts/`` (``builder-1280x800.png``, ``dashboard-1920x1080.png`` …),
also when a test fails. Needs Chromium: Debian's ``chromium`` package (``bash quickstart.sh
test`` installs it when run as root), or any Chrome at ``$RESNET_EXPLORER_CHROMIUM``.
Playwright only drives it; no browser is downloaded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from resnet_explorer import count, get_spec
from resnet_explorer.recipes import get_recipe
from resnet_explorer.runs import RunDir
from resnet_explorer.widgets import PRESETS, RECONNECT, controls_for

pytestmark = pytest.mark.slow  # run the fast part alone with: pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
SIZES = [(1280, 800), (1920, 1080)]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
SETTINGS = {  # JupyterLab settings for the test: no news pop-up, every cell rendered (no windowing)
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
ITERS = 300  # notebook 03's shrunk runs: long enough to press Stop in the middle (about 20 it/s here)
WAIT = 180_000  # ms: generous, the machine is shared


def code_notebook(*sources: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium executable (checked before JupyterLab is started)."""
    path = os.environ.get("RESNET_EXPLORER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("the browser test needs Chromium: apt-get install chromium (bash quickstart.sh test "
                    "does this as root), or set RESNET_EXPLORER_CHROMIUM=/path/to/chrome", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jupyter_share_dirs() -> list[str]:
    """The share/jupyter folders of the prefixes holding JupyterLab and the widget extensions
    (the same as sys.prefix's in a plain venv; found from the packages themselves otherwise)."""
    import anywidget
    import jupyterlab
    import jupyterlab_widgets
    import plotly

    dirs = []
    for mod in (jupyterlab, jupyterlab_widgets, anywidget, plotly):
        for parent in Path(mod.__file__).resolve().parents:
            if (parent / "share" / "jupyter").is_dir():
                dirs.append(str(parent / "share" / "jupyter"))
                break
    return list(dict.fromkeys([str(Path(sys.prefix) / "share" / "jupyter"), *dirs]))


class Lab:
    """A running JupyterLab: its URL, token and root folder, and its REST API."""

    def __init__(self, url: str, token: str, root: Path):
        self.url, self.token, self.root = url, token, root

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium):
    """A JupyterLab server of its own for the module. Killed afterwards."""
    base = tmp_path_factory.mktemp("lab")
    root, home = base / "root", base / "home"
    root.mkdir()
    for name, values in SETTINGS.items():
        path = home / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    shares = jupyter_share_dirs()
    app_dir = next((Path(d) / "lab" for d in shares if (Path(d) / "lab" / "static").is_dir()), None)
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_PATH": os.pathsep.join(shares), "JUPYTER_PLATFORM_DIRS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",  # tiny nets on a shared machine
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RESNET_EXPLORER_SMOKE", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if app_dir is not None:
        cmd.append(f"--LabApp.app_dir={app_dir}")
    log_path = base / "jupyterlab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n" + log_path.read_text()[-3000:],
                            pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 180 s:\n" + log_path.read_text()[-3000:],
                            pytrace=False)
            time.sleep(0.5)
        yield Lab(url, token, root)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab, chromium, tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT)  # conditions, not sleeps: wait long on a loaded machine
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": SIZES[0][0], "height": SIZES[0][1]})
        yield context
        context.close()


# -- driving JupyterLab -----------------------------------------------------------------------------
KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
IDLE = ("() => { try { return " + KERNEL + ".status === 'idle'; } catch (e) { return false; } }")
OUTPUT_TEXT = """(id) => { const nb = window.jupyterapp.shell.currentWidget.content;
  const cell = nb.widgets.find((c) => c.model.id === id);
  if (!cell || !cell.model.outputs) return null;
  return cell.model.outputs.toJSON().map((o) => o.text || (o.data && o.data['text/plain']) || '').join(''); }"""


def open_notebook(page, lab: Lab, name: str, run: bool = True) -> None:
    page.set_default_timeout(WAIT)
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    wait_current(page, name)
    page.wait_for_function(IDLE)
    if run:
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


def wait_current(page, name: str) -> None:
    """Until ``name`` is the notebook in front, its cells drawn (the workspace may reopen the
    notebooks of earlier tests in other tabs)."""
    page.wait_for_function(f"""() => {{ const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        return !!w && w.context && w.context.path === {json.dumps(name)} && w.content && w.content.widgets.length > 0
               && w.content.widgets[0].node.offsetParent !== null; }}""")


def wait_output(page, cell_id: str, text: str) -> None:
    page.wait_for_function(f"() => ({OUTPUT_TEXT})({json.dumps(cell_id)})?.includes({json.dumps(text)})")


def output_text(page, cell_id: str) -> str:
    return page.evaluate(f"({OUTPUT_TEXT})({json.dumps(cell_id)})") or ""


def at_size(page, width: int, height: int) -> None:
    """Resize the window and wait until every plotly figure has re-measured its width."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_function("""() => Array.from(document.querySelectorAll(
          '.rx-builder .js-plotly-plot, .rx-dashboard .js-plotly-plot, .rx-layers .js-plotly-plot'))
        .filter((p) => p.offsetParent !== null).every((p) => {  // the widgets' figures in the notebook in front
        const svg = p.querySelector('.main-svg'); const out = p.closest('.jp-OutputArea-output');
        return svg && out && Math.abs(svg.getBoundingClientRect().width - p.getBoundingClientRect().width) < 2
               && p.getBoundingClientRect().width > 0.9 * out.getBoundingClientRect().width - 40; })""")


def shoot(page, name: str, width: int, height: int, locator=None) -> Path:
    if locator is not None:  # its top at the top of the notebook's view
        locator.first.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(300)  # one repaint after the scroll (a screenshot, not a condition)
    path = ARTIFACTS / f"{name}-{width}x{height}.png"
    page.screenshot(path=str(path))
    return path


OVERLAPS = """(sel) => { const r = Array.from(document.querySelectorAll(sel + ' .annotation-text'))
    .map((t) => [t.textContent, t.getBoundingClientRect()]).filter(([, b]) => b.width > 0);
  const hit = [];
  for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) {
    const [ta, a] = r[i], [tb, b] = r[j];
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) hit.push([ta, tb]);
  }
  const svg = document.querySelector(sel + ' .main-svg').getBoundingClientRect();
  const out = r.filter(([, b]) => b.left < svg.left - 1 || b.right > svg.right + 1 || b.top < svg.top - 1
                                  || b.bottom > svg.bottom + 1).map(([t]) => t);
  return {count: r.length, hit, out}; }"""
WRAPPED = """(sel) => Array.from(document.querySelectorAll(sel + ' td')).filter((td) => {
    const range = document.createRange(); range.selectNodeContents(td);
    return new Set(Array.from(range.getClientRects()).map((b) => Math.round(b.top))).size > 1;
  }).map((td) => td.textContent)"""


# -- the builder ------------------------------------------------------------------------------------
def test_builder_counts_names_and_draws_what_it_shows(lab, browser):
    from playwright.sync_api import expect

    spec = get_spec("cifar-resnet20")
    spec.stages[2].num_blocks = 5  # conv3_x: 3 -> 5 blocks
    expected_after = count(spec).params
    assert (count(get_spec("cifar-resnet20")).params, expected_after) == (269_722, 269_722 + 2 * 2 * (32 * 32 * 9 + 64))
    nbformat.write(nbformat.from_dict(code_notebook(
        "from resnet_explorer.widgets import ArchitectureBuilder\nbuilder = ArchitectureBuilder('cifar-resnet20')\n"
        "builder")), lab.root / "builder.ipynb")
    page = browser.new_page()
    try:
        open_notebook(page, lab, "builder.ipynb")
        params, name = page.locator(".rx-summary .rx-params"), page.locator(".rx-summary .rx-name")
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
        page.screenshot(path=str(ARTIFACTS / "builder-last.png"))
        page.close()


# -- notebook 03: the dashboard trains while the notebook goes on ----------------------------------
def notebook_03(path: Path) -> None:
    """Notebook 03 in cpu mode, shrunk by one injected cell after its parameters cell (as papermill
    injects parameters) to two tiny nets of ITERS iterations on a small synthetic set."""
    nb = nbformat.read(ROOT / "notebooks" / "03_degradation_cifar10.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(
        f'MODE = "cpu"\nDATA = "synthetic:256"\nSETTINGS["cpu"] = {{**SETTINGS["cpu"], "depths": (8,), "width": 4, '
        f'"iters": {ITERS}, "batch_size": 16, "log_every": 10, "eval_every": {ITERS}, "device": "cpu"}}')
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
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
        for session in lab.api("sessions"):
            lab.api(f"sessions/{session['id']}", "DELETE")
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
        page.screenshot(path=str(ARTIFACTS / "dashboard-last.png"))
        page.close()


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
        page.screenshot(path=str(ARTIFACTS / "layers-last.png"))
        page.close()
