"""Notebook 08 (why shortcuts help) in a real browser: JupyterLab + headless Chromium.

The notebook runs in cpu mode, shrunk by one injected cell (as papermill injects parameters)
to tiny nets; then, at 1280×800: the loss landscape's 3-D surfaces are drawn with WebGL and
turn when dragged, and the lesion view's slider, moved with the keyboard, redraws the draws
at the new number of deleted blocks; the gradients' depth slider (plotly's own) moves to
another depth. Screenshots go to ``artifacts/``: ``why-landscape-1280x800.png`` (and
``why-landscape-turned-…`` after the drag), ``why-lesion-slider-1280x800.png``,
``why-depth-slider-1280x800.png``, and ``why-last.png`` (the page at the end, pass or fail).

The JupyterLab, the browser and the helpers are the session's (tests/conftest.py, tests/browser_support.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
# the session's JupyterLab and Chromium (fixtures lab and browser, tests/conftest.py) and their helpers
from browser_support import IDLE, close_notebook, open_notebook, shoot, wait_output

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1280, 800)
SHRINK = ('MODE = "cpu"\nDATA = "synthetic-demo:1000"\n'
          'SETTINGS["cpu"] = {**SETTINGS["cpu"], "depths": (8, 14), "width": 4, "iters": 30, "batch_size": 16, '
          '"device": "cpu", "images": 200, "draws": 2, "counts": (1, 2, 3), "grad_depths": (8, 14, 20), '
          '"grad_seeds": 1, "landscape": dict(span=0.5, grid=7, directions=2, n_images=100)}')
CELL_OF = "(id) => window.jupyterapp.shell.currentWidget.content.widgets.find((c) => c.model.id === id).node"
FITTED = """(sel) => { const p = document.querySelector(sel); if (!p) return false;
    const svg = p.querySelector('.main-svg'); const out = p.closest('.jp-OutputArea-output');
    return !!svg && !!out && p.getBoundingClientRect().width > 0.9 * out.getBoundingClientRect().width - 40
           && Math.abs(svg.getBoundingClientRect().width - p.getBoundingClientRect().width) < 2; }"""


def notebook_08(path: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "08_why_shortcuts_help.ipynb", as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(SHRINK)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    nbformat.write(nb, path)


EYE = ("(cell) => { const e = (CELL)(cell).querySelector('.js-plotly-plot')._fullLayout.scene._scene.getCamera().eye;"
       " return Array.isArray(e) ? Array.from(e) : [e.x, e.y, e.z]; }").replace("(CELL)", f"({CELL_OF})")
# (the first surface's camera as the user turned it: the layout only learns it after a relayout)


def box(page, cell: str, selector: str, text: str | None = None) -> dict:
    """The viewport box of the first ``selector`` (whose text is ``text``) inside cell ``cell``,
    scrolled into view."""
    return page.evaluate(f"""() => {{ const e = Array.from(({CELL_OF})({json.dumps(cell)}).querySelectorAll({json.dumps(selector)}))
        .find((e) => {json.dumps(text)} === null || e.textContent === {json.dumps(text)});
        e.scrollIntoView({{block: 'center'}}); const b = e.getBoundingClientRect();
        return {{x: b.x, y: b.y, width: b.width, height: b.height}}; }}""")


def output_of(page, cell: str):
    """A locator of cell ``cell``'s output area (for screenshots)."""
    index = page.evaluate(f"""() => window.jupyterapp.shell.currentWidget.content.widgets
        .findIndex((c) => c.model.id === {json.dumps(cell)})""")
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-OutputArea")


def test_notebook_08_landscape_turns_and_the_lesion_slider_redraws(lab, browser):
    from playwright.sync_api import expect

    notebook_08(lab.root / "08.ipynb")
    page = browser.new_page()
    try:
        page.set_viewport_size({"width": SIZE[0], "height": SIZE[1]})
        open_notebook(page, lab, "08.ipynb")
        wait_output(page, "08-22", "'ready': True")  # every cell ran, the lesion view measured
        page.wait_for_function(IDLE)
        assert "'error': None" in page.evaluate(f"() => ({CELL_OF})('08-22').innerText")

        # the landscape: WebGL surfaces, drawn (not plotly's "WebGL is not supported"), that turn when dragged
        out = page.evaluate(f"() => ({CELL_OF})('08-18').innerText")
        assert "WebGL is not supported" not in out and "plain-14 (trained loss" in out and "resnet-14 (trained loss" in out
        assert page.evaluate(f"() => ({CELL_OF})('08-18').querySelectorAll('.gl-container canvas').length") >= 1
        surfaces = output_of(page, "08-18").locator(".js-plotly-plot")
        shoot(page, "why-landscape", *SIZE, surfaces)
        before = page.evaluate(f"({EYE})('08-18')")
        b = box(page, "08-18", ".js-plotly-plot")
        x, y = b["x"] + b["width"] * 0.25, b["y"] + b["height"] * 0.55
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 120, y + 30, steps=8)
        page.mouse.up()
        page.mouse.move(5, 5)  # no hover label in the screenshot
        page.wait_for_function(f"""(eye) => {{ const e = ({EYE})('08-18');
            return Math.abs(e[0] - eye[0]) + Math.abs(e[1] - eye[1]) + Math.abs(e[2] - eye[2]) > 0.05; }}""",
                               arg=before)
        shoot(page, "why-landscape-turned", *SIZE, surfaces)

        # the lesion view: the slider redraws the draws at the new k (measured once, before)
        readout = page.locator(".rx-lesion-readout")
        expect(readout).to_contain_text("1 block deleted: plain-8")
        page.wait_for_function(FITTED, arg=".rx-lesion .js-plotly-plot")
        page.locator(".rx-lesion-slider .noUi-handle").focus()
        page.keyboard.press("ArrowRight")
        expect(readout).to_contain_text("2 blocks deleted: plain-8: has fewer than 2 blocks to delete; plain-14")
        expect(page.locator(".rx-lesion-figure .annotation-text").nth(1)).to_have_text("the draws at k = 2")
        shoot(page, "why-lesion-slider", *SIZE, page.locator(".rx-lesion"))

        # the gradients' depth slider (plotly's own: it needs no kernel)
        box(page, "08-16", ".slider-label", "20")
        page.wait_for_timeout(500)  # the scroll settles (a measurement, not a condition)
        b = box(page, "08-16", ".slider-label", "20")
        page.mouse.click(b["x"] + b["width"] / 2, b["y"] - 20)  # on the rail, above the label "20"
        page.wait_for_function(f"() => ({CELL_OF})('08-16').querySelector('.gtitle').textContent.startsWith('depth 20:')")
        shoot(page, "why-depth-slider", *SIZE, output_of(page, "08-16"))
    finally:
        close_notebook(page, lab, "08.ipynb", screenshot="why-last.png")  # the page at the end; no kernel left
