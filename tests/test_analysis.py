"""Layer responses (Fig. 7) and gradient flow, checked by hand on tiny nets."""

import pytest
import torch

from resnet_explorer import build, get_spec
from resnet_explorer.analysis import conv_bn_pairs, gradient_norms, layer_responses

from conftest import randomise_bn


def test_layer_responses_match_a_hand_computation():
    torch.manual_seed(0)
    model = build(get_spec("cifar-resnet8", width=4)).eval()
    randomise_bn(model)
    x = torch.randn(8, 3, 32, 32)
    got = layer_responses(model, x)
    # every 3x3 layer: the stem and the two convs of each block, in order
    assert [r.name for r in got] == [
        "conv1.0.bn", "conv2_x.0.bn1", "conv2_x.0.bn2", "conv3_x.0.bn1", "conv3_x.0.bn2",
        "conv4_x.0.bn1", "conv4_x.0.bn2",
    ]

    def std(t):
        return torch.stack([t[:, c].std() for c in range(t.shape[1])]).mean().item()

    with torch.no_grad():
        stem = model.conv1[0].bn(model.conv1[0].conv(x))
        h = torch.relu(stem)
        blk = model.conv2_x[0]
        a = blk.bn1(blk.conv1(h))
        b = blk.bn2(blk.conv2(torch.relu(a)))  # before the addition
    assert got[0].std == pytest.approx(std(stem), rel=1e-5)
    assert got[1].std == pytest.approx(std(a), rel=1e-5)
    assert got[2].std == pytest.approx(std(b), rel=1e-5)
    # the in-place ReLU and += would have changed these tensors if measured afterwards
    assert std(torch.relu(b + h)) != pytest.approx(got[2].std, rel=1e-3)


def test_plain_and_bottleneck_pairs():
    plain = build("cifar-plain20")
    assert len(conv_bn_pairs(plain)) == 19
    r50 = build("resnet50")
    names = [n for n, _, _ in conv_bn_pairs(r50)]
    assert len(names) == 16 and names[0] == "conv2_x.0.bn2"  # only the 3x3 of each bottleneck
    assert len(conv_bn_pairs(r50, kernel=None)) == 1 + 16 * 3


def test_gradient_norms_follow_layer_order_and_leave_model_untouched():
    torch.manual_seed(0)
    model = build(get_spec("cifar-plain8", width=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    norms = gradient_norms(model, x, y)
    assert [n for n, _ in norms][:2] == ["conv1.0.conv", "conv2_x.0.conv1"] and norms[-1][0] == "fc"
    assert all(v > 0 for _, v in norms)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # by hand for the fc layer
    model.zero_grad()
    torch.nn.functional.cross_entropy(model.train()(x), y).backward()
    assert norms[-1][1] == pytest.approx(model.fc.weight.grad.norm().item(), rel=1e-5)


def test_plain_gradients_spread_over_orders_of_magnitude_residual_do_not():
    """At init, a deep plain net's conv gradients differ by orders of magnitude from input to
    output (with BN they grow toward the input); the ResNet's stay within a narrow band."""
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

    def spread(name):
        torch.manual_seed(0)
        convs = [v for n, v in gradient_norms(build(name), x, y) if n != "fc"]
        return max(convs) / min(convs)

    plain56 = spread("cifar-plain56")
    assert plain56 > 50 * spread("cifar-resnet56")
    assert plain56 > 10 * spread("cifar-plain20")
