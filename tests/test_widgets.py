"""The widgets driven headless as a user drives them: set values, click buttons.

Assertions are on the spec, the counts and the paper's numbers, the figures' data and the
run directories the clicks write.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from resnet_explorer import ArchSpec, SpecError, count, get_spec
from resnet_explorer.diagram import PX_PER_Y, STEP, network_diagram
from resnet_explorer.figures import error_curves, update_error_curves
from resnet_explorer.recipes import get_recipe
from resnet_explorer.runs import RunDir, read_metrics
from resnet_explorer.widgets import (PRESETS, RECONNECT, ArchitectureBuilder, LayerResponseView, TrainingDashboard,
                                     controls_for, spec_from_controls)
from resnet_explorer.zoo import identify

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The nets here are tiny: one intra-op thread is several times faster than two on a
    shared 2-core machine (no oversubscription). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shown_params(b: ArchitectureBuilder) -> int:
    return int(re.search(r"class='rx-params'>([\d,]+)<", b.summary.value)[1].replace(",", ""))


def shown_macs(b: ArchitectureBuilder) -> int:
    return int(re.search(r"class='rx-macs'>([\d,]+)<", b.summary.value)[1].replace(",", ""))


# -- the architecture builder ---------------------------------------------------------------------------
def test_builder_default_shows_table6_resnet20():
    b = ArchitectureBuilder()
    assert b.spec == get_spec("cifar-resnet20")
    assert shown_params(b) == b.count.params == 269_722  # Table 6: 0.27 M
    assert shown_macs(b) == count(b.spec).macs
    assert b.family.value.startswith("CIFAR") and b.n.value == 3
    assert "CIFAR-10 test error 8.75 %" in b.paper.value  # the paper's CIFAR-10 error for ResNet-20
    stage_rows = re.findall(r"<code>(conv\d_x)</code></td><td>[^<]+</td><td[^>]*>([\d,]+)<", b.stage_table.value)
    by_stage = count(b.spec).by_stage()
    assert [(n, int(p.replace(",", ""))) for n, p in stage_rows] == [
        (n, by_stage[n]["params"]) for n in ("conv2_x", "conv3_x", "conv4_x")]


def test_every_preset_loads_with_the_counters_numbers():
    b = ArchitectureBuilder()
    for name in PRESETS:
        b.set_preset(name)
        assert b.error is None and b.spec == get_spec(name), name
        assert shown_params(b) == count(get_spec(name)).params, name
    b.set_preset("resnet152")
    assert shown_macs(b) == 11_282_415_616  # Table 1: 11.3 G (stride on the 1×1, the paper's)
    assert b.family.value.startswith("ImageNet") and b.imagenet_depth.value == 152
    assert "11.3 G multiply-adds" in b.paper.value and "19.6&nbsp;G" in b.comparison.value  # VGG-19
    b.set_preset("plain34")
    assert "28.54 %" in b.paper.value  # Table 2's plain-34 top-1
    assert re.search(r"VGG-19</span></td><td[^>]*>19.6&nbsp;G</td><td>Sec. 3.3, 4.1</td><td[^>]*>19&nbsp;%",
                     b.comparison.value)  # 3.6 / 19.6


def test_stage_edit_recounts_and_leaves_the_family():
    b = ArchitectureBuilder("cifar-resnet20")
    b.stage_controls["conv3_x"].blocks.value = 5
    expected = get_spec("cifar-resnet20")
    expected.stages[2].num_blocks = 5
    assert b.spec.stages == expected.stages and b.spec.name == "custom-resnet24"
    assert shown_params(b) == count(expected).params == 269_722 + 2 * 2 * (32 * 32 * 9 + 64)
    assert b.family.value == "custom"
    n_params = sum(p.numel() for p in b.build().parameters())
    assert n_params == b.count.params
    b.stage_controls["conv3_x"].blocks.value = 3  # back to ResNet-20: named again
    assert b.spec.name == "cifar-resnet20"


def test_family_controls_and_options():
    b = ArchitectureBuilder("cifar-resnet20")
    b.n.value = 18
    assert b.spec.name == "cifar-resnet110" and shown_params(b) == 1_727_962
    b.residual.value = False  # option A: plain and residual have the same parameters
    assert b.spec.name == "cifar-plain110" and shown_params(b) == 1_727_962
    assert b.shortcut.disabled
    assert "shortcut" not in json.dumps([a["text"] for a in b.diagram.layout.to_plotly_json()["annotations"]])
    b.residual.value = True
    b.shortcut.value = "B"  # two projections: 16->32 and 32->64, 1x1 conv + BN each
    assert shown_params(b) == 1_727_962 + (16 * 32 + 64) + (32 * 64 + 128)
    b.set_preset("resnet50")
    b.stride_at.value = "3x3"  # torchvision's v1.5: 4.09 G
    assert b.count.macs == count(get_spec("resnet50", stride_at="3x3")).macs
    assert abs(b.count.macs - 4.09e9) < 0.01e9
    b.imagenet_depth.value = 101  # keeps the chosen stride placement
    assert b.spec == get_spec("resnet101", stride_at="3x3")
    b.family.value = "CIFAR (6n+2)"
    assert b.spec == get_spec("cifar-resnet20") and not b.n.disabled and b.imagenet_depth.disabled
    b.input_size.value, b.num_classes.value = 64, 100
    assert b.spec == get_spec("cifar-resnet20", input_size=64, num_classes=100)


def test_add_and_remove_stage():
    b = ArchitectureBuilder("cifar-resnet20")
    b.add_stage_button.click()
    assert [s.name for s in b.spec.stages][-1] == "conv5_x"
    assert (b.spec.stages[-1].width, b.spec.stages[-1].stride) == (128, 2)
    assert b.count.row("fc").in_shape == (128, 1, 1) and shown_params(b) == count(b.spec).params
    b.remove_stage_button.click()
    assert b.spec == get_spec("cifar-resnet20")


@pytest.mark.parametrize("field,value,fragment", [
    ("blocks", 0, "conv3_x num_blocks=0 is invalid"),
    ("width", -4, "conv3_x width=-4 is invalid"),
])
def test_invalid_stage_values_are_a_message(field, value, fragment):
    b = ArchitectureBuilder("cifar-resnet20")
    before = b.summary.value
    getattr(b.stage_controls["conv3_x"], field).value = value  # no exception escapes
    assert fragment in b.message.value and fragment in b.error
    assert "\n" not in b.error and "Traceback" not in b.message.value
    with pytest.raises(SpecError, match=fragment):
        b.spec
    assert "last valid" in b.summary.value and "269,722" in b.summary.value and before
    getattr(b.stage_controls["conv3_x"], field).value = {"blocks": 3, "width": 32}[field]
    assert b.error is None and b.message.value == "" and b.spec == get_spec("cifar-resnet20")


def test_too_small_input_names_the_smallest_that_works():
    b = ArchitectureBuilder("vgg-e")
    b.input_size.value = 16
    assert "use input_size >= 32" in b.error and "use input_size &gt;= 32" in b.message.value
    b.input_size.value = 32
    assert b.error is None and b.spec.name == "vgg-e" and b.spec.input_size == 32


def test_spec_json_round_trip_and_the_command_line_reads_it(tmp_path, capsys):
    from resnet_explorer.cli import main

    b = ArchitectureBuilder("cifar-resnet20")
    b.n.value = 1
    b.stage_controls["conv2_x"].width.value = 4  # custom: 4 / 32 / 64 wide
    spec = ArchSpec.from_json(b.to_json())
    assert spec == b.spec and spec.stages[1].width == 4  # the trainer gets it in test_dashboard_trains_…
    (tmp_path / "net.json").write_text(b.to_json())
    assert main(["info", str(tmp_path / "net.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == b.count.params


def test_network_diagram_draws_stages_shortcuts_and_sizes():
    fig = network_diagram(get_spec("resnet34"))
    assert isinstance(fig, go.Figure)
    shapes = fig.layout.shapes
    assert sum(s.type == "rect" for s in shapes) == 7  # input, conv1, conv2_x … conv5_x, head
    assert sum(s.type == "path" for s in shapes) == 4  # one shortcut arc per residual stage
    texts = [a.text for a in fig.layout.annotations]
    assert "56×56×64" in texts and "7×7×512" in texts and "1000 classes" in texts
    assert "4 shortcuts (B)<br>1 projection" in texts  # conv3_x: one projection where the shape changes
    assert "21,797,672 parameters" in fig.layout.title.text
    v15 = [a.text for a in network_diagram(get_spec("resnet50", stride_at="3x3")).layout.annotations]
    assert "1×1, 128<br>3×3, 128, /2<br>1×1, 512<br><b>×4</b>" in v15  # the stride on the 3×3
    plain = network_diagram(get_spec("plain34"))
    assert not any(s.type == "path" for s in plain.layout.shapes)
    hover = network_diagram(get_spec("cifar-resnet20")).data[0].hovertext
    assert any("conv4_x" in h and f"{count(get_spec('cifar-resnet20')).by_stage()['conv4_x']['params']:,}" in h
               for h in hover)


def test_builder_diagram_follows_edits():
    b = ArchitectureBuilder("cifar-resnet20")
    b.stage_controls["conv4_x"].blocks.value = 4
    texts = [a.text for a in b.diagram.layout.annotations]
    assert "4 shortcuts (A)<br>1 zero-pad" in texts
    assert f"{count(b.spec).params:,} parameters" in b.diagram.layout.title.text


# -- the builder's controls follow the spec ------------------------------------------------------------------
VARIANTS = [get_spec(n) for n in PRESETS] + [
    get_spec("cifar-resnet8"), get_spec("cifar-plain14", width=8), get_spec("resnet50", stride_at="3x3", shortcut="C"),
    get_spec("resnet34", shortcut="A"), get_spec("plain101", input_size=128, num_classes=10),
    get_spec("cifar-resnet20", input_size=64, num_classes=100), get_spec("vgg-e", input_size=32),
    get_spec("alexnet-groups1", num_classes=10)]


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.name)
def test_controls_round_trip_over_every_zoo_net(spec):
    """preset -> spec -> controls -> spec is the identity, and the builder shows those controls."""
    c = controls_for(spec)
    assert spec_from_controls(c) == spec
    ident = identify(spec)
    assert (c.family, c.name) == (ident.family, ident.name)
    b = ArchitectureBuilder()
    b.set_spec(spec)
    assert b.spec == spec and b.error is None
    assert b.imagenet_depth.value == (ident.depth if ident.family == "imagenet" else 0)  # 0: "—"
    assert b.n.value == ((ident.depth - 2) // 6 if ident.family == "cifar" else 0)
    assert b.preset.value == (spec.name if spec.name in PRESETS else None)
    assert b.family.value.lower().startswith({"cifar": "cifar", "imagenet": "imagenet", "vgg": "vgg",
                                              "alexnet": "alexnet"}[ident.family])


def test_resnet34_and_resnet50_are_told_apart_by_block_type():
    b = ArchitectureBuilder("resnet50")  # the same block counts as ResNet-34: (3, 4, 6, 3)
    assert b.imagenet_depth.value == 50 and b.spec.name == "resnet50" and not b.stride_at.disabled
    b.set_preset("resnet34")
    assert b.imagenet_depth.value == 34 and b.stride_at.disabled  # basic blocks: no stride placement
    for c in b.stage_controls.values():
        c.block.value = "bottleneck"  # ResNet-34's counts with bottleneck blocks: ResNet-50 (bar the shortcut)
    assert b.spec == get_spec("resnet50", shortcut="B") and b.imagenet_depth.value == 50
    assert shown_params(b) == 25_557_032


def test_controls_that_do_not_apply_are_disabled_with_their_reason():
    b = ArchitectureBuilder("vgg-e")
    params = shown_params(b)
    assert b.residual.disabled and b.shortcut.disabled and b.stride_at.disabled
    assert b.n.disabled and b.imagenet_depth.disabled and b.family.value == "VGG"
    assert "no blocks to add shortcuts to" in b.residual.tooltip and "no blocks" in b.reasons.value
    b.residual.value = True  # from code (the browser cannot click it): refused, and said why
    assert b.spec == get_spec("vgg-e") and b.residual.value is False and shown_params(b) == params
    assert "does not apply" in b.message.value and "plain" in b.summary.value
    assert "custom" not in b.summary.value and "residual, option" not in b.summary.value
    b.set_preset("cifar-plain20")
    assert b.shortcut.disabled and "a plain net has no shortcuts" in b.shortcut.tooltip
    assert not b.n.disabled and b.imagenet_depth.disabled and b.imagenet_depth.label == "—"
    b.residual.value = True
    assert not b.shortcut.disabled and b.shortcut.tooltip is None and b.spec == get_spec("cifar-resnet20")
    b.imagenet_depth.value = 50  # does not apply to a CIFAR net
    assert b.spec == get_spec("cifar-resnet20") and b.imagenet_depth.label == "—"


def test_the_family_follows_the_blocks_there_and_back():
    b = ArchitectureBuilder("resnet101")
    assert shown_params(b) == 44_549_160  # Table 3's ResNet-101
    b.stage_controls["conv4_x"].blocks.value = 5
    assert b.family.value == "custom" and b.spec.name == "custom-resnet47" and b.imagenet_depth.label == "—"
    assert b.imagenet_depth.disabled and b.preset.value is None
    b.stage_controls["conv4_x"].blocks.value = 23  # the blocks match ResNet-101 again
    assert b.family.value == "ImageNet (Table 1)" and b.imagenet_depth.value == 101
    assert b.spec == get_spec("resnet101") and b.preset.value == "resnet101" and shown_params(b) == 44_549_160
    b.family.value = "custom"  # the family is read from the net, not chosen: it snaps back and says so
    assert b.family.value == "ImageNet (Table 1)" and "follows the net" in b.message.value
    b.family.value = "AlexNet"
    assert b.spec == get_spec("alexnet") and b.residual.disabled


def test_diagram_labels_fit_their_column_and_the_height_fits_the_content():
    """At plotly's narrowest default (700 px), no label is wider than its box's column, and
    the y range ends just above the highest label (no empty band under the title)."""
    for name in PRESETS:
        fig = network_diagram(get_spec(name))
        lo, hi = fig.layout.xaxis.range
        px_per_x = (700 - 20) / (hi - lo)
        highest = -1e9
        for a in fig.layout.annotations:
            lines = a.text.replace("<b>", "").replace("</b>", "").split("<br>")
            width = 0.6 * a.font.size * max(len(line) for line in lines)
            assert width <= STEP * px_per_x, (name, a.text)
            if a.yanchor == "bottom":
                highest = max(highest, a.y + len(lines) * 1.25 * a.font.size / PX_PER_Y)
        top = fig.layout.yaxis.range[1]
        assert highest <= top + 0.05 and top - highest < 0.3, (name, highest, top)


def test_tables_keep_numbers_on_one_line():
    b = ArchitectureBuilder("resnet50")
    assert "white-space: nowrap" in b.stage_table.value and "17.3&nbsp;%" in b.stage_table.value
    assert "white-space:nowrap" in b.comparison.value and "3.8&nbsp;G" in b.comparison.value


# -- a widget whose kernel is gone says what to do -----------------------------------------------------------
def test_every_widget_displays_a_reconnect_line_beside_its_view(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    for w in (ArchitectureBuilder(), TrainingDashboard(out=str(tmp_path)), LayerResponseView()):
        line, view = w.display_bundles()
        key = w.link.key
        assert RECONNECT in line["text/html"] and f"rx-offline-{key}" in line["text/html"]
        box = w.widget if isinstance(w, TrainingDashboard) else w
        assert view["application/vnd.jupyter.widget-view+json"]["model_id"] == box.model_id
        assert w.link in box.children  # the link that hides the line lives inside the widget
        with capture_output() as shown:
            display(w)
        assert [o.data.keys() for o in shown.outputs] == [line.keys(), view.keys()]
        w.link._answer(w.link, {"width": 912}, [])  # the browser says how wide the widget is
        assert [f.layout.width for f in w.link.figures] == [912]
        w.link._answer(w.link, {"width": "wide"}, [])
        w.link._answer(w.link, ["width", 100], [])
        assert w.link.width == 912


# -- the training dashboard -----------------------------------------------------------------------------
def tiny(name: str) -> ArchSpec:
    return get_spec(name, width=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dashboard that trained two tiny nets: one stopped once and resumed."""
    out = tmp_path_factory.mktemp("dash")
    d = TrainingDashboard([tiny("cifar-plain8"), tiny("cifar-resnet8")], data="synthetic:128",
                          recipe="test", iters=20, out=str(out), device="cpu")
    # Stop is clicked when the progress line first shows iteration 5 (from the training thread,
    # so the run stops exactly there).
    def stop_at_5(change: dict) -> None:
        if "iteration 5 /" in change["new"]:
            d.progress.unobserve(stop_at_5, names="value")
            d.stop_button.click()

    d.progress.observe(stop_at_5, names="value")
    lines: list[str] = []
    d.progress.observe(lambda ch: lines.append(ch["new"]), names="value")
    d.start_button.click()
    assert d.running and d.stop_button.disabled is False and d.start_button.disabled
    run = out / "cifar-plain8"
    assert d.wait(120)
    stopped = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["iteration"]
    stopped_progress = d.progress.value
    assert not (out / "cifar-resnet8").exists()  # the second net never started
    d.resume_button.click()
    assert d.wait(300)
    return d, out, stopped, stopped_progress, lines


def test_dashboard_start_stop_resume_writes_the_runs(trained):
    d, out, stopped, stopped_progress, _ = trained
    assert stopped == 5 and "stopped at iteration 5 / 20; checkpoint saved" in stopped_progress
    assert d.error is None and not d.running and d.start_button.disabled is False
    for name in ("cifar-plain8", "cifar-resnet8"):
        ckpt = torch.load(out / name / "checkpoints" / "last.pt", weights_only=False)
        assert ckpt["iteration"] == 20
        rows = read_metrics(out / name)
        assert [r["iter"] for r in rows if r["kind"] == "eval"] == [10, 20]
        assert [r["iter"] for r in rows if r["kind"] == "train"] == [5, 10, 15, 20]
    assert "done" in d.progress.value and "20 / 20 iterations (finished)" in d.progress.value
    assert d.runs == [out / "cifar-plain8", out / "cifar-resnet8"]


def test_dashboard_figure_is_fig6(trained):
    d, out, *_ = trained
    assert isinstance(d.figure, go.FigureWidget)
    traces = {t.name: t for t in d.figure.data}
    assert set(traces) == {f"{n} {k}" for n in ("cifar-plain8", "cifar-resnet8") for k in ("train", "test")}
    for name, col in (("cifar-plain8", "x"), ("cifar-resnet8", "x2")):  # plain left, ResNet right
        rows = read_metrics(out / name)
        train_t, test_t = traces[f"{name} train"], traces[f"{name} test"]
        assert train_t.line.dash == "dash" and test_t.line.dash == "solid"
        assert test_t.line.width > train_t.line.width  # test error bold
        assert list(test_t.x) == [r["iter"] for r in rows if r["kind"] == "eval"]
        assert list(test_t.y) == pytest.approx([100 * r["test_error"] for r in rows if r["kind"] == "eval"])
        assert list(train_t.x) == [5, 10, 15, 20] and train_t.xaxis == col


def test_dashboard_progress_line(trained):
    *_, lines = trained
    line = next(l for l in lines if "run 1/2 cifar-plain8: iteration 5 / 20" in l)
    assert re.search(r"[\d,]+ images/s", line) and re.search(r"ETA \d+:\d\d", line)
    assert any("run 2/2 cifar-resnet8: iteration 15 / 20" in l for l in lines)  # after Resume


def test_dashboard_reopens_a_run_and_refuses_to_overwrite(trained, tmp_path):
    d, out, *_ = trained
    again = TrainingDashboard([tiny("cifar-plain8")], data="synthetic:128", recipe="test", iters=20,
                              out=str(out), device="cpu")
    again.start_button.click()  # out/cifar-plain8 holds a run: a message, nothing overwritten
    assert not again.running and "already holds a run" in again.message.value
    assert again.figure.data == ()
    again.open_path.value = str(out)
    again.open_button.click()
    assert {t.name for t in again.figure.data} == {t.name for t in d.figure.data}
    assert "cifar-resnet8: 20 / 20 iterations (finished)" in again.progress.value
    again.resume_button.click()
    assert not again.running and "nothing to resume" in again.message.value
    again.open(tmp_path / "nowhere")
    assert "is not a run directory" in again.message.value


def test_dashboard_says_which_runs_have_finished(trained, capsys):
    d, out, *_ = trained
    assert d.finished_runs() == [out / "cifar-plain8", out / "cifar-resnet8"]
    assert capsys.readouterr().out == "2 of 2 runs finished.\n"


def test_dashboard_fields_show_their_whole_value(tmp_path):
    from resnet_explorer.recipes import get_recipe

    long_out = str(tmp_path / "runs" / "03_degradation_cifar10" / "cpu")
    d = TrainingDashboard(["cifar-resnet20"], recipe=get_recipe("cpu-demo", iters=500, batch_size=64), out=long_out)
    assert d.out.tooltip == long_out and d.out.layout.width == "100%"
    assert d.recipe.tooltip == d.recipe.label == "cpu-demo, batch 64, 500 iterations (given)"
    d.out.value = "elsewhere"
    assert d.out.tooltip == "elsewhere"
    d.recipe.value = "test"
    assert d.recipe.tooltip == "test"


def _stop_at_5(d: TrainingDashboard) -> None:
    def stop(change: dict) -> None:
        if "iteration 5 /" in change["new"]:
            d.progress.unobserve(stop, names="value")
            d.stop_button.click()

    d.progress.observe(stop, names="value")


def test_start_into_a_new_out_shows_only_its_runs(trained, tmp_path, capsys):
    """The same nets into a new out folder: the figure never mixes them with the old runs."""
    _, out, *_ = trained
    d = TrainingDashboard([tiny("cifar-plain8"), tiny("cifar-resnet8")], data="synthetic:128", recipe="test",
                          iters=20, out=str(out), device="cpu")
    d.open(out)  # the finished runs, with their test curves
    assert all(t.meta["run"].startswith(str(out.resolve())) for t in d.figure.data) and len(d.figure.data) == 4
    new = tmp_path / "again"
    d.out.value = str(new)
    _stop_at_5(d)
    d.start_button.click()
    assert d.wait(120) and d.error is None
    assert RunDir(new / "cifar-plain8").iteration() == 5
    assert d.runs == [new / "cifar-plain8", new / "cifar-resnet8"]
    # only the new run that started is drawn, and its test curve is its own: empty before iteration 10
    assert {t.meta["run"] for t in d.figure.data} == {str((new / "cifar-plain8").resolve())}
    assert {t.name: list(t.y) for t in d.figure.data if t.meta["kind"] == "test"} == {"cifar-plain8 test": []}
    assert d.finished_runs() == []
    assert capsys.readouterr().out.startswith(
        "0 of 2 runs finished; still to come: cifar-plain8 (5 / 20 iterations, stopped), cifar-resnet8 (not started). "
        "Press Resume to continue them.")
    d.open(out)  # Open brings the old runs back beside the new ones: labelled by folder, never merged
    assert len(d.figure.data) == 6 and len({t.meta["run"] for t in d.figure.data}) == 3
    assert {t.name for t in d.figure.data if t.meta["kind"] == "train"} == {
        f"{out.name}/cifar-plain8 train", f"{new.name}/cifar-plain8 train", "cifar-resnet8 train"}


def test_runs_of_one_name_in_two_folders_never_share_traces(trained, tmp_path):
    _, out, *_ = trained
    other = tmp_path / "other" / "cifar-plain8"
    shutil.copytree(out / "cifar-plain8", other)
    rows = read_metrics(other)
    (other / "metrics.jsonl").write_text("".join(json.dumps({**r, "test_error": 0.5} if r["kind"] == "eval" else r)
                                                 + "\n" for r in rows))
    fig = error_curves([out / "cifar-plain8", other])
    tests = {t.name: list(t.y) for t in fig.data if t.meta["kind"] == "test"}
    assert tests[f"{other.parent.name}/cifar-plain8 test"] == [50.0, 50.0]
    assert tests[f"{out.name}/cifar-plain8 test"] == pytest.approx(
        [100 * r["test_error"] for r in rows if r["kind"] == "eval"])
    assert len({t.uid for t in fig.data}) == 4 and len({t.line.color for t in fig.data}) == 2
    update_error_curves(fig, [other])  # the figure follows the list: the other folder's run alone
    assert {t.meta["run"] for t in fig.data} == {str(other.resolve())}
    assert {t.name for t in fig.data} == {"cifar-plain8 train", "cifar-plain8 test"}


def test_dashboard_bad_input_is_one_line(tmp_path):
    d = TrainingDashboard(["cifar-resnet20"], data="mnist:/x", recipe="test", out=str(tmp_path), device="cpu")
    d.start_button.click()
    assert not d.running and "synthetic" in d.error and "\n" not in d.error
    d.data.value = "synthetic:128"
    d.iters.value = -1
    d.start_button.click()
    assert "iters=-1 is invalid" in d.message.value
    d.iters.value = 5
    for option, fragment in [("compile", "--compile 'fast' is invalid"), ("amp", "--amp fp16 needs a GPU")]:
        bad = TrainingDashboard(["cifar-resnet20"], data="synthetic:128", recipe="test", out=str(tmp_path),
                                device="cpu", **{option: "fast" if option == "compile" else "fp16"})
        for button in (bad.start_button, bad.resume_button):
            button.click()
            assert not bad.running and fragment in bad.error and "\n" not in bad.error
    assert list(tmp_path.iterdir()) == []


def test_dashboard_passes_its_gpu_helpers_to_the_trainer(tmp_path, monkeypatch):
    import resnet_explorer.experiments as runner  # the dashboard trains through the runner's train_plan

    seen = []
    real_train = runner.train
    monkeypatch.setattr(runner, "train", lambda *a, **kw: seen.append(kw["options"]) or real_train(*a, **kw))
    d = TrainingDashboard([tiny("cifar-resnet8")], data="synthetic:128", recipe="test", iters=5,
                          out=str(tmp_path), device="cpu", amp="bf16", compile="off")
    d.start_button.click()
    assert d.wait(120) and d.error is None
    assert [(o.amp, o.compile, o.device) for o in seen] == [("bf16", "off", "cpu")]
    assert (tmp_path / "cifar-resnet8" / "analysis.json").is_file()  # the runner's path: trained, then analysed
    assert json.loads((tmp_path / "cifar-resnet8" / "env.json").read_text())["amp"] == "bf16"


def test_dashboard_trains_the_builders_spec(tmp_path):
    b = ArchitectureBuilder("cifar-resnet20")
    b.n.value = 1
    b.stage_controls["conv2_x"].width.value = 4
    d = TrainingDashboard([b], data="synthetic:128", recipe="test", iters=5, out=str(tmp_path), device="cpu")
    b.stage_controls["conv3_x"].width.value = 8  # the spec is read when Start is pressed
    d.start_button.click()
    assert d.wait(120) and d.error is None
    saved = ArchSpec.from_json((tmp_path / b.spec.name / "spec.json").read_text())
    assert saved == b.spec and saved.stages[2].width == 8


def _training_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "rx-train" and t.is_alive()]


def test_a_second_dashboard_for_the_same_out_adopts_the_training(tmp_path):
    """The dashboard cell run again while its nets train: one training thread, shown by the new
    dashboard (its Stop stops it), and both dashboards say so; Resume in the new one is safe."""
    import threading

    nets = [tiny("cifar-plain8"), tiny("cifar-resnet8")]
    first = TrainingDashboard(nets, data="synthetic:128", recipe="test", iters=400, out=str(tmp_path), device="cpu")
    started = threading.Event()
    first.progress.observe(lambda ch: "iteration" in ch["new"] and started.set(), names="value")
    first.start()
    assert started.wait(120)
    again = TrainingDashboard(nets, data="synthetic:128", recipe="test", iters=400, out=str(tmp_path), device="cpu")
    assert len(_training_threads()) == 1 and again.running and first.running
    assert "adopted the training already running into" in again.message.value
    assert "replaced by a newer dashboard" in first.message.value
    assert first.stop_button.disabled and first.resume_button.disabled and not again.stop_button.disabled
    again.resume()  # the notebook's next cell: nothing to do while it runs, and no error
    assert again.error is None and len(_training_threads()) == 1 and "Resume continues" in again.message.value
    seen = again.progress.value
    assert again.wait(0.5) is False and again.progress.value != "" and again.runs == first.runs
    again.stop()
    assert again.wait(120) and not first.running
    assert "stopped at iteration" in again.progress.value and seen != again.progress.value
    assert 0 < RunDir(tmp_path / "cifar-plain8").iteration() < 400
    assert _training_threads() == []


def test_wait_async_gives_the_event_loop_back_so_stop_works_while_a_cell_waits(tmp_path):
    """What a smoke-mode cell awaits: the loop it runs in goes on (in a kernel: the page's widget
    messages, a click on Stop), and the wait ends as soon as Stop has ended the training."""
    import asyncio

    d = TrainingDashboard([tiny("cifar-plain8")], data="synthetic:128", recipe="test", iters=100_000,
                          out=str(tmp_path), device="cpu")
    ticks = []

    async def cell() -> float:
        d.start()
        loop = asyncio.get_running_loop()

        async def click_stop_later() -> None:  # the page's click, handled by the loop meanwhile
            while "iteration" not in d.progress.value or len(ticks) < 5:  # the loop turns while the cell waits
                ticks.append(loop.time())
                await asyncio.sleep(0.05)
            d.stop_button.click()

        clicked = asyncio.ensure_future(click_stop_later())
        start = loop.time()
        assert await d.wait_async(120) is True
        await clicked
        return loop.time() - start

    waited = asyncio.run(cell())
    assert len(ticks) > 2 and waited < 60 and not d.running
    assert "stopped at iteration" in d.progress.value and 0 < RunDir(tmp_path / "cifar-plain8").iteration() < 100_000


def test_a_reload_draws_the_figures_as_they_are_now(trained):
    """What a new view (a page reload) is drawn from is the figure now, not as first displayed."""
    d, *_ = trained
    state = d.figure.get_state()
    assert [t["y"] for t in state["_widget_data"]] == [list(t.y) for t in d.figure.data]
    assert len(state["_widget_data"]) == 4 and state["_widget_layout"]["xaxis"]["rangemode"] == "tozero"
    b = ArchitectureBuilder("resnet34")
    b.set_preset("resnet50")
    state = b.diagram.get_state()
    assert "resnet50" in state["_widget_layout"]["title"]["text"] and "resnet50" in b.summary.value
    assert list(state["_widget_data"][0]["x"]) == list(b.diagram.data[0].x)


def test_the_iterations_field_says_what_zero_means(tmp_path):
    d = TrainingDashboard(["cifar-resnet20"], recipe="cpu-demo", out=str(tmp_path))
    assert d.iters.value == 0 and "0: the recipe's own, 1,000 iterations" in d.iters_note.value
    d.recipe.value = "test"
    assert f"{get_recipe('test').max_iters:,} iterations" in d.iters_note.value


# -- layer responses ------------------------------------------------------------------------------------
def test_layer_view_keeps_each_runs_colour_whatever_is_chosen(trained):
    d, *_ = trained
    view = LayerResponseView(d.runs)
    both = {t.meta["run"]: t.line.color for t in view.figure.data}
    assert len(set(both.values())) == 2
    for one in d.runs:
        view.runs.value = (str(one),)
        view.show()
        assert {t.meta["run"]: t.line.color for t in view.figure.data} == {
            str(one.resolve()): both[str(one.resolve())]}
    assert view.figure.get_state()["_widget_data"][0]["line"]["color"] == view.figure.data[0].line.color


def test_layer_response_view_shows_fig7(trained):
    d, out, *_ = trained
    view = LayerResponseView(d.runs)
    assert view.error is None
    for name in ("cifar-plain8", "cifar-resnet8"):
        analysis = json.loads((out / name / "analysis.json").read_text())
        assert analysis["iteration"] == 20
        ordered = [t for t in view.figure.data if t.name == name]
        assert len(ordered) == 2  # layer order (top) and sorted (bottom)
        stds = [l["std"] for l in analysis["layer_responses"]]
        assert list(ordered[0].y) == pytest.approx(stds)
        assert list(ordered[1].y) == pytest.approx(sorted(stds, reverse=True))
    view.runs.value = (str(out / "cifar-resnet8"),)
    view.show_button.click()
    assert {t.name for t in view.figure.data} == {"cifar-resnet8"}


def test_layer_response_view_keys_runs_by_folder_keeps_the_choice_and_colours_plain_apart(trained, tmp_path):
    d, out, *_ = trained
    view = LayerResponseView(d.runs)
    colours = {t.name: t.line.color for t in view.figure.data}
    assert colours["cifar-plain8"] != colours["cifar-resnet8"]  # one depth, one panel: two colours
    assert view.runs.rows == 2
    view.runs.value = (str(out / "cifar-plain8"),)
    other = tmp_path / "other"
    shutil.copytree(out / "cifar-plain8", other / "cifar-plain8")
    view.add(other)
    assert view.runs.value == (str(out / "cifar-plain8"), str(other / "cifar-plain8"))  # the choice is kept
    assert [label for label, _ in view.runs.options] == [f"{out.name}/cifar-plain8", "cifar-resnet8",
                                                         "other/cifar-plain8"]
    assert view.runs.rows == 3
    view.show()
    assert view.error is None and [t.name for t in view.figure.data if t.showlegend] == [
        f"{out.name}/cifar-plain8", "other/cifar-plain8"]
    assert len({t.meta["run"] for t in view.figure.data}) == 2


def test_layer_response_view_bad_run_is_a_message(tmp_path):
    view = LayerResponseView()
    view.add(tmp_path)
    assert "is not a run directory" in view.message.value
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "spec.json").write_text(get_spec("cifar-resnet8").to_json())
    view.add(tmp_path)
    view.show_button.click()
    assert "has no checkpoint yet" in view.message.value and view.figure.data == ()


# -- the speed benchmark --------------------------------------------------------------------------------
@pytest.mark.slow
def test_builder_speed_benchmark_runs():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "builder_speed.py"), "--repeat", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith("resnet152") and "analytic count" in lines[1]
    assert "edit conv4_x blocks" in lines[2] and "load preset" in lines[3]
    assert "params shown 60,192,808 = count(spec): True" in lines[4]


def test_dashboard_trains_a_recipe_object_as_given(tmp_path):
    from resnet_explorer.recipes import get_recipe

    recipe = get_recipe("test", iters=6, batch_size=16, log_every=3, eval_every=6)
    d = TrainingDashboard([tiny("cifar-resnet8")], data="synthetic:128", recipe=recipe, out=str(tmp_path), device="cpu")
    assert d.recipe.value == "(given)" and "batch 16" in d.recipe.label
    d.start()
    assert d.wait(120) and d.error is None
    saved = json.loads((tmp_path / "cifar-resnet8" / "recipe.json").read_text())
    assert (saved["batch_size"], saved["max_iters"], saved["log_every"]) == (16, 6, 3)
    d.iters.value = 4  # the iterations box still shortens it
    assert d._recipe().max_iters == 4 and d._recipe().batch_size == 16
    d.recipe.value, d.iters.value = "test", 0  # and the named recipes stay available
    assert d._recipe() == get_recipe("test")


# -- beyond the paper: gated shortcuts and pre-activation blocks ----------------------------------------------
def _arcs(fig: go.Figure) -> list:
    return [s for s in fig.layout.shapes if s.type == "path"]


def test_diagram_draws_a_gated_arc_differently_from_an_identity_arc():
    identity, gated = network_diagram(get_spec("cifar-resnet20")), network_diagram(get_spec("cifar-highway20"))
    assert len(_arcs(identity)) == len(_arcs(gated)) == 3  # one arc per residual stage, either kind
    assert all(a.line.dash is None and a.line.color == "#d62728" for a in _arcs(identity))
    assert all(a.line.dash == "dash" and a.line.color == "#9467bd" for a in _arcs(gated))
    gate_marks = [a for a in gated.layout.annotations if a.text == "<b>T</b>"]
    assert len(gate_marks) == 3 and not any(a.text == "<b>T</b>" for a in identity.layout.annotations)
    # each T sits on the top of its stage's arc (the quadratic's apex: halfway to its control point)
    for mark, arc in zip(gate_marks, _arcs(gated)):
        start, control = arc.path.split(" Q ")[0][2:].split(","), arc.path.split(" Q ")[1].split(" ")[0].split(",")
        assert abs(mark.x - float(control[0])) < 1e-9
        assert abs(mark.y - (float(start[1]) + float(control[1])) / 2) < 1e-9
    texts = [a.text for a in gated.layout.annotations]
    assert "3 shortcuts (A)<br>1 zero-pad<br>gated by T(x)" in texts
    assert "gated (highway) shortcuts" in gated.layout.title.text and "283,626 parameters" in gated.layout.title.text
    assert not _arcs(network_diagram(get_spec("cifar-plain20", block_order="pre")))  # a plain net: no arcs


def test_diagram_marks_pre_activation_blocks():
    post, pre = network_diagram(get_spec("cifar-resnet110")), network_diagram(get_spec("cifar-preresnet110"))
    pre_texts = [a.text for a in pre.layout.annotations]
    assert "BN-ReLU first<br>3×3, 32, /2<br>3×3, 32<br><b>×18</b>" in pre_texts
    assert not any("BN-ReLU" in a.text for a in post.layout.annotations)
    assert "pre-activation ResNet" in pre.layout.title.text and "pre-activation" not in post.layout.title.text
    assert all(a.line.dash is None for a in _arcs(pre))  # identity shortcuts: the paper's arcs


@pytest.mark.parametrize("name", ["cifar-highway20", "cifar-highway56", "cifar-preresnet110", "cifar-preresnet164",
                                  "cifar-preresnet1001", "preresnet50", "preresnet152", "highway34"])
def test_the_new_named_nets_fit_the_diagram_and_round_trip_the_controls(name):
    spec = get_spec(name)
    c = controls_for(spec)
    assert c.name == name and spec_from_controls(c) == spec
    assert (c.shortcut_kind, c.block_order) == (spec.shortcut_kind, spec.block_order)
    b = ArchitectureBuilder()
    b.set_spec(spec)
    assert b.spec == spec and b.error is None and shown_params(b) == count(spec).params
    assert (b.shortcut_kind.value, b.block_order.value) == (spec.shortcut_kind, spec.block_order)
    assert not b.shortcut_kind.disabled and not b.block_order.disabled
    if name == "cifar-preresnet164":  # 9n+2 bottlenecks: n = 18, not (164 - 2) / 6
        assert b.n.value == 18 and c.block == "bottleneck"
    fig = network_diagram(spec)
    lo, hi = fig.layout.xaxis.range
    px_per_x = (700 - 20) / (hi - lo)
    for a in fig.layout.annotations:  # as test_diagram_labels_fit_their_column_… does for the presets
        lines = re.sub(r"</?[bi]>", "", a.text).split("<br>")
        assert 0.6 * a.font.size * max(len(line) for line in lines) <= STEP * px_per_x, (name, a.text)


def test_builder_switches_shortcut_kind_and_block_order():
    b = ArchitectureBuilder("cifar-resnet20")
    assert (b.shortcut_kind.value, b.block_order.value) == ("identity", "post")
    b.shortcut_kind.value = "gated"  # a gate per block: 1x1 conv + bias, 13,904 parameters at depth 20
    assert b.spec == get_spec("cifar-highway20") and shown_params(b) == 269_722 + 13_904
    assert "gated (highway) shortcuts" in b.summary.value
    assert any(a.line.dash == "dash" for a in b.diagram.layout.shapes if a.type == "path")
    b.block_order.value = "pre"
    assert b.spec == get_spec("cifar-highway20", block_order="pre") and "pre-activation blocks" in b.summary.value
    b.shortcut_kind.value = "identity"
    assert b.spec == get_spec("cifar-preresnet20") and b.spec.name == "cifar-preresnet20"
    assert shown_params(b) == count(get_spec("cifar-preresnet20")).params
    assert any("BN-ReLU first" in a.text for a in b.diagram.layout.annotations)
    b.block_order.value = "post"
    assert b.spec == get_spec("cifar-resnet20")
    b.n.value = 9  # the family's other controls keep the switches
    b.shortcut_kind.value = "gated"
    b.n.value = 18
    assert b.spec == get_spec("cifar-highway110")
    b.residual.value = False  # a plain net has no shortcuts to gate: the gate goes, the switch greys out
    assert b.spec == get_spec("cifar-plain110") and b.shortcut_kind.value == "identity"
    assert b.shortcut_kind.disabled and "no shortcuts to gate" in b.shortcut_kind.tooltip
    assert not b.block_order.disabled  # a plain net's blocks can be pre-activated too
    b.shortcut_kind.value = "gated"  # from code (the browser cannot): refused, and said why
    assert b.spec == get_spec("cifar-plain110") and "does not apply" in b.message.value
    b.block_order.value = "pre"
    assert b.spec == get_spec("cifar-plain110", block_order="pre") and b.error is None
    b.set_preset("vgg-e")  # no blocks: neither switch applies
    assert b.shortcut_kind.disabled and b.block_order.disabled
    assert "no basic or bottleneck blocks" in b.block_order.tooltip and "block order" in b.reasons.value
    b.block_order.value = "pre"
    assert b.spec == get_spec("vgg-e") and b.block_order.value == "post"


def test_the_n_control_names_the_depth_of_the_block_type():
    """n blocks per stage are 6n+2 layers with basic blocks, 9n+2 with bottlenecks."""
    b = ArchitectureBuilder("cifar-preresnet164")
    assert b.n.value == 18 and b.n.label == "18 (164 layers)"
    b = ArchitectureBuilder("cifar-resnet110")
    assert b.n.value == 18 and b.n.label == "18 (110 layers)"
