"""The architecture spec: JSON round trip, validation, the paper's names."""

import json

import pytest

from resnet_explorer import ArchSpec, SpecError, get_spec
from resnet_explorer.zoo import IMAGENET_BLOCKS, VGG_CONFIGS

ALL_NAMES = (
    [f"{k}{d}" for k in ("resnet", "plain") for d in IMAGENET_BLOCKS]
    + [f"cifar-{k}{d}" for k in ("resnet", "plain") for d in (8, 20, 56, 110)]
    + [f"vgg-{c}" for c in VGG_CONFIGS]
    + ["vgg11", "vgg13", "vgg16", "vgg19", "alexnet", "alexnet-groups1"]
)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_json_round_trip_is_identity(name):
    spec = get_spec(name)
    text = spec.to_json()
    assert ArchSpec.from_json(text) == spec
    assert ArchSpec.from_dict(json.loads(text)).to_json() == text


def test_random_specs_round_trip(make_random_spec):
    for seed in range(20):
        spec = make_random_spec(seed)
        assert ArchSpec.from_json(spec.to_json()) == spec


def test_names_follow_the_paper():
    spec = get_spec("resnet50")
    assert [s.name for s in spec.stages] == ["conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert [s.num_blocks for s in spec.stages[1:]] == [3, 4, 6, 3]
    assert [s.out_channels for s in spec.stages[1:]] == [256, 512, 1024, 2048]
    assert get_spec("resnet152").stages[3].num_blocks == 36
    cifar = get_spec("cifar-resnet56")
    assert [s.name for s in cifar.stages] == ["conv1", "conv2_x", "conv3_x", "conv4_x"]
    assert [s.num_blocks for s in cifar.stages[1:]] == [9, 9, 9]
    assert [s.width for s in cifar.stages[1:]] == [16, 32, 64]
    assert cifar.shortcut == "A" and cifar.input_size == 32 and cifar.num_classes == 10


@pytest.mark.parametrize(
    "name,depth",
    [("resnet18", 18), ("resnet34", 34), ("resnet50", 50), ("resnet101", 101), ("resnet152", 152),
     ("cifar-resnet20", 20), ("cifar-plain110", 110), ("cifar-resnet1202", 1202),
     ("vgg-a", 11), ("vgg-b", 13), ("vgg-c", 16), ("vgg-d", 16), ("vgg-e", 19), ("alexnet", 8)],
)
def test_depth_counts_weighted_layers_like_the_paper(name, depth):
    assert get_spec(name).depth == depth


def test_aliases_and_plain_twins():
    assert get_spec("vgg16") == get_spec("vgg-d")
    assert get_spec("vgg19").stages == get_spec("vgg-e").stages
    plain = get_spec("plain34")
    assert not plain.residual and plain.stages == get_spec("resnet34").stages
    assert get_spec("resnet34", residual=False) == plain
    assert get_spec("resnet50").stride_at == "1x1"  # the paper's placement by default


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: get_spec("resnet42"), "depth 42 is invalid: use one of 18, 34, 50, 101, 152"),
        (lambda: get_spec("resnext50"), "unknown architecture 'resnext50'"),
        (lambda: get_spec("cifar-resnet21"), "6n+2"),
        (lambda: get_spec("cifar-resnet2"), "6n+2"),
        (lambda: get_spec("resnet50", shortcut="D"), "shortcut='D' is invalid: use one of A, B, C"),
        (lambda: get_spec("resnet50", stride_at="5x5"), "stride_at='5x5' is invalid"),
        (lambda: get_spec("cifar-resnet20", width=0), "width=0 is invalid"),
        (lambda: get_spec("cifar-resnet20", width=-3), "width=-3 is invalid"),
        (lambda: get_spec("cifar-resnet20", num_classes=0), "num_classes=0 is invalid"),
        (lambda: get_spec("vgg16", shortcut="A"), "does not take option(s) shortcut"),
        (lambda: get_spec("alexnet", residual=True), "no residual version"),
        (lambda: ArchSpec.from_json("{not json"), "not valid JSON"),
        (lambda: ArchSpec.from_json('{"name": "x"}'), "malformed architecture spec"),
    ],
)
def test_bad_input_gives_one_clear_error(call, fragment):
    with pytest.raises(SpecError) as e:
        call()
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


def test_unknown_name_lists_valid_ones():
    with pytest.raises(SpecError, match="resnet18.*cifar-resnetD.*vgg-a.*alexnet"):
        get_spec("resnet-56")


def test_unknown_block_and_duplicate_stage():
    spec = get_spec("cifar-resnet20")
    spec.stages[1].block = "dense"
    with pytest.raises(SpecError, match="block='dense' is invalid: use one of conv, basic, bottleneck"):
        spec.validate()
    spec = get_spec("cifar-resnet20")
    spec.stages[2].name = "conv2_x"
    with pytest.raises(SpecError, match="unique"):
        spec.validate()
