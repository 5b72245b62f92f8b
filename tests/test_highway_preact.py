"""Beyond the paper's nets: highway-gated shortcuts and pre-activation blocks.

Blocks checked by hand (parameters and forward pass), the spec's two fields (defaults, JSON,
validation), the zoo's names and published numbers, the gate analysis, the experiments.
"""

import json
import math

import pytest
import torch
from torch import nn

from resnet_explorer import ArchSpec, SpecError, build, count, get_spec
from resnet_explorer.analysis import conv_bn_pairs, gate_means, layer_responses
from resnet_explorer.cli import main
from resnet_explorer.errors import UsageError
from resnet_explorer.plans import EXPERIMENTS, preact, shortcuts
from resnet_explorer.figures import gates_figure
from resnet_explorer.model import BasicBlock, Bottleneck, Gate, Projection, ShortcutA
from resnet_explorer.spec import GATE_BIAS_INIT
from resnet_explorer.tables import beyond, beyond_rows
from resnet_explorer.paper import CIFAR10, PARAMS, TOP1, figure
from resnet_explorer.zoo import identify

from conftest import randomise_bn


def _block_rows(c, prefix):
    return [r for r in c.rows if r.name.startswith(prefix + ".")]


# -- parameters by hand -----------------------------------------------------------------------------
def test_gated_block_parameters_by_hand():
    # cifar-highway20's conv3_x.0: 16 -> 32, stride 2, option A, gated
    c = count(get_spec("cifar-highway20"))
    rows = {r.name: r for r in _block_rows(c, "conv3_x.0")}
    conv1, bn1 = 16 * 32 * 9, 2 * 32
    conv2, bn2 = 32 * 32 * 9, 2 * 32
    gate = 16 * 32 + 32  # the 1x1 W_T and its bias b_T, one gate per output channel
    assert rows["conv3_x.0.gate.conv"].params == gate
    assert rows["conv3_x.0.gate.conv"].macs == 16 * 32 * 16 * 16
    assert sum(r.params for r in rows.values()) == conv1 + bn1 + conv2 + bn2 + gate
    assert rows["conv3_x.0.add"].other_ops == 3 * 32 * 16 * 16  # S + T·(F - S)
    # every block has one gate: 9 blocks, in -> out channels
    gates = [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)] + [(64, 64)] * 2
    assert c.params - count(get_spec("cifar-resnet20")).params == sum(i * o + o for i, o in gates) == 13_904
    block = build("cifar-highway20").conv3_x[0]
    assert sum(p.numel() for p in block.parameters()) == conv1 + bn1 + conv2 + bn2 + gate


def test_pre_activation_blocks_parameters_by_hand():
    c = count(get_spec("cifar-preresnet164"))
    # conv2_x.0 follows the stem's BN-ReLU: no BN of its own; 16 -> 64 by a bare 1x1 projection
    first = {r.name: r.params for r in _block_rows(c, "conv2_x.0")}
    assert first == {"conv2_x.0.conv1": 16 * 16, "conv2_x.0.bn2": 32, "conv2_x.0.conv2": 16 * 16 * 9,
                     "conv2_x.0.bn3": 32, "conv2_x.0.conv3": 16 * 64, "conv2_x.0.shortcut.conv": 16 * 64,
                     "conv2_x.0.add": 0}
    # conv3_x.0: BN(64) -> ReLU -> 1x1 64->32 (stride 2) -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 32->128
    down = {r.name: r.params for r in _block_rows(c, "conv3_x.0")}
    assert down == {"conv3_x.0.bn1": 2 * 64, "conv3_x.0.conv1": 64 * 32, "conv3_x.0.bn2": 2 * 32,
                    "conv3_x.0.conv2": 32 * 32 * 9, "conv3_x.0.bn3": 2 * 32, "conv3_x.0.conv3": 32 * 128,
                    "conv3_x.0.shortcut.conv": 64 * 128, "conv3_x.0.add": 0}
    assert c.row("conv3_x.0.conv1").out_shape == (32, 16, 16)  # stride on the first 1x1 (v1)
    assert c.row("final_act.bn").params == 2 * 256 and c.rows[-3].name == "final_act.bn"
    model = build("cifar-preresnet164")
    for prefix, want in (("conv2_x.0", first), ("conv3_x.0", down)):
        assert sum(p.numel() for p in model.get_submodule(prefix).parameters()) == sum(want.values())
    # a basic pre-activation block: BN(in) -> ReLU -> 3x3 -> BN -> ReLU -> 3x3
    basic = {r.name: r.params for r in _block_rows(count(get_spec("cifar-preresnet20")), "conv4_x.0")}
    assert basic == {"conv4_x.0.bn1": 2 * 32, "conv4_x.0.conv1": 32 * 64 * 9, "conv4_x.0.bn2": 2 * 64,
                     "conv4_x.0.conv2": 64 * 64 * 9, "conv4_x.0.shortcut": 0, "conv4_x.0.add": 0}


def test_resnet1001_count_against_the_2016_papers_10_2_million():
    c = count(get_spec("cifar-preresnet1001"))
    weights = sum(r.params for r in c.rows if r.kind in ("conv", "fc"))
    assert c.params == 10_327_706  # with BN's γ and β
    assert weights == 10_178_490  # conv and fc weights: what rounds to the paper's 10.2 M
    assert round(weights / 1e6, 1) == figure("cifar-preresnet1001", PARAMS).value / 1e6 == 10.2
    assert c.params / 1e6 == pytest.approx(10.2, rel=0.015)
    for name in ("cifar-preresnet110", "cifar-preresnet164"):  # "1.7 M" in the 2016 paper
        assert round(count(get_spec(name)).params / 1e6, 1) == figure(name, PARAMS).value / 1e6 == 1.7


# -- forward passes by hand -------------------------------------------------------------------------
def test_gated_block_mixes_f_and_the_shortcut():
    torch.manual_seed(0)
    blk = BasicBlock(4, 8, 2, residual=True, shortcut="A", gated=True).eval()
    randomise_bn(blk)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        f = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(x)))))
        s = ShortcutA(4, 8, 2)(x)
        t = torch.sigmoid(blk.gate.conv(x))
        assert t.shape == f.shape == (2, 8, 3, 3)
        assert torch.allclose(blk(x), torch.relu(t * f + (1 - t) * s), atol=1e-6)
        blk.gate.conv.bias.fill_(30.0)  # T -> 1: the shortcut closes, a plain block
        assert torch.allclose(blk(x), torch.relu(f), atol=1e-5)
        blk.gate.conv.bias.fill_(-30.0)  # T -> 0: F is skipped
        assert torch.allclose(blk(x), torch.relu(s), atol=1e-5)
    assert isinstance(blk.gate, Gate) and blk.gate.conv.stride == (2, 2) and blk.gate.conv.bias is not None


def test_gate_bias_starts_negative_and_gates_start_nearly_carrying():
    model = build("cifar-highway20")
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    assert len(gates) == 9 and GATE_BIAS_INIT == -2.0
    assert all(g.conv.bias.eq(GATE_BIAS_INIT).all() for g in gates)
    for g in gates:
        g.conv.weight.data.zero_()
    means = gate_means(model, torch.randn(4, 3, 32, 32))
    assert all(m.mean == pytest.approx(1 / (1 + math.exp(2))) for m in means)  # σ(-2) = 0.119


def test_pre_activation_block_by_hand():
    torch.manual_seed(0)
    blk = BasicBlock(8, 8, 1, residual=True, shortcut="A", order="pre").eval()
    randomise_bn(blk)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        f = blk.conv2(torch.relu(blk.bn2(blk.conv1(torch.relu(blk.bn1(x))))))
        assert torch.allclose(blk(x), f + x, atol=1e-6)  # identity of x itself, no ReLU after
        assert (blk(x) < 0).any()
        # where the shape changes, BN-ReLU comes before the split: the shortcut sees it too
        down = Bottleneck(8, 4, 2, residual=True, shortcut="B", stride_at="1x1", order="pre").eval()
        randomise_bn(down, 1)
        a = torch.relu(down.bn1(x))
        f = down.conv3(torch.relu(down.bn3(down.conv2(torch.relu(down.bn2(down.conv1(a)))))))
        assert isinstance(down.shortcut, Projection) and not hasattr(down.shortcut, "bn")
        assert torch.allclose(down(x), f + down.shortcut.conv(a), atol=1e-5)
        # the first block after the stem: the stem's BN-ReLU is its pre-activation
        first = BasicBlock(8, 8, 1, residual=True, shortcut="A", order="pre", preact=False).eval()
        assert first.bn1 is None
        f = first.conv2(torch.relu(first.bn2(first.conv1(x))))
        assert torch.allclose(first(x), f + x, atol=1e-6)
        # gated and pre: T from the shortcut's input, nothing after the mix
        g = BasicBlock(8, 8, 1, residual=True, shortcut="A", order="pre", gated=True).eval()
        f = g.conv2(torch.relu(g.bn2(g.conv1(torch.relu(g.bn1(x))))))
        t = torch.sigmoid(g.gate.conv(x))
        assert torch.allclose(g(x), t * f + (1 - t) * x, atol=1e-6)


def test_pre_activation_net_structure_and_zero_init():
    m = build("cifar-preresnet20")
    names = [n for n, _ in m.named_children()]
    assert names == ["conv1", "conv2_x", "conv3_x", "conv4_x", "final_act", "avgpool", "fc"]
    assert isinstance(m.final_act.bn, nn.BatchNorm2d) and m.final_act.bn.num_features == 64
    assert m.conv2_x[0].bn1 is None and m.conv2_x[1].bn1.num_features == 16
    assert m.conv3_x[0].bn1.num_features == 16  # BN on the block's input
    z = build("cifar-preresnet20", zero_init_residual=True).eval()
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():  # γ = 0 before the last conv: F = 0, every identity block starts as x
        assert torch.allclose(z.conv2_x[1](x), x)
    # a pre-activation ImageNet net: stem conv -> BN -> ReLU -> max-pool, then no own BN in conv2_x.0
    p50 = build("preresnet50")
    assert p50.conv2_x[0].bn1 is None and p50.conv2_x[1].bn1.num_features == 256
    assert p50.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


# -- the spec ---------------------------------------------------------------------------------------
NEW_NAMES = ["cifar-highway20", "cifar-highway56", "cifar-preresnet20", "cifar-preresnet110", "cifar-preresnet164",
             "cifar-preresnet1001", "cifar-resnet1001", "preresnet50", "preresnet101", "preresnet152"]


@pytest.mark.parametrize("name", NEW_NAMES)
def test_new_nets_round_trip_and_are_identified(name):
    spec = get_spec(name)
    assert ArchSpec.from_json(spec.to_json()) == spec
    ident = identify(spec)
    assert ident.name == name and get_spec(ident.name, **ident.options) == spec


def test_defaults_keep_old_specs_and_old_json_exactly():
    spec = get_spec("cifar-resnet20")
    assert spec.shortcut_kind == "identity" and spec.block_order == "post"
    old = spec.to_dict()
    del old["shortcut_kind"], old["block_order"]  # a spec.json saved before these fields
    assert ArchSpec.from_dict(old) == spec
    assert build(ArchSpec.from_dict(old)).state_dict().keys() == build("cifar-resnet20").state_dict().keys()
    assert count(get_spec("cifar-resnet164")).params == count(get_spec("cifar-resnet164", block="basic")).params


def test_names_depths_and_blocks():
    p164, p1001 = get_spec("cifar-preresnet164"), get_spec("cifar-preresnet1001")
    assert [s.num_blocks for s in p164.stages[1:]] == [18] * 3 and p164.stages[1].block == "bottleneck"
    assert [s.num_blocks for s in p1001.stages[1:]] == [111] * 3 and p1001.depth == 1001
    assert [s.out_channels for s in p164.stages[1:]] == [64, 128, 256] and p164.shortcut == "B"
    p110 = get_spec("cifar-preresnet110")
    assert p110.stages[1].block == "basic" and p110.shortcut == "A" and p110.block_order == "pre"
    assert get_spec("cifar-resnet164").stages[1].block == "basic"  # the 6n+2 net, as before
    orig164 = get_spec("cifar-resnet164", block="bottleneck")
    assert orig164 == p164.replace(block_order="post", name="cifar-resnet164")
    hw = get_spec("cifar-highway20")
    assert hw.shortcut_kind == "gated" and hw.shortcut == "A" and hw.residual
    assert get_spec("cifar-highway20", residual=False) == get_spec("cifar-plain20")
    assert get_spec("cifar-resnet20", block_order="pre").name == "cifar-preresnet20"
    assert get_spec("preresnet50").stages == get_spec("resnet50").stages


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: get_spec("cifar-resnet20", shortcut_kind="open"),
         "shortcut_kind='open' is invalid: use one of identity, gated"),
        (lambda: get_spec("cifar-resnet20", block_order="mid"), "block_order='mid' is invalid: use one of post, pre"),
        (lambda: get_spec("cifar-plain20", shortcut_kind="gated"), "needs residual=True"),
        (lambda: get_spec("vgg16").replace(block_order="pre").validate(), "applies to basic and bottleneck blocks"),
        (lambda: get_spec("cifar-preresnet165"), "9n+2"),
        (lambda: get_spec("cifar-resnet20", block="dense"), "block='dense' is invalid"),
        (lambda: get_spec("vgg16", block_order="pre"), "does not take option(s) block_order"),
        (lambda: ArchSpec.from_json(json.dumps({**get_spec("cifar-resnet8").to_dict(), "shortcut_kind": ["x"]})).validate(),
         "shortcut_kind=['x'] is invalid"),
    ],
)
def test_bad_values_give_one_clear_error(call, fragment):
    with pytest.raises(SpecError) as e:
        call()
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_published_numbers_beside_the_new_nets():
    assert figure("cifar-preresnet110", CIFAR10).value == 6.37
    assert figure("cifar-preresnet164", CIFAR10).value == 5.46
    assert figure("cifar-preresnet1001", CIFAR10).value == 4.92
    assert figure("cifar-resnet1001", CIFAR10).value == 7.61
    assert figure("preresnet152", TOP1).value == 21.1
    with pytest.raises(KeyError):  # Table 6's 32-layer highway net is not our cifar-highway32
        figure("cifar-highway32", CIFAR10)
    rows = {r["net"]: r for r in beyond_rows()}
    assert rows["cifar-preresnet110"]["post_error_paper"] == 6.61
    assert rows["cifar-preresnet164"]["post_error_paper"] == 5.93
    assert rows["cifar-highway20"]["gate_params"] == 13_904
    text = beyond()
    assert "10,327,706" in text and "10,178,490" in text and "7.54" in text


# -- analysis ---------------------------------------------------------------------------------------
def test_gate_means_by_hand_and_the_figure():
    torch.manual_seed(0)
    model = build(get_spec("cifar-highway8", width=4)).eval()
    randomise_bn(model)
    x = torch.randn(8, 3, 32, 32)
    got = gate_means(model, x)
    assert [g.name for g in got] == ["conv2_x.0", "conv3_x.0", "conv4_x.0"]
    with torch.no_grad():
        h = model.conv1(x)
        t = model.conv2_x[0].gate(h)
    assert got[0].mean == pytest.approx(t.mean().item(), rel=1e-5)
    assert got[0].std == pytest.approx(t.std().item(), rel=1e-5)
    assert all(0 < g.mean < 1 for g in got)
    assert gate_means(build("cifar-resnet8"), x) == []
    fig = gates_figure({"highway-8": got, "pairs": [("a", 0.3), ("b", 0.9)]})
    assert list(fig.data[0].y) == [g.mean for g in got] and list(fig.data[1].y) == [0.3, 0.9]
    assert fig.layout.yaxis.range == (0, 1)


def test_layer_responses_of_pre_activation_blocks():
    torch.manual_seed(0)
    model = build(get_spec("cifar-preresnet8", width=4)).eval()
    randomise_bn(model)
    x = torch.randn(8, 3, 32, 32)
    got = layer_responses(model, x)
    assert [r.name for r in got] == ["conv1.0.bn", "conv2_x.0.bn2", "conv2_x.0.conv2", "conv3_x.0.bn2",
                                     "conv3_x.0.conv2", "conv4_x.0.bn2", "conv4_x.0.conv2"]

    def std(t):
        return torch.stack([t[:, c].std() for c in range(t.shape[1])]).mean().item()

    with torch.no_grad():
        h = torch.relu(model.conv1[0].bn(model.conv1[0].conv(x)))
        blk = model.conv2_x[0]
        a = blk.bn2(blk.conv1(h))  # conv1's output, normalised by the BN that follows it
        f = blk.conv2(torch.relu(a))  # the residual F(x), before the addition
    assert got[1].std == pytest.approx(std(a), rel=1e-5)
    assert got[2].std == pytest.approx(std(f), rel=1e-5)
    big = build("cifar-preresnet164")
    assert len(conv_bn_pairs(big)) == 1 + 54 and len(conv_bn_pairs(big, kernel=None)) == 1 + 54 * 3


# -- experiments ------------------------------------------------------------------------------------
def test_shortcut_and_preact_plans():
    s = shortcuts(20, width=8)
    assert [p.name for p in s][-1] == "resnet-20-gated" and s[-1].spec.name == "cifar-highway20"
    assert [p.name for p in shortcuts(20, kinds=("A", "gated"))] == ["plain-20", "resnet-20-A", "resnet-20-gated"]
    with pytest.raises(UsageError, match="shortcut kind"):
        shortcuts(20, kinds=("D",))
    post, pre = preact(20, width=8)
    assert (post.name, pre.name) == ("resnet-20-post", "resnet-20-pre")
    assert post.spec.stages == pre.spec.stages and (post.spec.block_order, pre.spec.block_order) == ("post", "pre")
    post164, pre164 = preact(164)
    assert post164.spec.stages[1].block == pre164.spec.stages[1].block == "bottleneck"
    assert post164.spec.shortcut == pre164.spec.shortcut == "B"
    assert EXPERIMENTS["preact"] is preact


def test_preact_experiment_cli_bad_depth(capsys):
    assert main(["experiment", "preact", "--data", "synthetic", "--depth", "21"]) == 2
    assert "CIFAR depth 21 is invalid" in capsys.readouterr().err


@pytest.mark.slow
def test_preact_experiment_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "exp"
    code = main(["experiment", "preact", "--data", "synthetic:256", "--depth", "8", "--width", "4",
                 "--recipe", "test", "--set", "iters=4", "--set", "batch_size=32", "--out", str(out), "--quiet"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["name"] for r in manifest["runs"]] == ["resnet-8-post", "resnet-8-pre"]
    assert [r["spec"]["block_order"] for r in manifest["runs"]] == ["post", "pre"]
    assert all(r["status"] == "finished" for r in manifest["runs"])
    analysis = json.loads((out / "resnet-8-pre" / "analysis.json").read_text())
    assert analysis["layer_responses"][2]["name"] == "conv2_x.0.conv2"


def test_shortcuts_cli_kinds_bad_values(capsys):
    assert main(["experiment", "shortcuts", "--data", "synthetic", "--kinds", "A,D"]) == 2
    assert "shortcut kind(s) D invalid: use A, B, C, gated" in capsys.readouterr().err
    assert main(["experiment", "shortcuts", "--data", "synthetic", "--kinds", " , "]) == 2
    assert "names no shortcut kind" in capsys.readouterr().err


def _gated_run(tmp_path, analysis):
    from resnet_explorer.runs import Run
    return Run(tmp_path / "resnet-8-gated", get_spec("cifar-highway8"), analysis=analysis)


def test_gates_text_and_report_figure_read_only_well_formed_gates(tmp_path):
    from resnet_explorer.report import gates_text, run_gates
    good = {"gate_means": {"init": [{"name": "conv2_x.0", "mean": 0.12, "std": 0.05}],
                           "final": [{"name": "conv2_x.0", "mean": 0.31, "std": 0.1}]}}
    run = _gated_run(tmp_path, good)
    assert run_gates(run) == good["gate_means"]
    assert gates_text([run]).splitlines()[1].split() == ["conv2_x.0", "0.120", "->", "0.310", "(std", "0.100)"]
    # a hostile or damaged analysis.json: the gates are left out, nothing raises
    for bad in (None, [], {"gate_means": "x"}, {"gate_means": {"init": [], "final": []}},
                {"gate_means": {"init": [{"name": "a", "mean": "0.1", "std": 0}], "final": [{"name": "a", "mean": 1, "std": 0}]}},
                {"gate_means": {"init": [{"name": "a", "mean": 0.1, "std": 0}], "final": []}},
                {"gate_means": {"init": [{"name": 3, "mean": 0.1, "std": 0}], "final": [{"name": 3, "mean": 0.1, "std": 0}]}}):
        assert run_gates(_gated_run(tmp_path, bad)) is None and gates_text([_gated_run(tmp_path, bad)]) == ""
    fig = gates_figure({"at init": good["gate_means"]["init"]})  # analysis.json's dicts, as they are
    assert list(fig.data[0].y) == [0.12] and list(fig.data[0].error_y.array) == [0.05]


@pytest.mark.slow
def test_gated_shortcuts_experiment_records_prints_and_reports_the_gates(tmp_path, capsys):
    from resnet_explorer.evaluate import load_model
    from resnet_explorer.data import parse_data
    from resnet_explorer.run_analysis import probe_batch
    out = tmp_path / "exp"
    # width 8: torch 2.14.1's CPU backward of a strided 1x1 conv in channels_last crashes below 8 channels
    code = main(["experiment", "shortcuts", "--kinds", "gated", "--data", "synthetic:256", "--depth", "8",
                 "--width", "8", "--recipe", "test", "--set", "iters=4", "--set", "batch_size=32",
                 "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert [r["name"] for r in json.loads((out / "manifest.json").read_text())["runs"]] == ["plain-8", "resnet-8-gated"]
    gates = json.loads((out / "resnet-8-gated" / "analysis.json").read_text())["gate_means"]
    assert "gate_means" not in json.loads((out / "plain-8" / "analysis.json").read_text())
    assert [g["name"] for g in gates["init"]] == [g["name"] for g in gates["final"]] == ["conv2_x.0", "conv3_x.0", "conv4_x.0"]
    x, _ = probe_batch(parse_data("synthetic:256"))
    torch.manual_seed(0)  # the run's seed: its initial weights
    spec = get_spec("cifar-highway8", width=8)
    assert [g["mean"] for g in gates["init"]] == pytest.approx([g.mean for g in gate_means(build(spec), x)], rel=1e-6)
    final = gate_means(load_model(out / "resnet-8-gated"), x)
    assert [g["mean"] for g in gates["final"]] == pytest.approx([g.mean for g in final], rel=1e-6)
    assert "resnet-8-gated: mean gate T(x) per block" in printed
    assert f"conv4_x.0  {gates['init'][2]['mean']:.3f} -> {gates['final'][2]['mean']:.3f}" in printed
    report = (out / "report.html").read_text()
    assert "Highway gates: mean T(x) per block" in report and "resnet-8-gated, after training" in report
