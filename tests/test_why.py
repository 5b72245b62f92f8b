"""Why shortcuts help (`resnet_explorer.why`): lesions, shattered gradients, loss landscapes.

Exact on tiny nets: deleting a block whose residual branch is zeroed changes nothing (every
block kind), a lesion that reuses the intact prefix equals the net rebuilt without the
block, filter normalisation gives every direction filter its weight filter's norm (and a
planted per-layer normalisation fails that check), a landscape never writes the weights;
the measures agree with the demo's own (`run_analysis.train_subset_error`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_explorer import get_spec
from resnet_explorer.errors import UsageError
from resnet_explorer.run_analysis import train_subset_error
from resnet_explorer.model import build
from resnet_explorer.recipes import get_recipe
from resnet_explorer.train import train
from resnet_explorer.why import Lesioner, block_list, eval_set, lesion, open_net, without_branch
from resnet_explorer.why.blocks import pick_blocks
from resnet_explorer.why.gradients import by_depth, calibrate_bn, lag_correlations, shattering
from resnet_explorer.why.landscape import LossAt, concave_share, filter_normalized, landscape
from resnet_explorer.why.lesion import random_lesions

DATA = "synthetic:256"
BN_RANGES = ((-0.2, 0.2), (0.5, 2.0), (0.5, 1.5), (-0.2, 0.2))


def tiny_runs(root: Path, iters: int, names: dict[str, str] | None = None) -> Path:
    """Tiny plain and residual nets (4 wide) trained on DATA into ``root``/<name>."""
    for name, arch in (names or {"cifar-plain8": "cifar-plain8", "cifar-resnet8": "cifar-resnet8"}).items():
        train(get_spec(arch, width=4), DATA, get_recipe("test", iters=iters), root / name, device="cpu", progress=False)
    return root


def _net(name: str, seed: int = 0, **over) -> nn.Module:
    """A built net whose BN statistics and affine parameters are not the identity (so that a
    wrong lesion cannot pass by accident), in eval mode."""
    torch.manual_seed(seed)
    model = build(get_spec(name, width=4, input_size=16, **over))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:  # mean, variance, γ, β
        for t, (lo, hi) in zip((m.running_mean, m.running_var, m.weight.data, m.bias.data), BN_RANGES):
            t.uniform_(lo, hi)
    return model.eval()


def _zero_branch(block: nn.Module) -> None:
    """F(x) = 0 exactly: the last BN's γ and β (post-activation), the last conv (pre)."""
    if block.order == "post":
        nn.init.zeros_(block.last_bn().weight)
        nn.init.zeros_(block.last_bn().bias)
    else:
        nn.init.zeros_(block.conv2.weight)


X = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))


# -- lesions: what deleting a block means --------------------------------------------------------
BLOCK_KINDS = [(arch, where) for arch in ("cifar-resnet14", "cifar-preresnet20", "cifar-highway14")
               for where in ("conv2_x.1", "conv3_x.0")]  # same shape; shape-changing (option A)


@pytest.mark.parametrize("arch,where", BLOCK_KINDS + [("cifar-resnet8", "conv4_x.0"),
                                                      ("cifar-resnet14", "conv4_x.1")])
def test_deleting_a_block_whose_branch_is_zeroed_changes_nothing(arch, where):
    model = _net(arch)
    stage, i = where.split(".")
    block = getattr(model, stage)[int(i)]
    intact = model(X)
    assert not torch.equal(Lesioner(model, X).logits([where]), intact)  # a real branch: deleting it matters
    _zero_branch(block)
    with torch.no_grad():
        zeroed = model(X)
    assert torch.equal(Lesioner(model, X).logits([where]), zeroed)


def _rebuilt_without(model: nn.Module, names: list[str]) -> nn.Module:
    """A reference lesion: a copy of the net whose deleted blocks are modules computing
    `without_branch`, run from the image as any net is (no reused prefix)."""
    class Deleted(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return without_branch(self.block, x)

    copy_ = copy.deepcopy(model)
    for name in names:
        stage, i = name.split(".")
        getattr(copy_, stage)[int(i)] = Deleted(getattr(copy_, stage)[int(i)])
    return copy_.eval()


@pytest.mark.parametrize("arch", ["cifar-resnet20", "cifar-plain20", "cifar-preresnet20"])
def test_a_lesion_reusing_the_intact_prefix_equals_the_net_rebuilt_without_its_blocks(arch):
    model = _net(arch, seed=3)
    lesioner = Lesioner(model, X)
    names = [b.name for b in pick_blocks(model, None, arch)]
    with torch.no_grad():
        assert torch.equal(lesioner.logits([]), model(X))
        for deleted in [[names[0]], [names[-1]], [names[4]], *[d for _, d in random_lesions(names, (2, 3, 5), 2, 0)]]:
            assert torch.equal(lesioner.logits(deleted), _rebuilt_without(model, deleted)(X)), deleted
    # the kept block inputs are never written by a lesion (relu(S(x)) is not done in place)
    again = Lesioner(model, X)
    assert all(torch.equal(again.inputs[k], v) for k, v in lesioner.inputs.items())


def test_a_plain_block_is_replaced_by_the_identity_only_where_shapes_agree():
    model = _net("cifar-plain20")
    blocks = {b.name: b for b in block_list(model)}
    assert [n for n, b in blocks.items() if not b.deletable] == ["conv3_x.0", "conv4_x.0"]
    assert blocks["conv3_x.0"].why_not().endswith("changes the shape (4→8 channels, stride 2)")
    x = torch.randn(3, 4, 16, 16)
    assert without_branch(model.conv2_x[1], x) is x  # the identity
    with pytest.raises(UsageError, match="conv3_x.0: it changes the shape"):
        pick_blocks(model, ["conv3_x.0"], "plain-20")
    with pytest.raises(UsageError, match="no block 'conv9_x.0'"):
        pick_blocks(model, ["conv9_x.0"], "plain-20")
    with pytest.raises(UsageError, match="no residual or plain blocks"):
        pick_blocks(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3)), nn.Flatten()), None, "a stack of layers")
    res = {b.name: b for b in block_list(_net("cifar-resnet20"))}
    assert all(b.deletable for b in res.values()) and res["conv3_x.0"].changes_shape  # its shortcut is kept


def test_random_lesions_are_fixed_by_their_seed_and_distinct():
    names = [f"b{i}" for i in range(9)]
    draws = random_lesions(names, (1, 3, 20), 4, seed=7)
    assert draws == random_lesions(names, (1, 3, 20), 4, seed=7) != random_lesions(names, (1, 3, 20), 4, seed=8)
    assert [k for k, _ in draws] == [1] * 4 + [3] * 4  # 20 > 9 blocks: skipped
    assert all(len(set(d)) == k for k, d in draws)


# -- lesions of trained runs: the demo's measure -----------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny plain and residual nets trained for 30 iterations."""
    return tiny_runs(tmp_path_factory.mktemp("why-runs"), 30)


def test_lesion_of_a_run_measures_as_the_demo_does(trained):
    images = eval_set(DATA, images=200)
    r = lesion(trained / "cifar-resnet8", images=images, counts=(1, 2), draws=2)
    json.dumps(r)  # plain data
    model = open_net(trained / "cifar-resnet8").model
    assert r["base_error"] == pytest.approx(train_subset_error(model, DATA, n=200)["error"], abs=1e-12)
    assert r["images"] == {"train": 200, "test": 200}
    assert [d["block"] for d in r["deleted"]] == ["conv2_x.0", "conv3_x.0", "conv4_x.0"] and r["not_deletable"] == []
    assert all(0 <= d["error"] <= 1 and 0 <= d["test_error"] <= 1 for d in r["deleted"])
    assert r["mean_rise"] == pytest.approx(sum(d["error"] for d in r["deleted"]) / 3 - r["base_error"])
    assert [x["count"] for x in r["random"]] == [1, 2] and all(len(x["errors"]) == 2 for x in r["random"])
    # the random draws of one block are among the single-block lesions
    singles = {d["error"] for d in r["deleted"]}
    assert set(r["random"][0]["errors"]) <= singles
    plain = lesion(trained / "cifar-plain8", images=images, draws=0)
    assert [d["block"] for d in plain["not_deletable"]] == ["conv3_x.0", "conv4_x.0"]
    assert [d["block"] for d in plain["deleted"]] == ["conv2_x.0"] and plain["random"] == []


def test_lesion_needs_data_for_a_checkpoint_and_fitting_images(trained, tmp_path):
    ckpt = trained / "cifar-resnet8" / "checkpoints" / "last.pt"
    with pytest.raises(UsageError, match="records no dataset: give --data"):
        lesion(ckpt)
    assert lesion(ckpt, data="synthetic:256", draws=0)["net"] == "last"
    with pytest.raises(UsageError, match="predicts 10 classes but .* has 4"):
        lesion(ckpt, images=dataclasses.replace(eval_set(DATA, images=10), num_classes=4))
    with pytest.raises(UsageError, match="images 0 is invalid"):
        eval_set(DATA, images=0)


# -- shattered gradients ---------------------------------------------------------------------------
def test_calibrated_bn_is_the_training_mode_forward_of_the_batch():
    model = _net("cifar-resnet8")
    x = torch.randn(32, 3, 16, 16)
    calibrate_bn(model, x)
    assert not model.training
    with torch.no_grad():
        frozen = model(x)
        model.train()
        batch = model(x)
    assert torch.allclose(frozen, batch, atol=1e-4)


def test_lag_correlations():
    g = torch.randn(1, 50).repeat(6, 1)
    assert lag_correlations(g, 3) == pytest.approx([1.0, 1.0, 1.0])
    eye = torch.eye(8)
    assert lag_correlations(eye, 2) == [0.0, 0.0]


def test_residual_gradients_stay_correlated_where_plain_ones_shatter():
    plain, res = (shattering(f"cifar-{k}56", seeds=3, input_size=16, width=8) for k in ("plain", "resnet"))
    assert res["correlation"] > 0.3 and plain["correlation"] < 0.1, (res["per_seed"], plain["per_seed"])
    assert all(c > 0.3 for c in res["per_seed"]) and all(abs(c) < 0.1 for c in plain["per_seed"])
    assert len(res["slope"]) == res["points"] == 128 and len(res["lags"]) == 16
    assert res["lags"][0] == pytest.approx(res["correlation"]) and res["lags"][-1] < res["lags"][0]
    depth = by_depth((8, 20), width=4, seeds=1, input_size=8)
    assert depth["depths"] == [8, 20] and all(-1 <= c <= 1 for c in depth["plain"] + depth["residual"])
    with pytest.raises(UsageError, match="6n\\+2"):
        by_depth((9,))


def test_a_given_model_is_measured_on_a_copy():
    model = _net("cifar-resnet8")
    before = copy.deepcopy(model.state_dict())
    shattering(model, input_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- the loss landscape ------------------------------------------------------------------------------
def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    model = _net("cifar-resnet8", seed)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    params["conv1.0.conv.weight"][:2] *= 10  # filters of very different norms in one layer
    return params


def assert_filter_normalized(direction: dict, params: dict) -> None:
    """Every filter d_i of every weight has its weight filter's norm; BN and biases are 0."""
    for k, w in params.items():
        d = direction[k]
        assert d.shape == w.shape
        if w.dim() <= 1:
            assert not d.any(), k
            continue
        dn = torch.linalg.vector_norm(d.flatten(1), dim=1)
        wn = torch.linalg.vector_norm(w.flatten(1), dim=1)
        assert torch.allclose(dn, wn, rtol=1e-5), (k, dn, wn)


def per_layer(params: dict, generator: torch.Generator) -> dict:
    """The planted bug: each layer's direction scaled to the layer's norm, not each filter's."""
    out = {}
    for k, w in params.items():
        d = torch.randn(w.shape, generator=generator)
        out[k] = torch.zeros_like(w) if w.dim() <= 1 else d * (w.norm() / d.norm())
    return out


def test_filter_normalisation_gives_each_filter_its_weight_filter_norm():
    params = _params()
    d = filter_normalized(params, torch.Generator().manual_seed(0))
    assert_filter_normalized(d, params)
    assert not torch.equal(d["fc.weight"], filter_normalized(params, torch.Generator().manual_seed(1))["fc.weight"])


def test_a_planted_per_layer_normalisation_fails_the_check():
    params = _params()
    with pytest.raises(AssertionError):
        assert_filter_normalized(per_layer(params, torch.Generator().manual_seed(0)), params)


def test_loss_at_moves_the_weights_without_writing_them():
    model = _net("cifar-resnet8")
    before = copy.deepcopy(model.state_dict())
    y = torch.randint(0, 10, (len(X),))
    at = LossAt(model, X, y)
    d = filter_normalized(at.params, torch.Generator().manual_seed(0))
    loss0, err0 = at([], [])
    with torch.no_grad():
        out = model(X)
    assert loss0 == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert err0 == (out.argmax(1) != y).float().mean().item()
    moved, _ = at([d], [0.3])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in reference.named_parameters():
            p.add_(0.3 * d[k])
        assert moved == pytest.approx(nn.functional.cross_entropy(reference(X), y).item(), rel=1e-5)


def test_concave_share():
    assert concave_share([[4, 1, 0, 1, 4]]) == 0.0
    assert concave_share([[0, 1, 0]]) == 1.0
    assert concave_share([[4, 1, 0, 1, 4], [0, 1, 0, 1, 0]]) == pytest.approx(2 / 6)
    assert concave_share([]) is None


def test_landscape_of_a_run(trained):
    images = eval_set(DATA, images=100)
    r = landscape(trained / "cifar-resnet8", images=images, span=0.4, grid=5, directions=3, n_images=64)
    json.dumps(r)
    assert r["alphas"] == pytest.approx([-0.4, -0.2, 0.0, 0.2, 0.4]) and r["alphas"][2] == 0.0
    assert len(r["surface"]) == 5 and all(len(row) == 5 for row in r["surface"])
    assert r["surface"][2][2] == r["base_loss"] == r["slices"][0]["loss"][2] == r["slices"][2]["loss"][2]
    assert r["slices"][0]["loss"] == r["surface"][2]  # d1's slice is the surface's middle row
    assert r["slices"][1]["loss"] == [row[2] for row in r["surface"]]
    assert r["points"] == 1 + 24 + 4  # the trained weights, the surface around them, and d3's four steps
    assert [p["alpha"] for p in r["rise"]] == pytest.approx([0.2, 0.4])
    assert r["points_per_s"] > 0 and all(math.isfinite(v) for row in r["surface"] for v in row)
