"""Driving a real JupyterLab in headless Chromium (Playwright), for the browser tests.

One JupyterLab (free port, a token, a temporary root, isolated settings) and one Chromium serve
every browser test of the session: the fixtures ``lab`` and ``browser`` in tests/conftest.py
(session scope) start them once, from `start_lab` and `start_browser` here. A test opens a
notebook in a new tab (`open_notebook`), works it as a student does, and closes it with
`close_notebook` (the tab, and the notebook's kernel, so nothing keeps training). Screenshots go
to ``artifacts/`` (`shoot`). Needs Chromium: Debian's ``chromium`` package, or any Chrome at
``$RESNET_EXPLORER_CHROMIUM``. Playwright only drives it; no browser is downloaded.
"""

from __future__ import annotations

import contextlib
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
from typing import Iterator

import nbformat
import pytest

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
WAIT = 180_000  # ms: generous, the machine is shared


def code_notebook(*sources: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def chromium_path() -> str:
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

    def shutdown(self, name: str | None = None) -> None:
        """Shut down the kernel of notebook ``name`` (every kernel without a name)."""
        for session in self.api("sessions"):
            if name is None or name in (session.get("path"), (session.get("notebook") or {}).get("path")):
                self.api(f"sessions/{session['id']}", "DELETE")


def _lab_env(home: Path, shares: list[str]) -> dict[str, str]:
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_PATH": os.pathsep.join(shares), "JUPYTER_PLATFORM_DIRS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",  # tiny nets on a shared machine
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RESNET_EXPLORER_SMOKE", None)
    return env


@contextlib.contextmanager
def start_lab(base: Path) -> Iterator[Lab]:
    """A JupyterLab server of its own under ``base``; stopped on exit."""
    root, home = base / "root", base / "home"
    root.mkdir()
    for name, values in SETTINGS.items():
        path = home / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    shares = jupyter_share_dirs()
    app_dir = next((Path(d) / "lab" for d in shares if (Path(d) / "lab" / "static").is_dir()), None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if app_dir is not None:
        cmd.append(f"--LabApp.app_dir={app_dir}")
    log_path = base / "jupyterlab.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_lab_env(home, shares), cwd=root)
        try:
            _wait_for_lab(proc, f"http://127.0.0.1:{port}", token, log_path)
            yield Lab(f"http://127.0.0.1:{port}", token, root)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_for_lab(proc: subprocess.Popen, url: str, token: str, log_path: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n" + log_path.read_text()[-3000:], pytrace=False)
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("JupyterLab did not answer within 180 s:\n" + log_path.read_text()[-3000:], pytrace=False)
        time.sleep(0.5)


@contextlib.contextmanager
def start_browser(chromium: str, profile: Path) -> Iterator[object]:
    """One headless Chromium (a persistent context: its tabs are the tests' pages)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT)  # conditions, not sleeps: wait long on a loaded machine
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": SIZES[0][0], "height": SIZES[0][1]})
        try:
            yield context
        finally:
            context.close()


# -- driving JupyterLab -----------------------------------------------------------------------------
KERNEL = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
IDLE = ("() => { try { return " + KERNEL + ".status === 'idle'; } catch (e) { return false; } }")
OUTPUT_TEXT = """(id) => { const nb = window.jupyterapp.shell.currentWidget.content;
  const cell = nb.widgets.find((c) => c.model.id === id);
  if (!cell || !cell.model.outputs) return null;
  return cell.model.outputs.toJSON().map((o) => o.text || (o.data && o.data['text/plain']) || '').join(''); }"""
RUN_CELL = """(id) => { const nb = window.jupyterapp.shell.currentWidget.content;
  nb.activeCellIndex = nb.widgets.findIndex((c) => c.model.id === id);
  return window.jupyterapp.commands.execute('notebook:run-cell'); }"""
# the number of points each trace of the first plotly figure inside ``sel`` draws
POINTS = """(sel) => { const gd = document.querySelector(sel + ' .js-plotly-plot');
  return gd && gd.data ? gd.data.map((t) => (t.x || []).length) : null; }"""


def open_notebook(page, lab: Lab, name: str, run: bool = True, wait: bool = True) -> None:
    """Open ``name`` in a workspace of its own and, with ``run``, Run All; with ``wait``, until every
    cell has run (the command's promise: a cell that waits for training keeps it pending)."""
    page.set_default_timeout(WAIT)
    # a workspace of its own, reset: only this notebook opens (not those of earlier tests)
    page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={lab.token}")
    wait_current(page, name)
    page.wait_for_function(IDLE)
    if run:
        run_all = "window.jupyterapp.commands.execute('notebook:run-all-cells')"
        page.evaluate(run_all if wait else f"() => {{ {run_all}; }}")


def close_notebook(page, lab: Lab, name: str, screenshot: str | None = None) -> None:
    """Shut the notebook's kernel down (nothing goes on training) and close its tab."""
    with contextlib.suppress(Exception):
        if screenshot:
            page.screenshot(path=str(ARTIFACTS / screenshot))
    with contextlib.suppress(OSError):
        lab.shutdown(name)
    page.close()


def save(page) -> None:
    """Save the notebook in front (what autosave does every two minutes) and wait until it is."""
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")


def reload(page, name: str) -> None:
    """Save, reload the page (the kernel goes on) and wait until ``name`` is drawn again: its
    outputs come from the file, its widgets from the kernel."""
    save(page)
    page.reload()
    wait_current(page, name)


def wait_current(page, name: str) -> None:
    """Until ``name`` is the notebook in front, its cells drawn (the workspace may reopen the
    notebooks of earlier tests in other tabs)."""
    page.wait_for_function(f"""() => {{ const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        return !!w && w.context && w.context.path === {json.dumps(name)} && w.content && w.content.widgets.length > 0
               && w.content.widgets[0].node.offsetParent !== null; }}""")


def wait_output(page, cell_id: str, text: str, timeout: float | None = None) -> None:
    page.wait_for_function(f"() => ({OUTPUT_TEXT})({json.dumps(cell_id)})?.includes({json.dumps(text)})",
                           **({"timeout": timeout} if timeout is not None else {}))


def output_text(page, cell_id: str) -> str:
    return page.evaluate(f"({OUTPUT_TEXT})({json.dumps(cell_id)})") or ""


def run_cell(page, cell_id: str) -> None:
    page.evaluate(f"({RUN_CELL})({json.dumps(cell_id)})")


def points(page, sel: str) -> list[int] | None:
    return page.evaluate(f"({POINTS})({json.dumps(sel)})")


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
