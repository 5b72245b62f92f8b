"""Analytic counting: the paper's numbers, and cross-checks against fvcore and torchinfo."""

import warnings

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torchinfo import summary

from resnet_explorer import Stage, build, count, get_spec
from resnet_explorer.paper import MACS, PARAMS, TABLE1_MACS, TORCHVISION_PARAMS, figure

CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


@pytest.mark.parametrize("depth,params", CIFAR_PARAMS.items())
def test_cifar_params_exact_and_plain_equals_residual(depth, params):
    assert count(get_spec(f"cifar-resnet{depth}")).params == params
    assert count(get_spec(f"cifar-plain{depth}")).params == params
    # Table 6 prints it rounded: 0.27M, 0.46M, …, 1.7M, 19.4M
    paper = figure(f"cifar-resnet{depth}", PARAMS)
    digits = len(paper.printed.rstrip("M").split(".")[1])
    assert round(params / 1e6, digits) == paper.value / 1e6


def test_cifar_options_b_and_c_add_projection_parameters():
    a = count(get_spec("cifar-resnet20")).params
    b = count(get_spec("cifar-resnet20", shortcut="B")).params
    c = count(get_spec("cifar-resnet20", shortcut="C")).params
    # B: two strided 1x1 projections (16->32, 32->64) with BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert c > b


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_table1_multiply_adds(depth):
    v1 = count(get_spec(f"resnet{depth}", stride_at="1x1")).macs
    v15 = count(get_spec(f"resnet{depth}", stride_at="3x3")).macs
    assert v15 == pytest.approx(TABLE1_MACS["3x3"][depth], rel=0.005)
    assert v1 == pytest.approx(TABLE1_MACS["1x1"][depth], rel=0.005 if depth >= 50 else 0.02)
    # Table 1 prints 18/34 layers to one decimal, cut not rounded: 1.81 -> 1.8, 3.66 -> 3.6 G.
    paper = figure(f"resnet{depth}", MACS, shortcut="A" if depth < 50 else "B", stride_at="1x1").value
    assert int(v1 / 1e8) / 10 == paper / 1e9 or depth >= 50
    if depth >= 50:  # the 0.23 G difference: the strided 1x1 convs
        assert (v15 - v1) / 1e9 == pytest.approx(0.23, abs=0.005)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_option_b_v15_has_torchvision_parameter_counts(depth):
    import torchvision

    ours = count(get_spec(f"resnet{depth}", shortcut="B", stride_at="3x3")).params
    tv = sum(p.numel() for p in getattr(torchvision.models, f"resnet{depth}")().parameters())
    assert ours == tv == TORCHVISION_PARAMS[depth]


def test_vgg_and_the_18_percent():
    vgg16 = count(get_spec("vgg16")).macs
    vgg19 = count(get_spec("vgg19")).macs
    assert vgg16 == pytest.approx(15.47e9, rel=0.005)
    assert vgg19 == pytest.approx(19.63e9, rel=0.005)
    for name in ("plain34", "resnet34"):
        ratio = count(get_spec(name)).macs / vgg19
        assert ratio == pytest.approx(0.18, abs=0.01)


def test_alexnet_paper_shapes_and_sixty_million_params():
    c = count(get_spec("alexnet"))
    assert c.row("conv1.0.conv").out_shape == (96, 55, 55)
    assert c.row("conv5.0.pool").out_shape == (256, 6, 6)
    assert c.params == pytest.approx(60e6, rel=0.02)
    # conv2 sees only its own GPU's 48 maps: 256 * 48 * 5 * 5 weights + 256 biases
    assert c.row("conv2.0.conv").params == 256 * 48 * 25 + 256
    one = count(get_spec("alexnet-groups1"))
    assert one.row("conv2.0.conv").params == 256 * 96 * 25 + 256


def test_counts_scale_with_input_size():
    base = count(get_spec("resnet50"))
    big = count(get_spec("resnet50", input_size=448))
    assert big.params == base.params
    conv_macs = sum(r.macs for r in base.rows if r.kind == "conv")
    assert big.macs - base.rows[-1].macs == 4 * conv_macs


def test_per_stage_sums_and_other_ops_column():
    c = count(get_spec("resnet18"))
    stages = c.by_stage()
    assert list(stages) == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avgpool", "fc"]
    assert sum(s["macs"] for s in stages.values()) == c.macs
    assert stages["conv5_x"]["out"] == (512, 7, 7)
    assert stages["conv2_x"]["out"] == (64, 56, 56)
    assert all(r.macs == 0 for r in c.rows if r.kind in ("bn", "pool", "add", "avgpool"))
    add = c.row("conv2_x.0.add")
    assert add.other_ops == 64 * 56 * 56
    plain = count(get_spec("plain18"))
    assert not any(r.kind == "add" for r in plain.rows)


def _fvcore_conv_linear(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        ops = fa.by_operator()
        by_module = fa.by_module()
    return sum(v for k, v in ops.items() if k in ("conv", "linear", "addmm", "matmul")), by_module


def _torchinfo_expected(c):
    """torchinfo counts conv biases per output position and BN / fc biases once."""
    extra = 0
    for r in c.rows:
        if r.kind == "conv":
            out_c, h, w = r.out_shape
            weights = r.macs // (h * w)
            bias = r.params - weights
            extra += bias * h * w
        elif r.kind == "bn":
            extra += r.params
        elif r.kind == "fc":
            extra += r.out_shape[0]
    return c.macs + extra


def _cross_check(spec):
    model = build(spec).eval()
    c = count(spec)
    x = torch.randn(1, spec.in_channels, spec.input_size, spec.input_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, spec.num_classes)
    # parameters: total and layer by layer, each row against the module of the same name
    assert c.params == sum(p.numel() for p in model.parameters())
    for r in c.rows:
        if r.kind in ("conv", "bn", "fc"):
            assert r.params == sum(p.numel() for p in model.get_submodule(r.name).parameters()), r.name
    # multiply-adds: fvcore traces the real model
    total, by_module = _fvcore_conv_linear(model, x)
    assert c.macs == total
    for r in c.rows:
        if r.kind in ("conv", "fc"):
            assert by_module[r.name] == r.macs, r.name
    # torchinfo: parameters and its own mult-add convention
    info = summary(model, input_size=tuple(x.shape), verbose=0)
    assert info.total_params == c.params
    assert info.total_mult_adds == _torchinfo_expected(c)


NAMED = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34", "plain50",
    "cifar-resnet20", "cifar-plain20", "cifar-resnet56", "cifar-resnet110",
    "vgg-a", "vgg-a-lrn", "vgg-b", "vgg-c", "vgg-d", "vgg-e", "alexnet", "alexnet-groups1",
    # beyond the paper: highway-gated shortcuts and pre-activation blocks
    "cifar-highway20", "cifar-highway32", "cifar-preresnet20", "cifar-preresnet110", "cifar-preresnet164",
    "preresnet50", pytest.param("preresnet101", marks=pytest.mark.slow),
    pytest.param("preresnet152", marks=pytest.mark.slow), pytest.param("cifar-preresnet1001", marks=pytest.mark.slow),
    pytest.param("cifar-resnet1001", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", NAMED)
def test_cross_check_named_nets(name):
    _cross_check(get_spec(name))


@pytest.mark.parametrize(
    "name,opts",
    [("resnet50", {"shortcut": "A"}), ("resnet50", {"shortcut": "C", "stride_at": "3x3"}),
     ("resnet34", {"shortcut": "A"}), ("resnet18", {"shortcut": "C", "input_size": 193}),
     ("cifar-resnet20", {"shortcut": "B"}), ("cifar-resnet20", {"shortcut": "C"}),
     ("cifar-highway20", {"shortcut": "B"}), ("cifar-highway20", {"shortcut": "C", "block_order": "pre"}),
     ("cifar-preresnet20", {"shortcut": "C"}), ("cifar-plain20", {"block_order": "pre"}),
     ("highway18", {"shortcut": "C"}), ("preresnet18", {"shortcut": "A", "input_size": 97}),
     pytest.param("cifar-resnet1202", {}, marks=pytest.mark.slow)],
)
def test_cross_check_shortcut_options(name, opts):
    _cross_check(get_spec(name, **opts))


@pytest.mark.parametrize("seed", range(8))
def test_cross_check_random_specs(make_random_spec, seed):
    _cross_check(make_random_spec(seed))


@pytest.mark.parametrize("seed", range(8))
def test_cross_check_random_gated_and_pre_activation_specs(make_random_spec, seed):
    spec = make_random_spec(seed)
    if not any(not s.is_conv for s in spec.stages):
        spec.stages[-1] = Stage("conv9_x", "bottleneck" if seed % 2 else "basic", 2, 4, 2)
    order = "pre" if seed % 4 < 2 else "post"
    _cross_check(spec.replace(residual=True, shortcut_kind="gated" if seed % 3 else "identity", block_order=order))


def test_si_is_the_one_formatter_of_counts():
    from resnet_explorer.count import si
    from resnet_explorer.diagram import network_diagram
    from resnet_explorer.tables import format_info

    assert [si(n) for n in (999, 1500, 1_234_567, 252_887_680, 3.6e9, -2e6)] == [
        "999", "1.50 k", "1.23 M", "252.89 M", "3.60 G", "-2.00 M"]
    c = count(get_spec("cifar-resnet110"))
    assert f"({si(c.macs)})" in format_info(c, get_spec("cifar-resnet110")) and si(c.macs) == "252.89 M"
    assert network_diagram(get_spec("cifar-resnet110")).layout.title.text.endswith("252.89 M multiply-adds")
