"""The architecture builder in a real browser: JupyterLab + headless Chromium (Playwright).

The test starts its own JupyterLab (free port, a token, a temporary root, isolated
settings), opens a notebook that shows the builder, runs it, types a new block count
for conv3_x into the widget and checks that the parameter count shown becomes
``count(spec).params``. A screenshot is kept in ``artifacts/`` (also when it fails).

Needs Chromium: Debian's ``chromium`` package (``bash quickstart.sh test`` installs it
when run as root), or any Chrome at ``$RESNET_EXPLORER_CHROMIUM``. Playwright only
drives it; no browser is downloaded.
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

import pytest

from resnet_explorer import count, get_spec

pytestmark = pytest.mark.slow  # run the fast part alone with: pytest -m 'not slow'

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "builder", "metadata": {}, "outputs": [],
         "source": ["from resnet_explorer.widgets import ArchitectureBuilder\n",
                    "builder = ArchitectureBuilder('cifar-resnet20')\n", "builder"]},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture
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


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server of its own: (base URL, token, root dir). Killed afterwards."""
    root, home = tmp_path / "root", tmp_path / "home"
    root.mkdir()
    (root / "builder.ipynb").write_text(json.dumps(NOTEBOOK))
    port, token = free_port(), secrets.token_hex(16)
    shares = jupyter_share_dirs()
    app_dir = next((Path(d) / "lab" for d in shares if (Path(d) / "lab" / "static").is_dir()), None)
    env = {**os.environ,
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_PATH": os.pathsep.join(shares), "JUPYTER_PLATFORM_DIRS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if app_dir is not None:
        cmd.append(f"--LabApp.app_dir={app_dir}")
    log = open(tmp_path / "jupyterlab.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n"
                            + (tmp_path / "jupyterlab.log").read_text()[-3000:], pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 180 s:\n"
                            + (tmp_path / "jupyterlab.log").read_text()[-3000:], pytrace=False)
            time.sleep(0.5)
        yield url, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_builder_in_jupyterlab_counts_a_changed_stage(chromium, jupyterlab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token, _ = jupyterlab
    expected_before = count(get_spec("cifar-resnet20")).params  # 269,722 (Table 6: 0.27 M)
    spec = get_spec("cifar-resnet20")
    spec.stages[2].num_blocks = 5  # conv3_x: 3 -> 5 blocks
    expected_after = count(spec).params
    assert (expected_before, expected_after) == (269_722, 269_722 + 2 * 2 * (32 * 32 * 9 + 64))

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser-builder.png"
    shot.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1300})
        page = browser.new_page()
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{url}/lab/tree/builder.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                   ".status === 'idle'")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            params = page.locator(".rx-summary .rx-params")
            expect(params).to_have_text(f"{expected_before:,}", timeout=180_000)
            field = page.locator(".rx-num_blocks-conv3_x input")
            expect(field).to_have_value("3")
            field.fill("5")
            field.press("Enter")
            expect(params).to_have_text(f"{expected_after:,}", timeout=60_000)
            expect(page.locator(".rx-summary .rx-name")).to_have_text("custom-resnet24")
            page.locator(".rx-summary").scroll_into_view_if_needed()
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.stat().st_size > 10_000
