"""ImageNet's two input paths: the GPU path (decode + batched tensor ops, run here on the
CPU) gives the PIL path's batches draw for draw; ILSVRC's odd files; shards and resumption.

Tolerance: on the CPU both paths decode with libjpeg-turbo (bit-identical, checked below),
so they differ only in resize rounding. torchvision's uint8 antialiased resize (the PIL
path) rounds to uint8 between its horizontal and vertical passes; the GPU path's matrix
resample rounds once. So a pixel may differ by one level, 1/255, and no more; on average
by about 0.2/255. A crop one pixel off, or a wrong scale, flip or lighting, differs by
far more (checked, so the tolerance cannot hide a wrong draw).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from resnet_explorer import data as D
from resnet_explorer.data import jpeg
from resnet_explorer.data.views import apply_view

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 1 / 255


def texture(w: int, h: int, seed: int) -> np.ndarray:
    """A busy RGB image (sinusoids + noise): a crop one pixel off differs a lot."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([128 + 90 * np.sin(x / 2.5 + y / 4.0 + seed), 128 + 80 * np.cos(y / 1.7 + seed),
                    128 + 60 * np.sin((x - y) / 3.0)], -1)
    return (arr + rng.normal(0, 20, arr.shape)).clip(0, 255).astype(np.uint8)


def save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"format": "JPEG", "quality": 90} | kw))
    return path


def encoded(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **({"format": "JPEG", "quality": 90} | kw))
    return buf.getvalue()


def odd_files(folder: Path, seed: int) -> dict[str, Path]:
    """One of each of ILSVRC's readable oddities, in ``folder``."""
    rgb = Image.fromarray(texture(300, 240, seed))
    return {
        "cmyk": save(folder / "cmyk.JPEG", rgb.convert("CMYK")),
        "grey": save(folder / "grey.JPEG", rgb.convert("L")),
        "png": save(folder / "png.JPEG", rgb, format="PNG"),  # a PNG named .JPEG
        "progressive": save(folder / "progressive.JPEG", rgb, progressive=True),
        "small": save(folder / "small.JPEG", Image.fromarray(texture(150, 100, seed + 1))),  # < 224
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """2 classes; train: 4 plain JPEGs + the 5 oddities each; val: 3 + the oddities each."""
    root = tmp_path_factory.mktemp("ilsvrc")
    sizes = [(320, 240), (240, 320), (260, 260), (400, 300)]
    for c, wnid in enumerate(["n01440764", "n01443537"]):
        for split, n in (("train", 4), ("val", 3)):
            folder = root / split / wnid
            for i in range(n):
                save(folder / f"{split}_{i}.JPEG", Image.fromarray(texture(*sizes[(i + c) % 4], 10 * c + i)))
            odd_files(folder, 100 + c)
    return root


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def assert_same_batches(cpu, gpu) -> float:
    """Same labels in the same order, pixels within one level; returns the mean |diff|."""
    assert len(cpu) == len(gpu) and len(cpu) > 0
    total, n = 0.0, 0
    for (a, ya), (b, yb) in zip(cpu, gpu):
        assert torch.equal(ya, yb) and a.shape == b.shape and a.dtype == b.dtype
        d = (a - b).abs()
        assert d.max() <= LEVEL + 1e-6, d.max() * 255
        total, n = total + d.sum().item(), n + d.numel()
    return total / n


# -- geometry and draws -------------------------------------------------------------------------
@pytest.mark.parametrize("h, w, s", [(375, 500, 256), (500, 375, 480), (100, 150, 256), (333, 333, 300),
                                     (1, 7, 224), (257, 256, 256)])
def test_resized_size_is_torchvisions(h, w, s):
    assert D.views.resized_size(h, w, s) == tuple(F.resize(torch.zeros(1, h, w), [s]).shape[-2:])


def test_a_seed_gives_both_paths_the_same_view(tree):
    pil = D.PaperTrainTransform()
    gpu = D.GpuImageNetLoader([], 2, "cpu", True, workers=0)
    for seed in range(50):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # what the PIL path's worker does for each sample
            a = pil.view(375, 500)
        assert gpu.view_of(375, 500, seed) == [a]
    views = [D.draw_train_view(375, 500, torch.Generator().manual_seed(s)) for s in range(3000)]
    shorter = [min(v.height, v.width) for v in views]
    assert (min(shorter), max(shorter)) == (256, 480)  # both ends of [256, 480]
    assert all(0 <= v.top <= v.height - 224 and 0 <= v.left <= v.width - 224 for v in views)
    assert 0.45 < np.mean([v.flip for v in views]) < 0.55
    rgb = torch.tensor([v.rgb for v in views])
    alpha = rgb @ torch.tensor(D.IMAGENET_EIGVEC) / torch.tensor(D.IMAGENET_EIGVAL)  # back to α
    assert alpha.std(0).sub(0.1).abs().max() < 0.01 and alpha.mean(0).abs().max() < 0.01


def test_the_batched_resample_is_torchvisions_resize():
    img = torch.from_numpy(texture(500, 375, 0)).permute(2, 0, 1).contiguous()
    tiny = torch.from_numpy(texture(90, 60, 1)).permute(2, 0, 1).contiguous()
    views = [D.draw_train_view(375, 500, torch.Generator().manual_seed(s)) for s in range(6)]
    ten = D.eval_views(375, 500, ten_crops=True)
    assert [v.flip for v in ten] == [False] * 5 + [True] * 5
    for im, vs in [(img, views), (img, ten), (tiny, D.eval_views(60, 90)),
                   (tiny, D.scale_views(60, 90, [224])), (img, D.scale_views(375, 500, [480]))]:
        out = D.resample_views([im] * len(vs), vs)
        ref = torch.stack([apply_view(im, v) for v in vs]).float()
        assert out.shape == ref.shape and (out - ref).abs().max() <= 1
        exact = torch.stack([apply_view(im.float(), v) for v in vs])  # torchvision's float resize:
        unrounded = D.resample_views([im] * len(vs), vs, rounded=False)  # the same weights
        assert (unrounded - exact).abs().max() < 0.01
    # the tenth crop is the mirror image's centre crop
    flipped = F.center_crop(F.resize(img.flip(-1), [256], antialias=True), [224]).float()
    assert (D.resample_views([img], ten[9:])[0] - flipped).abs().max() <= 1


# -- the GPU path on the CPU against the PIL path -------------------------------------------------
@pytest.mark.parametrize("split, train, ten", [("train", True, False), ("val", False, False), ("val", False, True)])
def test_gpu_path_gives_the_pil_paths_batches(tree, split, train, ten):
    make = lambda loader: D.make_imagenet_loader(
        str(tree), split, 4, "cpu", train, seed=7, workers=0, ten_crops=ten, loader=loader)
    cpu, gpu = make("cpu"), make("gpu")
    assert isinstance(cpu, D.ImageNetLoader) and isinstance(gpu, D.GpuImageNetLoader)
    if ten:  # the first two batches (the ten crops of 8 images) are enough
        cpu.set_epoch(0, start_batch=2)
        gpu.set_epoch(0, start_batch=2)
    a, b = batches(cpu), batches(gpu)
    assert sum(len(y) for _, y in a) == (8 if ten else 16)  # 18 train images in whole batches of 4; 16 val
    mean_diff = assert_same_batches(a, b)
    assert mean_diff < 0.3 * LEVEL
    if train:  # a second epoch: new draws, still the same on both paths
        a2, b2 = batches(cpu), batches(gpu)
        assert_same_batches(a2, b2)
        assert not torch.equal(a[0][0], a2[0][0])
    # the tolerance is far below what a wrong draw changes: the same crop one pixel off
    x = a[0][0][0] if not ten else a[0][0][0, 0]
    off = (torch.roll(x, 1, dims=-1) - x)[..., 1:].abs() > LEVEL + 1e-6
    assert off.float().mean() > 0.8


def test_gpu_path_std_per_pixel_mean_and_channels_last(tree):
    mean = torch.rand(3, 224, 224) * 0.2 + 0.4
    kw = dict(seed=1, workers=0, mean=mean, std=D.IMAGENET_STD, channels_last=True)
    a = batches(D.make_imagenet_loader(str(tree), "train", 6, "cpu", True, loader="cpu", **kw))
    b = batches(D.make_imagenet_loader(str(tree), "train", 6, "cpu", True, loader="gpu", **kw))
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x, _ in b)
    for (x, _), (z, _) in zip(a, b):  # ÷ std scales the one-level difference
        assert (x - z).abs().max() <= LEVEL / min(D.IMAGENET_STD) + 1e-5


def test_multi_scale_views_agree(tree):
    from resnet_explorer.evaluate import multi_scale_loader

    cpu = list(multi_scale_loader(str(tree), [224, 288], workers=0))
    gpu = list(multi_scale_loader(str(tree), [224, 288], workers=0, loader="gpu"))
    assert len(cpu) == len(gpu) == 16
    for (va, ya), (vb, yb) in zip(cpu, gpu):
        assert torch.equal(ya, yb) and len(va) == len(vb) == 4
        for a, b in zip(va, vb):
            assert a.shape == b.shape and (a - b).abs().max() <= LEVEL + 1e-6


# -- ILSVRC's odd files ---------------------------------------------------------------------------
def test_which_files_go_to_the_gpu_decoder(tmp_path):
    files = odd_files(tmp_path, 0)
    routed = {k: jpeg.gpu_decodable(p.read_bytes()) for k, p in files.items()}
    assert routed == {"cmyk": False, "png": False, "grey": True, "progressive": True, "small": True}
    good = files["small"].read_bytes()
    assert not jpeg.gpu_decodable(good[: len(good) // 2])  # truncated: PIL decides (and refuses)
    assert not jpeg.gpu_decodable(b"\xff\xd8\xff\xd9") and not jpeg.gpu_decodable(b"")
    # PIL and libjpeg-turbo decode the same pixels, so the two paths start from the same image
    from torchvision.io import ImageReadMode, decode_jpeg

    for k in ("grey", "progressive", "small"):
        data = torch.frombuffer(bytearray(files[k].read_bytes()), dtype=torch.uint8)
        assert torch.equal(decode_jpeg(data, mode=ImageReadMode.RGB), jpeg.pil_decode(files[k].read_bytes()))
    for k in ("cmyk", "png"):  # decoded in the worker, to RGB, as ImageFolder does
        s = jpeg.read_sample(str(files[k]), 3, 0, 0)
        assert not s.encoded and s.data.shape == (3, 240, 300) and s.data.dtype == torch.uint8
        with Image.open(files[k]) as im:
            assert torch.equal(s.data, torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1))


def bad_files(folder: Path) -> list[Path]:
    """A truncated JPEG, a non-image named .JPEG, an empty one, a decompression bomb header,
    and a FIFO named .JPEG (reading it would block forever)."""
    good = encoded(Image.fromarray(texture(300, 240, 5)))
    sof = good.index(b"\xff\xc0")
    bomb = bytearray(good)
    bomb[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2  # claims 30000×30000 pixels
    out = []
    for name, data in [("truncated", good[: len(good) // 2]), ("garbage", os.urandom(3000)),
                       ("empty", b""), ("bomb", bytes(bomb))]:
        p = folder / f"bad_{name}.JPEG"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out.append(p)
    os.mkfifo(folder / "bad_fifo.JPEG")
    return out + [folder / "bad_fifo.JPEG"]


@pytest.mark.parametrize("path", ["cpu", "gpu"])
def test_unreadable_files_are_skipped_with_one_line_each(tmp_path, capfd, path):
    root = tmp_path / "ds"
    for split in ("val", "train"):
        for i in range(3):
            save(root / split / "n0" / f"ok_{i}.JPEG", Image.fromarray(texture(260, 250, i)))
        bad = bad_files(root / split / "n0")  # train's, in the end
    assert not jpeg.gpu_decodable(bad[3].read_bytes())  # the bomb never reaches nvJPEG
    loader = D.make_imagenet_loader(str(root), "train", 7, "cpu", True, workers=1, loader=path)
    for _ in range(2):  # named once, not every epoch
        (x, y), = batches(loader)
        assert x.shape == (3, 3, 224, 224) and y.tolist() == [0, 0, 0]
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 5, err
    for p in bad:
        line, = [e for e in err if str(p) in e]
        assert line.startswith("warning: skipped unreadable image ")
    assert "cannot identify image file" in next(e for e in err if "bad_garbage" in e)
    assert next(e for e in err if "bad_fifo" in e).endswith("not a regular file")
    # a batch with no readable image left is a clear error, not an empty batch
    only_bad = tmp_path / "bad"
    for split in ("train", "val"):
        bad_files(only_bad / split / "n0")
    with pytest.raises(D.DataError, match="no image of a batch could be read"):
        batches(D.make_imagenet_loader(str(only_bad), "val", 4, "cpu", False, workers=0, loader=path))


def test_an_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(jpeg, "MAX_FILE_BYTES", 1000)
    p = save(tmp_path / "big.JPEG", Image.fromarray(texture(300, 240, 0)))
    assert isinstance(jpeg.read_sample(str(p), 0, 0, 0), jpeg.Unreadable)
    assert "larger than" in jpeg.read_sample(str(p), 0, 0, 0).reason
    with pytest.raises(OSError, match="larger than"):  # the CPU path's loader
        jpeg.pil_loader(str(p))


# -- shards, resumption, the loader choice ------------------------------------------------------------
def test_gpu_path_shards_and_resumes_like_the_cpu_path(tree):
    def make(rank=0, world=1):
        return D.make_imagenet_loader(str(tree), "train", 6, "cpu", True, seed=3, workers=0, loader="gpu",
                                      rank=rank, world_size=world)

    full = make()
    epoch0, epoch1 = batches(full), batches(full)
    assert len(epoch0) == 3 and [len(y) for _, y in epoch0] == [6, 6, 6]
    parts = [batches(make(r, 2)) for r in range(2)]
    for k, (x, y) in enumerate(epoch0):  # each rank its contiguous half of each global batch
        assert torch.equal(torch.cat([parts[0][k][1], parts[1][k][1]]), y)
        assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
    resumed = make()
    resumed.set_epoch(1, start_batch=2)
    (x, y), = batches(resumed)
    assert torch.equal(x, epoch1[2][0]) and torch.equal(y, epoch1[2][1])
    with_workers = D.make_imagenet_loader(str(tree), "train", 6, "cpu", True, seed=3, workers=2, loader="gpu")
    a, ya = next(iter(with_workers))  # batches do not depend on the number of workers
    assert torch.equal(a, epoch0[0][0]) and torch.equal(ya, epoch0[0][1])


def test_the_prefetch_thread_stops_when_the_consumer_does(tree):
    loader = D.make_imagenet_loader(str(tree), "train", 2, "cpu", True, workers=0, loader="gpu")
    before = set(threading.enumerate())  # others' threads may end meanwhile: look only at new ones
    for _ in loader:
        assert any(t.name == "imagenet-gpu-input" for t in set(threading.enumerate()) - before)
        break
    assert [t for t in set(threading.enumerate()) - before if t.is_alive()] == []
    assert len(batches(loader)) == len(loader) == 9
    sync = D.GpuImageNetLoader(loader.loader.dataset.samples, 2, "cpu", True, prefetch=0, workers=0)
    for (a, _), (b, _) in zip(batches(sync), batches(loader)):
        assert a.shape == b.shape


def test_loader_choice(tree, capsys, monkeypatch):
    assert D.resolve_loader("auto", "cpu") == "cpu" and D.resolve_loader("gpu", "cpu") == "gpu"
    monkeypatch.setattr(D.imagenet, "gpu_decode_works", lambda device: True)
    assert D.resolve_loader("auto", "cuda") == "gpu" and D.resolve_loader("cpu", "cuda") == "cpu"
    monkeypatch.setattr(D.imagenet, "gpu_decode_works", lambda device: False)  # torchvision without nvJPEG
    assert D.resolve_loader("auto", "cuda") == "cpu"
    with pytest.raises(D.DataError, match="cannot decode JPEGs on cuda"):
        D.resolve_loader("gpu", "cuda")
    monkeypatch.undo()
    with pytest.raises(D.DataError, match="--loader 'fast' is invalid"):
        D.resolve_loader("fast", "cpu")
    src = D.parse_data(f"imagenet:{tree}")
    train, val, info = D.make_loaders(src, 4, "cpu", seed=0, workers=0, loader="gpu")
    assert isinstance(train, D.GpuImageNetLoader) and isinstance(val, D.GpuImageNetLoader)
    assert info["loader"] == "gpu" and D.make_loaders(src, 4, "cpu", seed=0, workers=0)[2]["loader"] == "cpu"
    from resnet_explorer.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--arch", "resnet18", "--data", f"imagenet:{tree}", "--loader", "fast"])
    assert e.value.code == 2
    assert "invalid choice: 'fast'" in capsys.readouterr().err


@pytest.mark.slow
def test_training_and_eval_on_the_gpu_path_from_the_command_line(tree, tmp_path, capsys):
    from resnet_explorer.cli import main
    from resnet_explorer.safeio import read_json

    run = tmp_path / "run"
    common = ["--data", f"imagenet:{tree}", "--device", "cpu", "--workers", "1"]
    assert main(["train", "--arch", "resnet18", "--width", "8", "--recipe", "test", "--iters", "3", "--quiet",
                 "--set", "batch_size=6", "--out", str(run), "--loader", "gpu", *common]) == 0
    assert read_json(run / "data.json")["loader"] == "gpu"
    assert main(["eval", str(run), "--ten-crop", "--batch-size", "4", "--loader", "gpu", *common]) == 0
    assert "16 images, 10-crop" in capsys.readouterr().out


def no_bn_imagenet_net():
    """A 224-input conv net without BatchNorm: its training cannot depend on how a batch is split."""
    from resnet_explorer.spec import ArchSpec, ConvLayer, Head, Pool, Stage

    conv = lambda c, k: ConvLayer(c, kernel=k, stride=k, padding=0, bias=True, bn=False, pool=Pool(2, 2))
    return ArchSpec(name="nobn224", stages=[Stage("conv1", "conv", layers=[conv(4, 4)]),
                                            Stage("conv2", "conv", layers=[conv(8, 2)])],
                    head=Head("avgpool-fc"), residual=False, input_size=224, num_classes=2).validate()


@pytest.mark.slow
def test_gpu_path_under_torchrun_and_resumed_mid_epoch(tree, tmp_path):
    from resnet_explorer.recipes import get_recipe
    from resnet_explorer.runs import read_metrics
    from resnet_explorer.train import train

    spec = no_bn_imagenet_net()
    (tmp_path / "spec.json").write_text(spec.to_json())
    recipe = get_recipe("test", iters=5, batch_size=6)  # 18 images: 3 batches an epoch, so 5 cross one
    kw = dict(device="cpu", progress=False, loader="gpu", workers=0)
    train(spec, f"imagenet:{tree}", recipe, tmp_path / "one", **kw)
    train(spec, f"imagenet:{tree}", recipe, tmp_path / "part", should_stop=lambda it: it == 2, **kw)
    train(None, None, None, tmp_path / "part", resume=True, **kw)  # resumed in the middle of epoch 0
    weights = lambda run: torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    one = weights(tmp_path / "one")
    for k, v in weights(tmp_path / "part").items():
        assert torch.equal(v, one[k]), k
    exe = str(Path(sys.executable).parent / "resnet-explorer")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "--no-python", exe, "train", "--arch", str(tmp_path / "spec.json"), "--data",
                        f"imagenet:{tree}", "--recipe", "test", "--iters", "5", "--set", "batch_size=6",
                        "--out", str(tmp_path / "two"), "--device", "cpu", "--quiet", "--loader", "gpu",
                        "--workers", "0"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in weights(tmp_path / "two").items():  # each rank its half of each batch: one process's run
        torch.testing.assert_close(v, one[k], rtol=1e-4, atol=1e-5, msg=k)
    losses = lambda run: [m["train_loss"] for m in read_metrics(run) if "train_loss" in m]
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
