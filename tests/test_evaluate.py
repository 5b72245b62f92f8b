"""Evaluation: errors, 10-crop and multi-scale testing on a tiny ImageNet folder, ensembles."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_explorer import get_spec
from resnet_explorer.cli import main
from resnet_explorer.evaluate import errors, evaluate_paths, load_model, predict
from resnet_explorer.model import build
from resnet_explorer.checkpoint import Checkpoint


def test_errors_by_hand():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.4, 0.35, 0.25]])
    labels = torch.tensor([1, 1, 0, 2])
    e = errors(probs, labels, topk=2)
    assert e["error"] == 0.75  # only the first is right
    assert "top2_error" not in e  # 3 classes: top-2 is not reported
    wide = torch.softmax(torch.randn(6, 12), 1)
    y = wide.argsort(1, descending=True)[:, 4]  # the label is always the 5th guess
    assert errors(wide, y)["error"] == 1.0 and errors(wide, y)["top5_error"] == 0.0
    assert errors(probs, labels)["loss"] == pytest.approx(-torch.log(probs[range(4), labels]).mean().item())


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(3):
                h, w = rng.integers(240, 300), rng.integers(240, 320)
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.JPEG")
    return root


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    spec = get_spec("cifar-resnet8", width=4, num_classes=2, input_size=224)
    model = build(spec)
    for m in model.modules():  # non-trivial BN so eval differs from train mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(2.0)
    Checkpoint(model.state_dict(), spec).save(path)
    return model.eval()


def test_ten_crop_averages_softmax_over_ten_views(tiny_imagenet, tmp_path):
    from torchvision.datasets import ImageFolder

    from resnet_explorer.data import imagenet_eval_transform

    model = _checkpoint(tmp_path / "a.pt", 0)
    result = evaluate_paths([tmp_path / "a.pt"], f"imagenet:{tiny_imagenet}", ten_crop=True,
                            device="cpu", batch_size=4, workers=0)
    assert result["images"] == 6 and result["views"] == "10-crop"
    # by hand: the 10 crops of each image through the model, softmax averaged
    tf = imagenet_eval_transform(ten_crops=True)
    ds = ImageFolder(tiny_imagenet / "val", transform=tf)
    with torch.no_grad():
        probs = torch.stack([model(ds[i][0]).softmax(1).mean(0) for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    assert ds[0][0].shape == (10, 3, 224, 224)
    assert result["models"][0]["error"] == errors(probs, labels)["error"]
    assert result["models"][0]["loss"] == pytest.approx(errors(probs, labels)["loss"], rel=1e-5)


def test_multi_scale_fully_convolutional(tiny_imagenet, tmp_path):
    _checkpoint(tmp_path / "a.pt", 0)
    result = evaluate_paths([tmp_path / "a.pt"], f"imagenet:{tiny_imagenet}", scales=[64, 96],
                            device="cpu", workers=0)
    assert result["images"] == 6 and "scales [64, 96]" in result["views"]
    from resnet_explorer.evaluate import multi_scale_loader

    views, label = next(iter(multi_scale_loader(str(tiny_imagenet), [64, 96], workers=0)))
    assert [min(v.shape[-2:]) for v in views] == [64, 64, 96, 96]  # each scale and its flip
    assert torch.equal(views[1], views[0].flip(-1))


def test_ensemble_averages_the_models_softmax(tiny_imagenet, tmp_path):
    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    result = evaluate_paths([tmp_path / "a.pt", tmp_path / "b.pt"], f"imagenet:{tiny_imagenet}",
                            device="cpu", batch_size=6, workers=0)
    from resnet_explorer.data import make_imagenet_loader

    loader = make_imagenet_loader(str(tiny_imagenet), "val", 6, "cpu", False, workers=0)
    pa, y = predict(a, loader, torch.device("cpu"))
    pb, _ = predict(b, loader, torch.device("cpu"))
    assert result["ensemble"]["loss"] == pytest.approx(errors((pa + pb) / 2, y)["loss"], rel=1e-5)
    assert result["models"][1]["loss"] == pytest.approx(errors(pb, y)["loss"], rel=1e-5)


def test_eval_a_trained_run_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--recipe", "test",
                 "--iters", "10", "--out", str(out), "--quiet"]) == 0
    last_eval = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == "synthetic:256"
    assert result["models"][0]["error"] == pytest.approx(last_eval["test_error"])
    assert load_model(out).spec.name == "cifar-resnet8"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["eval", "/nonexistent/run"], "not a run directory or checkpoint"),
        (["eval", "RUN", "--ten-crop"], "ImageNet testing"),
        (["eval", "RUN", "--scales", "a,b"], "--scales 'a,b' is invalid"),
        (["eval", "BAD"], "not a resnet-explorer checkpoint"),
    ],
)
def test_bad_eval_input_one_line(tmp_path, capsys, args, fragment):
    run = tmp_path / "run"
    if "RUN" in args:
        main(["train", "--arch", "cifar-resnet8", "--data", "synthetic:256", "--recipe", "test",
              "--iters", "5", "--out", str(run), "--quiet"])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    args = [str(run) if a == "RUN" else str(bad) if a == "BAD" else a for a in args]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1, err
