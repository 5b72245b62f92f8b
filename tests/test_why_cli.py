"""``resnet-explorer why lesion | gradients | landscape``: tables, ``--json`` (one object per
run or net, one a line), and bad input as one line with exit 2: a plain net's shape-changing
block, an ImageNet net without data, a bad span, a hostile checkpoint."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from PIL import Image

from resnet_explorer import get_spec
from resnet_explorer.cli import main
from resnet_explorer.model import build
from resnet_explorer.checkpoint import Checkpoint
from test_why import DATA, tiny_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory.mktemp("why-cli"), 20)


def one_line_error(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-explorer: error: "), out.err
    assert "Traceback" not in out.err and out.out == ""
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_lesion_table_and_json(runs, capsys):
    assert main(["why", "lesion", str(runs / "cifar-plain8"), str(runs / "cifar-resnet8"), "--images", "100",
                 "--counts", "1,2", "--draws", "2"]) == 0
    text = capsys.readouterr().out
    assert "cifar-plain8 (cifar-plain8)" in text and "x conv3_x.0" in text and "changes the shape" in text
    assert "- conv2_x.0" in text and "2 deleted at random" in text
    assert main(["why", "lesion", str(runs / "cifar-plain8"), str(runs / "cifar-resnet8"), "--images", "100",
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["net"] for o in objs] == ["cifar-plain8", "cifar-resnet8"]
    for o in objs:
        assert 0 <= o["base_error"] <= 1 and all({"block", "error"} <= set(d) and 0 <= d["error"] <= 1
                                                 for d in o["deleted"])
    assert [d["block"] for d in objs[1]["deleted"]] == ["conv2_x.0", "conv3_x.0", "conv4_x.0"]


def test_gradients_of_a_spec_file(tmp_path, capsys):
    (tmp_path / "net.json").write_text(get_spec("cifar-resnet8", width=4).to_json())
    assert main(["why", "gradients", "--arch", str(tmp_path / "net.json"), "--input", "8", "--seeds", "1"]) == 0
    assert "cifar-resnet8      residual depth    8" in capsys.readouterr().out
    one_line_error(capsys, ["why", "gradients", "--arch", str(tmp_path / "net.json"), "--width", "8"], "--width")
    one_line_error(capsys, ["why", "gradients", "--arch", str(tmp_path / "none.json")], "not found")
    (tmp_path / "bad.json").write_text("{")
    one_line_error(capsys, ["why", "gradients", "--arch", str(tmp_path / "bad.json")], "not valid JSON")


def test_gradients_json_and_depths(capsys):
    assert main(["why", "gradients", "--arch", "cifar-plain8", "--arch", "cifar-resnet8", "--width", "4",
                 "--input", "8", "--seeds", "2", "--json"]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["arch"] for o in objs] == ["cifar-plain8", "cifar-resnet8"]
    assert all(-1 <= o["correlation"] <= 1 and len(o["per_seed"]) == 2 for o in objs)
    assert main(["why", "gradients", "--depths", "8,14", "--width", "4", "--input", "8", "--seeds", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("depth") and rows[1].split()[0] == "8" and rows[2].split()[0] == "14"


def test_landscape_table(runs, capsys):
    assert main(["why", "landscape", str(runs / "cifar-resnet8"), "--grid", "3", "--span", "0.2",
                 "--directions", "2", "--images", "50"]) == 0
    text = capsys.readouterr().out
    assert "d1 loss:" in text and "d2 loss:" in text and "points/s" in text and "α in ±0.2" in text


def test_a_plain_nets_shape_changing_block_is_one_line(runs, capsys):
    one_line_error(capsys, ["why", "lesion", str(runs / "cifar-plain8"), "--blocks", "conv3_x.0"],
                   "cifar-plain8", "conv3_x.0", "changes the shape", "4→8 channels, stride 2")
    one_line_error(capsys, ["why", "lesion", str(runs / "cifar-plain8"), "--blocks", "conv7_x.0"], "no block")


def test_an_imagenet_net_without_data_is_one_line(tmp_path, capsys):
    spec = get_spec("resnet18", width=4)
    Checkpoint(build(spec).state_dict(), spec).save(tmp_path / "resnet18.pt")
    for study in ("lesion", "landscape"):
        one_line_error(capsys, ["why", study, str(tmp_path / "resnet18.pt")],
                       "resnet18", "records no dataset", "--data", "ImageNet net, 224² input")
    one_line_error(capsys, ["why", "lesion", str(tmp_path / "resnet18.pt"), "--data", f"imagenet:{tmp_path}"],
                   "imagenet:")  # a dataset not in ImageNet's layout, said as ever by --data's parser
    for split in ("train", "val"):  # ImageNet itself: read lazily, not into memory
        (tmp_path / "inet" / split / "n01440764").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "inet" / split / "n01440764" / "0.JPEG")
    one_line_error(capsys, ["why", "lesion", str(tmp_path / "resnet18.pt"), "--data", f"imagenet:{tmp_path / 'inet'}"],
                   "ImageNet is read lazily", "CIFAR-style dataset")


@pytest.mark.parametrize("span", ["0", "-0.5", "nan", "inf", "11"])
def test_a_bad_span_is_one_line_before_any_net_is_read(span, tmp_path, capsys):
    one_line_error(capsys, ["why", "landscape", str(tmp_path / "no-such-run"), "--span", span],
                   f"span {float(span)!r} is invalid")


def test_other_bad_options_are_one_line(runs, capsys):
    one_line_error(capsys, ["why", "landscape", str(runs / "cifar-resnet8"), "--grid", "4"], "grid 4 is invalid", "odd")
    one_line_error(capsys, ["why", "gradients"], "--arch")
    one_line_error(capsys, ["why", "gradients", "--arch", "cifar-resnet8", "--span", "nan"], "span nan is invalid")
    one_line_error(capsys, ["why", "gradients", "--depths", "20,21"], "6n+2")
    one_line_error(capsys, ["why", "lesion", str(runs / "cifar-resnet8"), "--counts", "1,x"], "--counts")
    one_line_error(capsys, ["why", "lesion", str(runs / "cifar-resnet8"), "--draws", "-1"], "draws -1")
    one_line_error(capsys, ["why", "lesion", str(runs / "cifar-resnet8"), "--images", "0"], "images 0")
    one_line_error(capsys, ["why", "lesion", str(runs / "nothing-here")], "not a run directory or checkpoint")


class Payload:
    """A pickle that runs code when loaded unsafely (the attack)."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ['WHY_PWNED']}",))


def test_a_hostile_checkpoint_is_refused_and_never_runs(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("WHY_PWNED", str(marker))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"spec": Payload(), "model": {}}, f)
    torch.save({"spec": Payload(), "model": {}}, tmp_path / "evil2.pt")
    for path in (evil, tmp_path / "evil2.pt"):
        one_line_error(capsys, ["why", "lesion", str(path), "--data", DATA])
    assert not marker.exists()
