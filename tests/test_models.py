"""The builder: torchvision equivalence, option A, init, pickling, the paper's layer names."""

import math
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from resnet_explorer import SpecError, build, get_spec
from resnet_explorer.compat import from_torchvision, load_torchvision_state_dict, torchvision_key
from resnet_explorer.model import BasicBlock, Bottleneck, Conv1x1, Projection, ShortcutA


@pytest.mark.parametrize("depth", [18, 50])
def test_loads_torchvision_weights_and_gives_the_same_outputs(depth):
    torch.manual_seed(depth)
    tv = getattr(torchvision.models, f"resnet{depth}")().eval()
    # make BN statistics non-trivial so a wrong mapping cannot hide
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = from_torchvision(tv, depth).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert set(ours.state_dict()) == {torchvision_key(k) for k in tv.state_dict()}


def test_key_mapping_is_documented_by_example():
    assert torchvision_key("conv1.weight") == "conv1.0.conv.weight"
    assert torchvision_key("bn1.running_var") == "conv1.0.bn.running_var"
    assert torchvision_key("layer2.0.downsample.0.weight") == "conv3_x.0.shortcut.conv.weight"
    assert torchvision_key("layer2.0.downsample.1.bias") == "conv3_x.0.shortcut.bn.bias"
    assert torchvision_key("layer4.2.conv3.weight") == "conv5_x.2.conv3.weight"
    assert torchvision_key("fc.bias") == "fc.bias"


def test_torchvision_weights_need_option_b_and_v15():
    tv = torchvision.models.resnet50()
    with pytest.raises(SpecError, match="shortcut='B' and stride_at='3x3'"):
        load_torchvision_state_dict(build("resnet50", stride_at="1x1"), tv.state_dict())


def test_option_a_subsamples_and_zero_pads():
    sc = ShortcutA(2, 5, 2)
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)
    y = sc(x)
    assert y.shape == (2, 5, 2, 2)
    assert torch.equal(y[:, :2], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 2:]) == 0


def test_shortcut_options_in_built_models():
    a = build("cifar-resnet20")
    assert isinstance(a.conv3_x[0].shortcut, ShortcutA)
    assert isinstance(a.conv3_x[1].shortcut, nn.Identity)
    b = build("cifar-resnet20", shortcut="B")
    assert isinstance(b.conv3_x[0].shortcut, Projection) and isinstance(b.conv3_x[1].shortcut, nn.Identity)
    c = build("cifar-resnet20", shortcut="C")
    assert all(isinstance(blk.shortcut, Projection) for s in ("conv2_x", "conv3_x") for blk in getattr(c, s))
    plain = build("cifar-plain20")
    assert all(blk.shortcut is None for blk in plain.conv4_x)
    # plain and residual (option A) nets have exactly the same parameters, name by name
    assert {k: v.shape for k, v in plain.named_parameters()} == {k: v.shape for k, v in a.named_parameters()}


def test_strided_1x1_convs_subsample_first_and_match_a_strided_conv():
    """`Conv1x1` (projections, gates, the v1 bottleneck's conv1) gives a strided 1×1 conv's output
    and weight gradient, keeps its stride for hooks and counters, and is what the nets hold."""
    torch.manual_seed(0)
    ours = Conv1x1(8, 16, 1, 2, bias=True)
    x = torch.randn(3, 8, 15, 14, requires_grad=True)
    y = ours(x)
    want = nn.functional.conv2d(x, ours.weight, ours.bias, stride=2)
    assert y.shape == (3, 16, 8, 7) and torch.allclose(y, want, atol=1e-6)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, ours.weight))
    wx, ww = torch.autograd.grad(want.square().sum(), (x, ours.weight))
    assert torch.allclose(gx, wx, atol=1e-5) and torch.allclose(gw, ww, atol=1e-4)
    assert ours.stride == (2, 2) and isinstance(ours, nn.Conv2d)
    net = build(get_spec("resnet18", width=8))
    assert type(net.conv3_x[0].shortcut.conv) is Conv1x1 and type(net.conv3_x[1].conv1) is nn.Conv2d


def test_a_narrow_resnet18_trains_a_step_in_channels_last_at_224():
    """The case that aborted (heap corruption in oneDNN on AVX-512 CPUs, torch 2.14.1) with a
    strided 1×1 conv: run in a child process, so a regression fails this test, not the suite."""
    code = ("import torch; from resnet_explorer import build, get_spec; "
            "m = build(get_spec('resnet18', width=8)).to(memory_format=torch.channels_last); "
            "x = torch.randn(6, 3, 224, 224).contiguous(memory_format=torch.channels_last); "
            "m(x).sum().backward(); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


def test_residual_block_adds_before_the_second_relu():
    blk = BasicBlock(4, 4, 1, residual=True, shortcut="A").eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        f = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(x)))))
        assert torch.allclose(blk(x), torch.relu(f + x))
        plain = BasicBlock(4, 4, 1, residual=False, shortcut="A").eval()
        plain.load_state_dict(blk.state_dict())
        assert torch.allclose(plain(x), torch.relu(f))


def test_bottleneck_stride_placement():
    v1 = build("resnet50", stride_at="1x1")
    v15 = build("resnet50", stride_at="3x3")
    assert v1.conv3_x[0].conv1.stride == (2, 2) and v1.conv3_x[0].conv2.stride == (1, 1)
    assert v15.conv3_x[0].conv1.stride == (1, 1) and v15.conv3_x[0].conv2.stride == (2, 2)
    assert isinstance(v1.conv2_x[0], Bottleneck)
    x = torch.randn(1, 3, 64, 64)
    assert v1.eval()(x).shape == v15.eval()(x).shape == (1, 1000)


def test_paper_layer_names_address_modules():
    m = build("resnet34")
    names = [n for n, _ in m.named_children()]
    assert names == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "avgpool", "fc"]
    first_conv3 = m.conv3_x[0]  # the paper's conv3_1
    assert first_conv3.conv1.in_channels == 64 and first_conv3.conv1.out_channels == 128
    assert m.get_submodule("conv1.0.conv").kernel_size == (7, 7)
    vgg = build("vgg16")
    assert [n for n, _ in vgg.named_children()][-8:] == ["avgpool", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc"]
    assert m.spec == get_spec("resnet34")


def test_he_initialisation_and_zero_init_residual():
    torch.manual_seed(0)
    m = build("resnet50")
    w = m.conv4_x[0].conv2.weight  # 3x3, 256 in: fan_in 2304
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    assert all(bn.weight.eq(1).all() for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    z = build("resnet50", zero_init_residual=True)
    assert all(b.bn3.weight.eq(0).all() for s in ("conv2_x", "conv5_x") for b in getattr(z, s))
    assert z.conv1[0].bn.weight.eq(1).all()
    zc = build("cifar-resnet20", zero_init_residual=True).eval()
    x = torch.randn(1, 16, 32, 32)
    with torch.no_grad():  # every block starts as the identity (after the ReLU)
        assert torch.allclose(zc.conv2_x[1](x.relu()), x.relu())


def test_alexnet_layers():
    m = build("alexnet")
    assert m.conv1[0].conv.out_channels == 96 and m.conv1[0].conv.kernel_size == (11, 11)
    assert m.conv2[0].conv.groups == 2 and m.conv3[0].conv.groups == 1
    assert m.conv4[0].conv.groups == 2 and m.conv5[0].conv.groups == 2
    lrn = m.conv1[0].lrn
    assert lrn.size == 5 and lrn.alpha == pytest.approx(5e-4) and lrn.k == 2  # paper's α=1e-4, PyTorch divides by n
    pool = m.conv1[0].pool
    assert pool.kernel_size == 3 and pool.stride == 2  # overlapping
    assert isinstance(m.drop6, nn.Dropout) and m.drop6.p == 0.5
    assert build("alexnet-groups1").conv2[0].conv.groups == 1


def test_models_pickle_whole(tmp_path):
    for name in ("cifar-resnet20", "resnet18", "alexnet", "cifar-highway8", "cifar-preresnet11"):
        m = build(name).eval()
        path = tmp_path / f"{name}.pt"
        torch.save(m, path)
        again = torch.load(path, weights_only=False).eval()
        x = torch.randn(1, 3, m.spec.input_size, m.spec.input_size)
        with torch.no_grad():
            assert torch.equal(m(x), again(x))
        assert again.spec == m.spec


def test_input_too_small_is_one_clear_error():
    with pytest.raises(SpecError, match=r"input size 16 is too small for vgg-d: .* use input_size >= 32"):
        build("vgg16", input_size=16)
    with pytest.raises(SpecError, match=r"too small for alexnet.*input_size >= 67"):
        build("alexnet", input_size=40)
    build("alexnet", input_size=67)
    build("resnet18", input_size=1)  # every stride-2 stage still leaves a 1x1 map
