"""The report's "Why shortcuts help" section and the lesion view widget, on tiny trained runs.

The section: three studies, each with its sentence, plotly.js still inlined once; runs
without checkpoints and data the studies cannot read are one line in the section, never a
lost report. The widget: measured in the background, a slider over the blocks deleted that
only redraws, and bad input as one line in the widget.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly
import pytest

from resnet_explorer import get_spec
from resnet_explorer.report import write_report
from resnet_explorer.why.section import gradients_sentence, landscape_sentence, lesion_sentence
from resnet_explorer.widgets import RECONNECT, LesionView
from resnet_explorer.widgets.lesion_view import draws_text
from test_why import DATA, tiny_runs

NETS = {"plain-8": "cifar-plain8", "resnet-8": "cifar-resnet8"}


def manifest(root: Path, data: str = DATA) -> None:
    runs = [{"name": n, "dir": n, "status": "finished", "spec": get_spec(a, width=4).to_dict(), "recipe": {}}
            for n, a in NETS.items()]
    (root / "manifest.json").write_text(json.dumps({"name": "degradation", "data": data, "runs": runs}))


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> Path:
    root = tiny_runs(tmp_path_factory.mktemp("why-exp"), 20, NETS)
    manifest(root)
    return root


def test_the_report_has_the_section_with_its_three_studies(exp, tmp_path):
    assert "Why shortcuts help" not in write_report(exp, out_path=tmp_path / "plain.html").read_text(encoding="utf-8")
    text = write_report(exp, out_path=tmp_path / "report.html", why=True).read_text(encoding="utf-8")
    assert text.count(f"plotly.js v{plotly.offline.get_plotlyjs_version()}") == 1  # inlined once, above
    section = text[text.index("<h2>Why shortcuts help</h2>"):]
    for heading in ("Lesion: deleting blocks (Veit et al. 2016)", "Shattered gradients at initialisation",
                    "Loss landscape (Li et al. 2018)"):
        assert heading in section
    assert "Deleting one block of ResNet-8 raises its training error by" in section
    assert "gradients of neighbouring inputs point the same way in ResNet-8" in section
    assert "ResNet-8" in section and "plain-8" in section and "slices bend down" in section
    assert section.count("<figure>") == 4  # lesion, gradients, the surfaces, the slices


def test_the_section_says_what_it_could_not_measure(exp, tmp_path):
    empty = tmp_path / "untrained"
    for name, arch in NETS.items():
        (empty / name).mkdir(parents=True)
        (empty / name / "spec.json").write_text(get_spec(arch, width=4).to_json())
    manifest(empty)
    text = write_report(empty, why=True).read_text(encoding="utf-8")
    assert "no trained run yet" in text
    # data the studies cannot read: one line in the section, the rest of the report intact
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in NETS:
        (bad / name).symlink_to(exp / name)
    manifest(bad, data="imagenet:/nowhere")
    text = write_report(bad, out_path=tmp_path / "bad.html", why=True).read_text(encoding="utf-8")
    assert "<p class='na'>not measured: " in text and "imagenet:/nowhere" in text
    assert "<h2>Runs</h2>" in text


def _lesion(net: str, depth: int, residual: bool, base: float, mean: float) -> dict:
    return {"net": net, "depth": depth, "residual": residual, "base_error": base, "mean_error": mean,
            "mean_rise": mean - base}


def test_the_sentences_say_what_the_numbers_show():
    agree = lesion_sentence([_lesion("p20", 20, False, 0.4, 0.8), _lesion("r56", 56, True, 0.3, 0.35)])
    assert agree.startswith("Deleting one block of ResNet-56 raises its training error by 5.0 points")
    assert "plain-20 raises it by 40.0 points" in agree and "as Veit et al. (2016) found" in agree
    differ = lesion_sentence([_lesion("p20", 20, False, 0.4, 0.5), _lesion("r56", 56, True, 0.3, 0.35)])
    assert "does not separate them as clearly" in differ
    grads = [{"depth": 56, "residual": r, "correlation": c} for r, c in ((False, 0.01), (True, 0.8))]
    assert "hardly at all in plain-56 (0.01)" in gradients_sentence(grads)
    flat = [{"depth": 56, "residual": r, "correlation": 0.5} for r in (False, True)]
    assert "do not yet make the difference" in gradients_sentence(flat)

    def land(net, residual, concave, base, rise):
        return {"net": net, "depth": 56, "residual": residual, "concave_share": concave, "base_loss": base,
                "rise": [{"alpha": 0.1, "mean": rise / 4}, {"alpha": 0.2, "mean": rise}]}

    ours = landscape_sentence([land("p", False, 0.15, 1.7, 0.4), land("r", True, 0.0, 0.8, 0.8)])
    assert "is the smoother bowl" in ours and "rises more slowly" in ours and "not the flatter one" in ours
    theirs = landscape_sentence([land("p", False, 0.0, 1.7, 0.9), land("r", True, 0.2, 0.8, 0.3)])
    assert "is not smoother than" in theirs and "rises faster" in theirs and "also the flatter one" in theirs


# -- the lesion view ----------------------------------------------------------------------------------
def test_the_lesion_view_measures_in_the_background_and_the_slider_only_redraws(exp, monkeypatch):
    view = LesionView([exp / "plain-8", exp / "resnet-8"], counts=(1, 2, 3), draws=2, images=100)
    assert view.wait(120) and view.error is None
    assert list(view.slider.options) == [0, 1, 2, 3] and not view.slider.disabled and view.slider.value == 1
    names = [r["net"] for r in view.results]
    assert names == ["plain-8", "resnet-8"]
    assert view.results[0]["random"][0]["count"] == 1  # plain-8: one deletable block, so k = 1 only
    assert [x["count"] for x in view.results[1]["random"]] == [1, 2, 3]

    import resnet_explorer.widgets.lesion_view as lv

    monkeypatch.setattr(lv, "lesion", lambda *a, **k: pytest.fail("the slider measured again"))
    view.slider.value = 3
    res = view.results[1]["random"][-1]
    assert list(view.figure.data[-1].y) == pytest.approx([100 * e for e in res["errors"]])  # resnet-8's draws at 3
    assert list(view.figure.data[3].y) == pytest.approx([100 * res["mean"]]) and list(view.figure.data[3].x) == [3]
    assert "plain-8: has fewer than 3 blocks to delete" in view.readout.value
    view.slider.value = 0
    assert list(view.figure.data[2].y) == pytest.approx([100 * view.results[0]["base_error"]])
    assert "(intact)" in view.readout.value and view.figure.layout.annotations[1].text == "the draws at k = 0"
    assert RECONNECT in view.display_bundles()[0]["text/plain"]


def test_the_lesion_view_shows_bad_input_as_one_line(tmp_path):
    view = LesionView([tmp_path / "nothing"])
    assert view.wait(60)
    assert view.error and "not a run directory or checkpoint" in view.error and "\n" not in view.error
    assert "rx-error" in view.message.value and view.slider.disabled


def test_draws_text():
    r = {"net": "n", "base_error": 0.25, "random": [{"count": 2, "errors": [0.5, 0.7], "mean": 0.6}]}
    assert draws_text([r], 2) == "2 blocks deleted: n 60.0 % (50.0–70.0 over 2 draws)"
    assert draws_text([r], 0) == "0 blocks deleted: n 25.0 % (intact)"


@pytest.mark.slow
def test_the_why_speed_benchmark_runs_and_prints_its_table(tmp_path):
    """benchmarks/why_speed.py on the demo's four nets, 4 wide and trained for 2 iterations (its
    figures mean nothing here): the landscape's points/s beside the naive loop, with the same errors
    at every point (--skip-studies: the studies' rows are the library's calls at the CLI's defaults,
    about a minute even on these nets, each tested in test_why.py)."""
    import subprocess
    import sys

    demo = tiny_runs(tmp_path / "demo", 2, {f"{kind}-{d}": f"cifar-{kind}{d}" for kind in ("plain", "resnet")
                                              for d in (20, 56)})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "why_speed.py"
    r = subprocess.run([sys.executable, str(script), "--demo", str(demo), "--points", "2", "--repeat", "1",
                        "--skip-studies"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "round 1  ours" in r.stdout and "round 1  naive" in r.stdout
    assert "same errors at every point; ours / naive:" in r.stdout
