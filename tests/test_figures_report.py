"""Figures and the HTML report, on hand-made run directories (no training)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import plotly
import plotly.graph_objects as go
import pytest

from resnet_explorer import get_spec
from resnet_explorer.count import CONVENTION, count
from resnet_explorer.figures import (
    DEPTH_COLORS,
    cost_bars,
    error_curves,
    gradient_norms_figure,
    layer_responses_figure,
    save_figure,
    update_error_curves,
)
from resnet_explorer.report import degradation_summary, summary_text, write_report

PLOTLYJS_MARK = f"plotly.js v{plotly.offline.get_plotlyjs_version()}"


# -- fake runs --------------------------------------------------------------------------------------
def make_run(root: Path, name: str, arch: str, train: list[float], test: list[float],
             analysis: bool = True, **spec_over) -> Path:
    """A run directory with spec, env, metrics (errors as fractions) and analysis."""
    d = root / name
    d.mkdir(parents=True)
    spec = get_spec(arch, width=4, **spec_over)
    (d / "spec.json").write_text(spec.to_json())
    (d / "env.json").write_text(json.dumps({"device_name": "cpu", "torch": "x", "seed": 0}))
    (d / "data.json").write_text(json.dumps({"arg": "synthetic"}))
    lines = []
    for i, e in enumerate(train, 1):
        lines.append({"kind": "train", "iter": 10 * i, "epoch": i / 4, "lr": 0.1, "train_loss": 1.0,
                      "train_error": e, "images_per_s": 100.0, "wall_time": 1.5 * i})
    for i, e in enumerate(test, 1):
        lines.append({"kind": "eval", "iter": 10 * i, "epoch": i / 4, "lr": 0.1, "test_loss": 1.0,
                      "test_error": e, "wall_time": 1.5 * i + 0.1})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if analysis:
        n = spec.depth - 2
        stds = [1.0 + ((7 * i) % 5) / (2 if spec.residual else 1) for i in range(n)]
        grads = [[f"layer{i}", 10.0 ** (-i / 4)] for i in range(n)] + [["fc", 0.5]]
        (d / "analysis.json").write_text(json.dumps({
            "iteration": 10 * len(train),
            "layer_responses": [{"name": f"conv{i}.bn1", "std": s} for i, s in enumerate(stds)],
            "gradient_norms": {"init": grads, "final": [[k, v * 2] for k, v in grads]},
        }))
    return d


RUNS = {  # name: (arch, train errors, test errors) — the paper's picture: plain degrades
    "plain-20": ("cifar-plain20", [0.5, 0.2, 0.10], [0.55, 0.25, 0.15]),
    "plain-56": ("cifar-plain56", [0.6, 0.3, 0.20], [0.65, 0.35, 0.25]),
    "resnet-20": ("cifar-resnet20", [0.5, 0.2, 0.08], [0.55, 0.25, 0.12]),
    "resnet-56": ("cifar-resnet56", [0.5, 0.1, 0.05], [0.55, 0.15, 0.10]),
}


def make_experiment(root: Path, runs: dict = RUNS, name: str = "degradation") -> Path:
    entries = []
    for run, (arch, train, test) in runs.items():
        make_run(root, run, arch, train, test)
        spec = get_spec(arch, width=4)
        entries.append({"name": run, "dir": run, "status": "finished", "spec": spec.to_dict(), "recipe": {}})
    (root / "manifest.json").write_text(json.dumps({"name": name, "data": "synthetic", "runs": entries}))
    return root


@pytest.fixture
def exp(tmp_path) -> Path:
    return make_experiment(tmp_path / "exp")


def dirs(exp: Path) -> list[Path]:
    return [exp / n for n in RUNS]


def by_name(fig) -> dict:
    return {t.name: t for t in fig.data}


# -- Fig. 6 ---------------------------------------------------------------------------------------
def test_error_curves_styles_and_values(exp):
    fig = error_curves(dirs(exp))
    assert isinstance(fig, go.Figure)
    traces = by_name(fig)
    assert set(traces) == {f"{n} {k}" for n in RUNS for k in ("train", "test")}
    train, test = traces["plain-56 train"], traces["plain-56 test"]
    assert train.line.dash == "dash" and test.line.dash == "solid"
    assert test.line.width > train.line.width
    assert list(train.y) == pytest.approx([60.0, 30.0, 20.0])
    assert list(test.y) == pytest.approx([65.0, 35.0, 25.0])
    assert list(train.x) == [10, 20, 30]
    # plain on the left panel, ResNet on the right; same colour for the same depth
    assert train.xaxis == "x" and traces["resnet-56 train"].xaxis == "x2"
    assert train.line.color == traces["resnet-56 test"].line.color == DEPTH_COLORS[56]
    assert traces["plain-20 test"].line.color == DEPTH_COLORS[20]
    assert [a.text for a in fig.layout.annotations] == ["plain", "ResNet"]


def test_error_curves_x_epoch_and_bad_x(exp):
    fig = error_curves(dirs(exp), x="epoch")
    assert list(by_name(fig)["plain-20 train"].x) == [0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="x must be one of"):
        error_curves(dirs(exp), x="loss")


def test_same_depth_runs_get_distinct_colours(tmp_path):
    for option in "ABC":
        make_run(tmp_path, f"resnet-20-{option}", "cifar-resnet20", [0.3], [0.4], shortcut=option)
    make_run(tmp_path, "plain-20", "cifar-plain20", [0.3], [0.4])
    fig = error_curves([tmp_path / n for n in ("plain-20", "resnet-20-A", "resnet-20-B", "resnet-20-C")])
    colours = {t.name.split()[0]: t.line.color for t in fig.data}
    assert len({colours[f"resnet-20-{o}"] for o in "ABC"}) == 3
    assert colours["plain-20"] == colours["resnet-20-A"] == DEPTH_COLORS[20]


def test_widget_and_live_update(exp):
    run_dirs = dirs(exp)
    w = error_curves(run_dirs, widget=True)
    assert isinstance(w, go.FigureWidget)
    with open(exp / "plain-20" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "iter": 40, "epoch": 1.0, "train_error": 0.05,
                            "wall_time": 6.0}) + "\n")
    make_run(exp, "plain-32", "cifar-plain32", [0.4], [0.45])
    update_error_curves(w, run_dirs + [exp / "plain-32"])
    traces = by_name(w)
    assert list(traces["plain-20 train"].y) == pytest.approx([50.0, 20.0, 10.0, 5.0])
    assert list(traces["plain-32 test"].y) == pytest.approx([45.0])
    assert traces["plain-32 test"].line.color == DEPTH_COLORS[32]
    fig = error_curves(run_dirs)  # a plain Figure updates too
    update_error_curves(fig, run_dirs)
    assert list(by_name(fig)["plain-20 train"].x)[-1] == 40


# -- Fig. 7 and gradients ----------------------------------------------------------------------------
def test_layer_responses(exp):
    (exp / "plain-56" / "analysis.json").unlink()  # skipped, not an error
    fig = layer_responses_figure(dirs(exp))
    names = {t.name for t in fig.data}
    assert names == {"plain-20", "resnet-20", "resnet-56"}
    stds = json.loads((exp / "resnet-20" / "analysis.json").read_text())["layer_responses"]
    top, bottom = [t for t in fig.data if t.name == "resnet-20"]
    assert top.yaxis == "y" and bottom.yaxis == "y2"
    assert list(top.x) == list(range(1, len(stds) + 1))
    assert list(top.y) == [s["std"] for s in stds]
    assert list(bottom.y) == sorted(top.y, reverse=True)
    assert top.showlegend and not bottom.showlegend
    assert [t.line.dash for t in fig.data if t.name == "plain-20"] == ["dash", "dash"]
    assert isinstance(layer_responses_figure(dirs(exp), widget=True), go.FigureWidget)


def test_fig7_keeps_the_bulk_in_view_when_a_few_layers_are_far_above(exp):
    """plain-56's first layers (8.7) beside a band near 1: the axis ends above the band, and a
    note names what is off the scale; without such outliers the axis is plotly's own."""
    path = exp / "plain-56" / "analysis.json"
    a = json.loads(path.read_text())
    a["layer_responses"][0]["std"] = 30.0  # the fixture's band reaches 5
    path.write_text(json.dumps(a))
    fig = layer_responses_figure(dirs(exp))
    top = fig.layout.yaxis.range[1]
    assert top < 30 and top == fig.layout.yaxis2.range[1]
    bulk = sorted(l["std"] for d in dirs(exp) for l in json.loads((d / "analysis.json").read_text())["layer_responses"])
    assert top >= bulk[-2] * 0.5 and all(v <= top for v in bulk[:-1][: int(0.95 * len(bulk))])
    note = [x.text for x in fig.layout.annotations if "off the scale" in x.text]
    assert note and "plain-56 conv0.bn1 30.00" in note[0]
    a["layer_responses"][0]["std"] = 1.0
    path.write_text(json.dumps(a))
    assert layer_responses_figure(dirs(exp)).layout.yaxis.range is None


@pytest.mark.parametrize("which,factor", [("init", 1), ("final", 2)])
def test_gradient_norms(exp, which, factor):
    fig = gradient_norms_figure(dirs(exp), which)
    assert fig.layout.yaxis.type == "log"
    t = by_name(fig)["plain-20"]
    assert t.line.dash == "dash" and by_name(fig)["resnet-20"].line.dash == "solid"
    assert len(t.y) == 19 and t.text[-1] == "fc" and list(t.x)[0] == 1
    assert t.y[1] == pytest.approx(factor * 10 ** -0.25)
    with pytest.raises(ValueError):
        gradient_norms_figure(dirs(exp), "middle")


def test_cost_bars():
    fig = cost_bars(["vgg-19", "plain34", get_spec("resnet34")])
    params, macs = fig.data
    assert list(params.x) == ["vgg-19", "plain34", "resnet34"]
    assert params.name == "params (M)" and macs.name == "multiply-adds (G)"
    assert params.y[2] == pytest.approx(count(get_spec("resnet34")).params / 1e6)
    assert macs.y[0] > macs.y[1] > 3
    assert CONVENTION in fig.layout.title.text
    small = cost_bars([get_spec("cifar-resnet20")], widget=True)
    assert isinstance(small, go.FigureWidget) and small.data[1].name == "multiply-adds (M)"


# -- saving ----------------------------------------------------------------------------------------
def test_save_html(exp, tmp_path):
    out = save_figure(error_curves(dirs(exp)), tmp_path / "f" / "curves.html")
    text = out.read_text()
    assert text.count(PLOTLYJS_MARK) == 1 and "plain-56 train" in text
    with pytest.raises(ValueError, match="html or .png"):
        save_figure(go.Figure(), tmp_path / "x.svg")


def test_save_png(exp, tmp_path):
    out = save_figure(error_curves(dirs(exp)), tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_kaleido_is_a_clear_error(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ValueError, match="PNG export needs kaleido: pip install"):
        save_figure(go.Figure(), tmp_path / "x.png")


# -- the summary -------------------------------------------------------------------------------------
def test_summary_numbers_and_orderings_hold(exp):
    s = degradation_summary(dirs(exp))
    rows = {r["name"]: r for r in s["runs"]}
    p56 = rows["plain-56"]
    assert p56["depth"] == 56 and p56["residual"] is False
    assert p56["params"] == count(get_spec("cifar-plain56", width=4)).params
    assert p56["macs"] == count(get_spec("cifar-plain56", width=4)).macs
    assert p56["final_train_error"] == 0.20 and p56["best_train_error"] == 0.20
    assert p56["final_test_error"] == 0.25 and p56["best_test_error"] == 0.25
    assert p56["iterations"] == 30 and p56["wall_time"] == pytest.approx(4.6)
    # Table 6's 6.97 % is the 16-wide ResNet-56's: for this 4-wide one it is a labelled reference
    assert rows["resnet-56"]["paper_test_error"] is None and p56["paper_test_error"] is None
    assert rows["resnet-56"]["paper_reference"] == "6.97 % is ResNet-56, option A's (Table 6); this net: 4 wide, not 16"
    assert p56["paper_reference"] is None  # no paper prints a plain CIFAR net's error
    claims = [o["claim"] for o in s["orderings"]]
    assert claims == ["plain-56 > plain-20", "ResNet-56 < plain-56", "ResNet-56 <= ResNet-20"]
    assert [o["holds"] for o in s["orderings"]] == [True, True, True]
    assert s["orderings"][0]["values"] == {"plain-56": 0.20, "plain-20": 0.10}
    assert [o["holds"] for o in s["test_orderings"]] == [True, True, True]


def test_orderings_fail(tmp_path):
    runs = {  # no degradation, and a deeper ResNet that trains worse
        "plain-20": ("cifar-plain20", [0.5, 0.30], [0.5, 0.3]),
        "plain-56": ("cifar-plain56", [0.5, 0.10], [0.5, 0.1]),
        "resnet-20": ("cifar-resnet20", [0.5, 0.05], [0.5, 0.05]),
        "resnet-56": ("cifar-resnet56", [0.05, 0.20], [0.5, 0.2]),
    }
    exp = make_experiment(tmp_path, runs)
    s = degradation_summary([exp / n for n in runs])
    assert [o["holds"] for o in s["orderings"]] == [False, False, False]
    assert {r["name"]: r["best_train_error"] for r in s["runs"]}["resnet-56"] == 0.05  # min, not last
    text = summary_text(s)
    assert text.count("FAILS") >= 3 and "plain-56" in text


def test_training_error_is_the_eval_mode_pass_where_the_analysis_has_one(exp):
    """The orderings use the analysis' eval-mode training error (fixed training subset) when a
    run has one, say so, and report by how much each ordering holds; a run without one, or with
    a damaged value (hostile analysis.json), falls back to the last logged training window."""
    for name, error in (("plain-20", 0.12), ("plain-56", 0.40), ("resnet-20", 0.30), ("resnet-56", 0.10)):
        path = exp / name / "analysis.json"
        a = json.loads(path.read_text())
        a["train_subset"] = {"images": 2000, "error": error, "loss": 1.0}
        path.write_text(json.dumps(a))
    s = degradation_summary(dirs(exp))
    rows = {r["name"]: r for r in s["runs"]}
    assert rows["resnet-20"]["final_train_error"] == 0.30 and rows["resnet-20"]["window_train_error"] == 0.08
    assert {r["train_measure"] for r in s["runs"]} == {"eval"}
    assert [o["holds"] for o in s["orderings"]] == [True, True, True]
    assert [round(o["margin"], 6) for o in s["orderings"]] == [0.28, 0.30, 0.20]
    text = summary_text(s)
    assert "Training error is one pass in eval mode (BN running statistics, no augmentation) over the first 2000" in text
    assert "The degradation problem: the deeper plain net fits its own training images worse" in text
    assert "Shortcuts fix it" in text and "depth helps again" in text
    html = write_report(exp).read_text()
    assert "one pass in eval mode" in html and "Shortcuts fix it" in html
    # a failing ordering still says FAILS, with a negative margin
    path = exp / "resnet-56" / "analysis.json"
    a = json.loads(path.read_text())
    a["train_subset"]["error"] = 0.35
    path.write_text(json.dumps(a))
    s = degradation_summary(dirs(exp))
    assert s["orderings"][2]["holds"] is False and round(s["orderings"][2]["margin"], 6) == -0.05
    assert "✗ FAILS   ResNet-56 <= ResNet-20" in summary_text(s)
    # damaged values: not a number, out of range, a bool -> the window, and the text says so
    for bad in ("0.1", 1.5, True, None, -0.2):
        a["train_subset"]["error"] = bad
        path.write_text(json.dumps(a))
        rows = {r["name"]: r for r in degradation_summary(dirs(exp))["runs"]}
        assert rows["resnet-56"]["final_train_error"] == 0.05 and rows["resnet-56"]["train_measure"] == "window"
    a["train_subset"] = "everything"
    path.write_text(json.dumps(a))
    s = degradation_summary(dirs(exp))
    assert "else the last logged window" in summary_text(s)


def _measured(exp: Path, errors: dict[str, float], images: int) -> dict:
    """The summary after each run's training error was measured on ``images`` training images."""
    for name, error in errors.items():
        path = exp / name / "analysis.json"
        a = json.loads(path.read_text())
        a["train_subset"] = {"images": images, "error": error, "loss": 1.0}
        path.write_text(json.dumps(a))
    return degradation_summary(dirs(exp))


def test_a_difference_within_the_noise_is_too_close_to_call(exp):
    """Three verdicts: a margin inside the measurement's noise (2 standard errors of the
    difference) is "too close to call at this budget", with the margin it would need; the same
    margins measured on many more images hold or fail; the summary, the CLI's table (the same
    text) and the HTML report say it, and a tie gets no confident explanation."""
    errors = {"plain-20": 0.300, "plain-56": 0.302, "resnet-20": 0.30, "resnet-56": 0.10}
    s = _measured(exp, errors, 100)
    # plain-56 vs plain-20: 0.2 points on 100 images each: noise 6.5 points, a tie
    first = s["orderings"][0]
    assert first["holds"] is True and first["verdict"] == "too close to call"
    assert first["noise"] == pytest.approx(((0.3 * 0.7 + 0.302 * 0.698) / 100) ** 0.5, rel=0.05)
    assert [o["verdict"] for o in s["orderings"]] == ["too close to call", "holds", "holds"]
    text = summary_text(s)
    assert "≈ too close to call at this budget plain-56 > plain-20" in text
    needs = f"{100 * 2 * first['noise']:.1f}"
    assert f"the difference, 0.2 points, is within the measurement's noise: it would need more than {needs} points" in text
    assert "The degradation problem: the deeper plain net fits" not in text  # no explanation for a tie
    assert "Shortcuts fix it" in text  # ResNet-56 < plain-56 by 20 points: decided
    html = write_report(exp).read_text()
    assert "too close to call at this budget" in html and f"more than {needs} points" in html
    # the same 0.2 points on a million images: decided (holds); a 0.2-point loss: fails
    s = _measured(exp, errors, 1_000_000)
    assert [o["verdict"] for o in s["orderings"]] == ["holds", "holds", "holds"]
    s = _measured(exp, {**errors, "plain-56": 0.298}, 1_000_000)
    assert s["orderings"][0]["verdict"] == "fails" and "✗ FAILS" in summary_text(s)
    # just inside and just outside two standard errors, on 2,000 images
    sd = ((0.3 * 0.7 + 0.34 * 0.66) / 2000) ** 0.5
    for gap, verdict in ((1.9 * sd, "too close to call"), (2.1 * sd, "holds")):
        s = _measured(exp, {**errors, "plain-56": 0.3 + gap}, 2000)
        assert s["orderings"][0]["verdict"] == verdict, (gap, s["orderings"][0])


def test_verdict_noise_and_decision():
    from resnet_explorer.verdict import TIE, decide, difference_noise, explain, standard_error

    assert standard_error(0.5, 100) == pytest.approx((0.5 * 0.5 / 100) ** 0.5)
    assert standard_error(0.0, 10) > 0  # 0 of 10 wrong is not exact
    assert standard_error(0.3, None) is None and standard_error(None, 10) is None
    assert difference_noise(0.03, 0.04) == pytest.approx(0.05) and difference_noise(0.03, None) is None
    assert [decide(m, 0.05) for m in (0.11, 0.09, -0.09, -0.11)] == ["holds", TIE, TIE, "fails"]
    assert decide(0.001, None) == "holds" and decide(None, 0.1) is None
    assert "noise unknown" in explain("holds", 0.001, None)


def test_orderings_with_missing_runs(tmp_path):
    runs = {"plain-20": RUNS["plain-20"], "resnet-20": RUNS["resnet-20"], "resnet-56": RUNS["resnet-56"]}
    exp = make_experiment(tmp_path, runs)
    (exp / "resnet-56" / "metrics.jsonl").write_text("")  # pending: no lines yet
    s = degradation_summary([exp / n for n in runs] + [tmp_path / "never-started"])
    assert [r["name"] for r in s["runs"]] == ["plain-20", "resnet-20", "resnet-56"]
    assert s["runs"][2]["final_train_error"] is None
    # one plain depth; ResNet-20 vs plain-20 is the deepest pair; one residual depth with data
    assert [o["holds"] for o in s["orderings"]] == [None, True, None]
    assert s["orderings"][1]["claim"] == "ResNet-20 < plain-20"
    assert "n/a" in summary_text(s)


def test_summary_text_table(exp):
    text = summary_text(degradation_summary(dirs(exp)))
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["run", "depth"]
    row = next(l for l in lines if l.startswith("plain-56"))
    assert "20.00" in row and "25.00" in row
    assert text.count("holds") == 6


# -- the HTML report ---------------------------------------------------------------------------------
def test_write_report(exp):
    notes = ["nets are 4 wide instead of 16", "30 iterations instead of 64k <fast>"]
    out = write_report(exp, notes=notes)
    assert out == exp / "report.html" and not (exp / "report.html.tmp").exists()
    text = out.read_text(encoding="utf-8")
    assert text.count(PLOTLYJS_MARK) == 1
    assert "nets are 4 wide instead of 16" in text and "&lt;fast&gt;" in text
    assert "degradation experiment" in text and "synthetic" in text and "cpu, torch x" in text
    for value in ("20.00", "25.00", "(6.97 % is ResNet-56, option A&#x27;s (Table 6); this net: 4 wide, not 16)",
                  f"{count(get_spec('cifar-plain56', width=4)).params:,}"):
        assert value in text
    assert "plain-56 &gt; plain-20" in text and "holds" in text and "FAILS" not in text
    for fig_marker in ("plain-56 train", "layer index (original order)", "Gradient norm per layer",
                       "multiply-adds"):
        assert fig_marker in text


def test_write_report_marks_failures_and_pending(tmp_path):
    runs = {"plain-20": ("cifar-plain20", [0.1], [0.1]), "plain-56": ("cifar-plain56", [0.05], [0.05])}
    exp = make_experiment(tmp_path / "e", runs)
    manifest = json.loads((exp / "manifest.json").read_text())
    spec = get_spec("cifar-resnet20", width=4)
    manifest["runs"].append({"name": "resnet-20", "dir": "resnet-20", "status": "pending",
                             "spec": spec.to_dict(), "recipe": {}})
    (exp / "manifest.json").write_text(json.dumps(manifest))
    out = write_report(exp, out_path=tmp_path / "r" / "out.html", title="My title")
    text = out.read_text(encoding="utf-8")
    assert "My title" in text and "FAILS" in text and "resnet-20 (pending)" in text
    assert text.count(PLOTLYJS_MARK) == 1


def test_gradient_norms_during_training_are_recorded_and_drawn(tmp_path):
    """The engine writes a "grad" line with each train line; the heatmap reads them."""
    from resnet_explorer.figures import gradient_history_figure
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.runs import read_metrics
    from resnet_explorer.train import train

    spec = get_spec("cifar-plain8", width=4)
    run = train(spec, "synthetic:256", get_recipe("test", iters=10), tmp_path / "plain-8", progress=False)
    grads = [r for r in read_metrics(run.run_dir) if r["kind"] == "grad"]
    assert [g["iter"] for g in grads] == [5, 10]
    assert list(grads[0]["norms"])[:2] == ["conv1.0.conv", "conv2_x.0.conv1"]
    assert list(grads[0]["norms"])[-1] == "fc" and len(grads[0]["norms"]) == 8
    assert all(v > 0 for v in grads[0]["norms"].values())
    fig = gradient_history_figure([run.run_dir, tmp_path / "missing"])
    heat = fig.data[0]
    assert len(fig.data) == 1 and list(heat.x) == [5, 10] and len(heat.z) == 8
    import math

    assert heat.z[-1][1] == pytest.approx(math.log10(grads[1]["norms"]["fc"]))


def test_a_run_evaluated_once_still_shows_its_test_error(tmp_path):
    """A short run has one test evaluation: drawn as a line alone it would be invisible."""
    from resnet_explorer import get_spec
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.train import train
    from resnet_explorer.figures import error_curves

    run = tmp_path / "r"
    train(get_spec("cifar-resnet8", width=4), "synthetic:128", get_recipe("test", iters=4), run, device="cpu", progress=False)
    test = [t for t in error_curves([run]).data if t.meta and t.meta.get("kind") == "test"]
    assert len(test) == 1 and len(test[0].x) == 1 and "markers" in test[0].mode
