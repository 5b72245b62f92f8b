"""The architecture spec: JSON round trip, validation, the paper's names."""

import json
import math

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


def test_a_spec_describes_what_kind_of_net_it_is():
    assert get_spec("resnet50").describe() == "residual, shortcut B, stride at 1x1 (paper v1)"
    assert get_spec("resnet50", stride_at="3x3", residual=False).describe() == "plain, stride at 3x3 (v1.5)"
    assert get_spec("cifar-highway20").describe() == "residual, shortcut A, highway-gated"
    assert get_spec("cifar-preresnet20").describe() == "residual, shortcut A, pre-activation"
    vgg = get_spec("vgg16")
    assert vgg.describe() == "plain" and not vgg.has_blocks and not vgg.has_shortcuts
    # a residual flag on a net without blocks adds no shortcut: it is still a plain net
    assert not vgg.replace(residual=True).has_shortcuts and vgg.replace(residual=True).describe() == "plain"
    plain = get_spec("cifar-plain20")
    assert plain.has_blocks and not plain.has_shortcuts and not plain.is_gated and not plain.is_preactivation
    assert get_spec("cifar-highway20").is_gated and get_spec("preresnet50").is_preactivation


# -- a spec dict from a file is hostile: any malformed one is a SpecError, never another exception --

def _deep(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


def _looped():
    x = [1]
    x.append(x)
    return x


class _Hostile:
    def __repr__(self):
        raise RuntimeError("a repr that fails")

    def __eq__(self, other):
        raise RuntimeError("an == that fails")

    __hash__ = object.__hash__


HOSTILE = [None, True, False, 0, 3, -1, 2**31, -(2**63), 10**5000, 1.5, float("nan"), float("inf"), "", "x",
           "3", "\n\x00", [], [1], ["x"], {}, {"a": 1}, {1: 2}, _deep(5000), _looped(), (1, 2), b"3", object(),
           _Hostile(), 3 + 0j]


OPTIONAL = {"padding", "pool"}  # the fields that may be null


def _fits(key, old, new) -> bool | None:
    """Whether ``new`` has the type the field ``key`` (now ``old``) wants: True, False, or
    None (it depends on what is inside it)."""
    if key in OPTIONAL:
        if new is None:
            return True
        old = {"padding": 0, "pool": {}}[key] if old is None else old
    if isinstance(old, bool):
        return isinstance(new, bool)
    if isinstance(old, (int, float)):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            return False
        if isinstance(new, int):
            return abs(new) < 2**31
        return isinstance(old, float) and math.isfinite(new)
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, list):
        return None if isinstance(new, (list, tuple)) else False
    return None if isinstance(new, dict) else False


def _nodes(tree, path=""):
    """{path: (parent, key)} of every value in a spec dict, paths written as the errors write them."""
    found = {}
    for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
        where = (f"{path}.{key}" if path else key) if isinstance(tree, dict) else f"{path}[{key}]"
        found[where] = (tree, key)
        if isinstance(value, (dict, list)):
            found.update(_nodes(value, where))
    return found


def _load(d):
    """from_dict, then validate: a spec, or the SpecError's message (one line); any other
    exception fails the test."""
    try:
        return ArchSpec.from_dict(d).validate()
    except SpecError as e:
        assert "\n" not in str(e) and len(str(e)) < 400, str(e)
        return str(e)


@pytest.mark.parametrize("name", ["cifar-resnet8", "alexnet", "cifar-highway8", "preresnet50"])
def test_any_malformed_spec_dict_is_one_spec_error(name):
    good = get_spec(name).to_dict()
    assert _load(good) == get_spec(name)
    wrong = 0
    for where in _nodes(good):
        for value in HOSTILE:  # every value of the dict, replaced by each hostile one
            d = json.loads(json.dumps(good))
            parent, key = _nodes(d)[where]
            old, parent[key] = parent[key], value
            got = _load(d)
            if _fits(key, old, value) is False:
                wrong += 1
                assert isinstance(got, str) and got.startswith(f"malformed architecture spec: {where}="), (value, got)
            else:
                assert isinstance(got, (ArchSpec, str))
        d = json.loads(json.dumps(good))
        parent, key = _nodes(d)[where]
        if isinstance(parent, dict):
            del parent[key]  # a field left out: its default, or "is missing"
            got = _load(d)
            if key in ("name", "stages", "out_channels"):
                assert got == f"malformed architecture spec: {where} is missing"
            else:
                assert isinstance(got, (ArchSpec, str))
            parent["zz"] = 1  # a field no spec has
            assert "has no field 'zz'" in _load(d)
    assert wrong > 15 * len(_nodes(good))
    for value in HOSTILE:  # not a dict at all
        assert _load(value).startswith("malformed architecture spec: ")


def test_any_malformed_spec_json_is_one_spec_error():
    text = get_spec("cifar-highway8").to_json(indent=None)
    for cut in range(0, len(text), 7):  # every truncation is bad JSON or a bad spec
        with pytest.raises(SpecError):
            ArchSpec.from_json(text[:cut])
    for bad in ["[" * 100_000, '{"name": ' + "9" * 5000 + "}", "NaN", '{"name": "x", "stages": Infinity}', 5, None,
                b"\xff\xfe", '{"name": "x", "stages": [], "head": {"dropout": NaN}}']:
        with pytest.raises(SpecError) as e:
            ArchSpec.from_json(bad).validate()
        assert "\n" not in str(e.value)
