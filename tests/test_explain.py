"""The notebooks' library helpers: block anatomy, shortcut options, gradients at block inputs,
Table 3 and the baselines table, the tiny ImageNet-style tree, the synthetic-set cache."""

import hashlib

import pytest
import torch
from PIL import Image

from resnet_explorer import build, get_spec
from resnet_explorer import data as D
from resnet_explorer.explain import (
    activation_gradient_norms,
    block_steps,
    image_grid,
    norms_figure,
    shortcut_rows,
    steps_table,
)
from resnet_explorer.tables import baseline_rows, baselines, table3, table3_rows


def _fresh(name, **kw):
    torch.manual_seed(0)
    return build(get_spec(name, **kw))


@pytest.mark.parametrize("name, stage, option", [
    ("cifar-resnet8", "conv3_x", "A"),   # option A, shape changes
    ("cifar-resnet14", "conv2_x", "A"),  # identity
    ("cifar-resnet8", "conv3_x", "B"),   # projection
    ("cifar-plain8", "conv3_x", "A"),    # no shortcut
    ("resnet50", "conv3_x", "B"),        # bottleneck
])
def test_block_steps_rebuild_the_forward_pass(name, stage, option):
    kw = {"width": 4} if name.startswith("cifar") else {"width": 4, "input_size": 64}
    model = _fresh(name, shortcut=option, **kw).eval()
    block = getattr(model, stage)[-1 if "14" in name else 0]
    c = block.conv1.in_channels
    x = torch.relu(torch.randn(2, c, 16, 16))
    steps = block_steps(block, x)
    with torch.no_grad():
        y = block(x.clone())
    assert torch.allclose(steps[-1].tensor, y, atol=1e-6)
    names = [s.name for s in steps]
    assert names[0] == "x" and names[-1] == "y = relu(...)"
    if block.shortcut is None:
        assert "shortcut(x)" not in names and names[-2] == "F(x)"
    else:
        f, sc, total = (steps[names.index(n)].tensor for n in ("F(x)", "shortcut(x)", "F(x) + shortcut(x)"))
        assert torch.allclose(total, f + sc)
        assert torch.equal(steps[-1].tensor, torch.relu(total))
    assert len([n for n in names if n.startswith("relu(bn")]) == (2 if "bottleneck" in type(block).__name__.lower() else 1)
    assert steps[-1].negative == 0.0
    table = steps_table(steps)
    assert table.splitlines()[0].startswith("step") and len(table.splitlines()) == len(steps) + 1


def test_step_statistics():
    from resnet_explorer.explain import Step

    s = Step("t", "", torch.tensor([[-1.0, 1.0, 2.0, -3.0]]))
    assert s.negative == 0.5 and s.shape == (1, 4)
    assert s.std == pytest.approx(torch.tensor([-1.0, 1.0, 2.0, -3.0]).std().item())


def test_shortcut_rows():
    rows = {r["option"]: r for r in shortcut_rows(16, 32, 2)}
    assert rows["A"]["downsampling"] == "ShortcutA" and rows["A"]["downsampling_params"] == 0
    assert rows["A"]["zero_channels"] == 16 and rows["A"]["same_shape"] == "Identity"
    assert rows["B"]["downsampling_params"] == 16 * 32 + 2 * 32 and rows["B"]["same_shape_params"] == 0
    assert rows["C"]["same_shape"] == "Projection" and rows["C"]["same_shape_params"] == 32 * 32 + 2 * 32
    assert all(r["out_shape"] == (1, 32, 4, 4) for r in rows.values())
    assert rows["B"]["zero_channels"] == 0


def test_activation_gradient_norms_match_autograd_by_hand():
    model = _fresh("cifar-resnet8", width=4)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = activation_gradient_norms(model, x, y)
    assert [n for n, _ in got] == ["conv2_x.0", "conv3_x.0", "conv4_x.0"]
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics untouched

    h0 = model.conv1(x)
    h1 = model.conv2_x(h0)
    h2 = model.conv3_x(h1)
    loss = torch.nn.functional.cross_entropy(model.fc(model.avgpool(model.conv4_x(h2))), y)
    want = [g.norm().item() for g in torch.autograd.grad(loss, [h0, h1, h2])]
    assert [v for _, v in got] == pytest.approx(want, rel=1e-5)


def test_plain_gradients_spread_more_than_residual_ones():
    x, y = torch.randn(32, 3, 32, 32), torch.arange(32) % 10

    def spread(name):
        values = [v for _, v in activation_gradient_norms(_fresh(name, width=8), x, y)]
        return max(values) / min(values)

    assert spread("cifar-plain56") > 10 * spread("cifar-resnet56")


def test_activation_gradient_norms_of_a_vgg_net_use_its_stages():
    model = _fresh("vgg-a", input_size=32, num_classes=10)
    got = activation_gradient_norms(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert [n for n, _ in got] == ["conv2", "conv3", "conv4", "conv5"]  # conv1's input is the image


def test_norms_figure_and_image_grid():
    fig = norms_figure({"plain-20": [("a", 1.0), ("b", 10.0)], "resnet-20": [("a", 2.0), ("b", 3.0)]}, "t")
    assert [t.name for t in fig.data] == ["plain-20", "resnet-20"]
    assert [t.line.dash for t in fig.data] == ["dash", "solid"]
    assert list(fig.data[0].y) == [1.0, 10.0] and fig.layout.yaxis.type == "log"

    grid = image_grid([torch.full((3, 4, 6), 0.5), torch.full((3, 2, 2), 2.0), torch.zeros(3, 5, 5, dtype=torch.uint8)],
                      titles=["a", "b", "c"], cols=2)
    assert len(grid.data) == 3 and grid.data[0].z.shape == (4, 6, 3)
    assert grid.data[0].z.max() == 128 and grid.data[1].z.max() == 255  # [0, 1] floats scaled, clipped


def test_table3_counts_the_projections():
    rows = {r["option"]: r for r in table3_rows()}
    # option B: one 1x1 projection (+ BN) at conv3_1, conv4_1 and conv5_1 of ResNet-34
    b = sum(i * o + 2 * o for i, o in ((64, 128), (128, 256), (256, 512)))
    assert rows["A"]["shortcut_params"] == 0 and rows["B"]["shortcut_params"] == b
    assert rows["A"]["params"] + b == rows["B"]["params"] == 21_797_672
    assert rows["C"]["params"] > rows["B"]["params"] and rows["C"]["macs"] > rows["B"]["macs"]
    assert (rows["A"]["top1_paper"], rows["C"]["top5_paper"]) == (25.03, 7.40)
    text = table3()
    assert "ResNet-34 B" in text and "21,797,672" in text and "24.52" in text


def test_baselines_table():
    rows = {r["net"]: r for r in baseline_rows()}
    fc = 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000  # AlexNet: 6x6x256 -> 4096 -> 4096 -> 1000
    assert rows["alexnet"]["fc_params"] == fc and rows["alexnet"]["params"] == 60_965_224
    assert rows["resnet50"]["fc_params"] == 2048 * 1000 + 1000
    assert rows["vgg-e"]["macs_paper"] == 19.6e9 and rows["vgg-a"]["top1_paper"] is None
    assert rows["resnet152"]["depth"] == 152 and rows["vgg-e"]["depth"] == 19
    text = baselines()
    assert "60,965,224" in text and "resnet152" in text


def test_write_synthetic_imagenet(tmp_path):
    root = D.write_synthetic_imagenet(tmp_path / "a", classes=3, train_per_class=4, val_per_class=2)
    source = D.parse_data(f"imagenet:{root}")
    assert source.classes == ["n00000000", "n00000001", "n00000002"] and source.image_size == 224
    files = sorted((tmp_path / "a").rglob("*.JPEG"))
    assert len(files) == 3 * (4 + 2)
    assert {Image.open(f).size for f in files} == {(320, 256), (256, 288), (288, 288)}
    again = D.write_synthetic_imagenet(tmp_path / "b", classes=3, train_per_class=4, val_per_class=2)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert [digest(f) for f in files] == [digest(f) for f in sorted((tmp_path / "b").rglob("*.JPEG"))]
    assert again == str(tmp_path / "b")
    # each class folder holds images of that synthetic class: the 32x32 originals, upscaled
    x, y, _, _ = D.synthetic_cifar(10 * 6, 10 * 4, 0)
    first = Image.fromarray(x[y == 1][0].permute(1, 2, 0).numpy()).resize((256, 288), Image.BILINEAR)
    written = Image.open(tmp_path / "a" / "train" / "n00000001" / "train_1_0000.JPEG")
    assert written.size == (256, 288)
    import numpy as np

    diff = np.abs(np.asarray(written, dtype=float) - np.asarray(first, dtype=float)).mean()
    assert diff < 8  # the same picture, up to JPEG
    with pytest.raises(D.DataError, match="classes=11"):
        D.write_synthetic_imagenet(tmp_path / "c", classes=11)


def test_synthetic_set_is_generated_once_and_handed_out_as_copies():
    source = D.parse_data("synthetic:200:3")
    a = D.load_tensors(source)
    a[0].zero_()
    b = D.load_tensors(source)
    fresh = D.synthetic_cifar(200, 2000, 3)
    assert all(torch.equal(u, v) for u, v in zip(b, fresh))
    assert b[0].data_ptr() != D.load_tensors(source)[0].data_ptr()
    other = D.load_tensors(D.parse_data("synthetic:100:3"))
    assert other[0].shape[0] == 100 and len(D.synthetic._SYNTHETIC_CACHE) == 1  # only the last one is kept
