"""The data layer: datasets, the paper's preprocessing, and loaders for the trainer.

Sources, named by the ``--data`` argument (`parse_data`):

    synthetic[:N[:SEED]]  the embedded default (below): N training images (default 10,000)
                          and 2,000 test images, generated from SEED (default 0)
    cifar10:DIR           torchvision's CIFAR-10 folder DIR/cifar-10-batches-py (or DIR itself)
    folder:DIR            an image-folder tree DIR/train/<class>/* and DIR/test/<class>/*,
                          decoded once into memory at 32×32 and cached next to the images
    imagenet:DIR          ILSVRC-2012, DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG, read lazily

**The synthetic dataset** ("gratings and blobs") is CIFAR-shaped: uint8 N×3×32×32, 10
classes, balanced. Each class is a random prototype made of two oriented sinusoid
gratings (class-specific orientation, frequency and colour, each inside a Gaussian
window at a class-specific place) and three coloured Gaussian blobs at class-specific
places. Every image draws its class's prototype with a random translation (±8 px),
random grating phases, jittered blob positions and a random amplitude, adds a fainter
copy of another class's prototype (the distractor) at its own translation, mixes the
colours with a random 3×3 matrix, adds a random background colour and gradient, and
pixel noise. The label therefore lives in spatial structure (which textures and blobs,
where relative to each other) rather than in mean colour, which alone gives little
better than chance. It is generated in about a second, bit for bit the same from a
given seed on any machine (float64 arithmetic; checked on AVX2 and AVX-512 CPUs), so
tests and quick CPU runs need no download and runs can be compared. It is meant to
show the degradation problem within a thousand iterations, not to stand in for
CIFAR-10's accuracy numbers. With batch 128, SGD at lr 0.1 and the augmentation below,
the training accuracy (last 50 batches) after 1,000 iterations was plain-20 97 %,
plain-56 33 %, ResNet-20 98 %, ResNet-56 96 % (after 400: 93 / 18 / 96 / 44 %;
ResNet-56's slow start at lr 0.1 goes away with a short warm-up or zero-initialised
residual branches). A linear classifier on its pixels gets about 70 % test accuracy.

**Preprocessing** (PAPER.md §3, §5): images are scaled to [0, 1] and the per-pixel mean
of the training split is subtracted (optional per-channel std division, off by
default, as in the paper). CIFAR training augmentation pads 4 pixels on each side,
takes a random 32×32 crop and flips half the crops horizontally; the padding is zero
in the network's input (after mean subtraction), like a conv layer's own padding.
ImageNet training uses scale augmentation (shorter side S ∈ [256, 480]), a random
224×224 crop or its flip, AlexNet's PCA lighting, and mean subtraction; testing uses a
224 centre crop of the image resized to 256, the ten-crop, or several scales.

**Loaders** share one interface: iterating yields ``(images, labels)`` already on the
target device, ``len()`` is the number of batches per epoch, and ``set_epoch(epoch,
start_batch=0)`` fixes the epoch's order and augmentation from (seed, epoch), so a
resumed run replays the same batches. `make_loaders` builds the pair a trainer needs.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import pickle
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from .distributed import shard

# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
SYNTHETIC_CLASSES = tuple(f"pattern{i}" for i in range(10))
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 10_000, 2_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CACHE_NAME = ".resnet_explorer_cache.pt"

FORMS = "synthetic[:N[:SEED]], cifar10:DIR, folder:DIR or imagenet:DIR"
LAYOUTS = {
    "synthetic": "synthetic, synthetic:N or synthetic:N:SEED with N >= 10 training images and SEED >= 0",
    "cifar10": "DIR/cifar-10-batches-py/ holding data_batch_1..5 and test_batch "
               "(torchvision's CIFAR-10 layout; download_cifar10(DIR) fetches it)",
    "folder": "DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg",
    "imagenet": "DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (val sorted into class folders)",
}


class DataError(ValueError):
    """A dataset that is missing or malformed; the message is one line naming the path
    and the layout that was expected."""


def _fail(arg: str, problem: str, kind: str) -> DataError:
    return DataError(f"{arg}: {problem}; expected {LAYOUTS[kind]}")


@dataclass
class DataSource:
    """What ``--data`` named: enough to load it, and to record it with a run (`to_dict`)."""

    kind: str  # synthetic | cifar10 | folder | imagenet
    path: str | None  # the dataset's directory (None for synthetic)
    num_classes: int
    classes: list[str] = field(default_factory=list)
    image_size: int = 32  # side of the training input: 32 (CIFAR-style) or 224 (ImageNet)
    n_train: int | None = None  # synthetic only: images generated per split
    n_test: int | None = None
    seed: int | None = None  # synthetic only: the dataset's own seed (not the training seed)

    @property
    def spec(self) -> str:
        """The ``--data`` string that names this source again."""
        if self.kind == "synthetic":
            return f"synthetic:{self.n_train}:{self.seed}"
        return f"{self.kind}:{self.path}"

    @property
    def in_memory(self) -> bool:
        """Whether the whole dataset fits in one uint8 tensor (all but ImageNet)."""
        return self.kind != "imagenet"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record of the source."""
        return {**asdict(self), "spec": self.spec}


def parse_data(arg: str) -> DataSource:
    """Parse a ``--data`` argument and check the dataset's layout (not its every file)."""
    kind, _, rest = arg.partition(":")
    kind = kind.strip().lower()
    if kind == "synthetic":
        return _parse_synthetic(arg, rest)
    if kind not in ("cifar10", "folder", "imagenet"):
        raise DataError(f"unknown data source {arg!r}: use {FORMS}")
    if not rest.strip():
        raise _fail(arg, "no directory given", kind)
    path = os.path.abspath(os.path.expanduser(rest.strip()))
    if not os.path.isdir(path):
        raise _fail(arg, "no such directory", kind)
    if kind == "cifar10":
        folder = _cifar10_folder(path, arg)
        return DataSource("cifar10", path, 10, list(_cifar10_classes(folder)), 32)
    if kind == "folder":
        classes = _check_class_tree(path, arg, "folder", ("train", "test"))
        return DataSource("folder", path, len(classes), classes, 32)
    classes = _check_class_tree(path, arg, "imagenet", ("train", "val"))
    return DataSource("imagenet", path, len(classes), classes, 224)


def _parse_synthetic(arg: str, rest: str) -> DataSource:
    parts = rest.split(":") if rest else []
    try:
        n_train = int(parts[0]) if parts else SYNTHETIC_TRAIN
        seed = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise _fail(arg, "N and SEED must be integers", "synthetic") from None
    if len(parts) > 2 or n_train < 10 or seed < 0:
        raise _fail(arg, "bad size or seed", "synthetic")
    return DataSource(
        "synthetic", None, 10, list(SYNTHETIC_CLASSES), 32, n_train, SYNTHETIC_TEST, seed
    )


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _check_class_tree(root: str, arg: str, kind: str, splits: Sequence[str]) -> list[str]:
    """The sorted class names of ``root/<split>/<class>/``, after checking the layout."""
    classes: list[str] | None = None
    for split in splits:
        folder = os.path.join(root, split)
        if not os.path.isdir(folder):
            raise _fail(arg, f"no {split}/ subfolder", kind)
        names = _subdirs(folder)
        if not names:
            raise _fail(arg, f"{split}/ has no class subfolders", kind)
        if classes is None:
            classes = names
        elif names != classes:
            only_a = sorted(set(classes) - set(names))[:3]
            only_b = sorted(set(names) - set(classes))[:3]
            raise _fail(
                arg, f"{split}/ and {splits[0]}/ have different classes "
                f"(only in {splits[0]}/: {', '.join(only_a) or '-'}; only in {split}/: {', '.join(only_b) or '-'})",
                kind,
            )
        for name in names:
            with os.scandir(os.path.join(folder, name)) as it:
                if not any(e.is_file() and _is_image(e.name) for e in it):
                    raise _fail(arg, f"class folder {split}/{name}/ has no images", kind)
    assert classes is not None
    return classes


# --------------------------------------------------------------------------------------
# Deterministic seeds
# --------------------------------------------------------------------------------------


def mix_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings, the same on every machine and run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


# --------------------------------------------------------------------------------------
# The synthetic dataset
# --------------------------------------------------------------------------------------

# Knobs of the generator; the defaults are tuned so that depth matters (see module doc).
_SYNTH: dict[str, Any] = dict(
    gratings=2, blobs=3,
    grating_freq=(2.0, 6.0),  # cycles per 32 px
    grating_sigma=(4.0, 7.0), grating_spread=14.0,  # window width, spread of window centres
    blob_sigma=(1.5, 3.5), blob_spread=18.0, blob_jitter=1.0, blob_gain=1.3,
    shift=8.0,  # per-image translation, ± px
    amplitude=(0.7, 1.3), distractor=(0.25, 0.55), distractor_shift=12.0,
    colour_mix=0.25, offset=0.3, gradient=0.3, noise=0.12, contrast=60.0,
)
# Pixel centres, relative to the image centre. The images are computed in float64 from
# float32 random draws, so that machines whose exp/cos differ in the last bit (AVX2 vs
# AVX-512 kernels) still round every pixel to the same uint8 value.
_AXIS = torch.arange(32, dtype=torch.float64) - 15.5


def _prototypes(g: torch.Generator, k: int, p: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Each class's gratings and blobs: orientation, frequency, colour, place, width."""
    G, B = p["gratings"], p["blobs"]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def colour(*shape: int) -> torch.Tensor:  # unit RGB directions, so colours differ in hue
        return torch.nn.functional.normalize(torch.randn(*shape, 3, generator=g), dim=-1)

    return dict(
        g_theta=uniform(0, math.pi, k, G), g_freq=uniform(*p["grating_freq"], k, G),
        g_colour=colour(k, G), g_sigma=uniform(*p["grating_sigma"], k, G),
        g_pos=uniform(-0.5, 0.5, k, G, 2) * p["grating_spread"],
        b_colour=colour(k, B) * p["blob_gain"], b_sigma=uniform(*p["blob_sigma"], k, B),
        b_pos=uniform(-0.5, 0.5, k, B, 2) * p["blob_spread"],
    )


def _pattern_factors(
    proto: dict[str, torch.Tensor], cls: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor,
    g: torch.Generator, p: dict[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class pattern per image as a sum of rank-1 terms: column profile × row profile
    × RGB colour. A blob is one term, a windowed grating two (cos(a+b) = cos a cos b −
    sin a sin b), so an image is a small batched matmul instead of a per-pixel loop."""
    n, G, B = cls.shape[0], p["gratings"], p["blobs"]

    def gauss(centre: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((_AXIS - centre[..., None]) ** 2) / (2 * sigma[..., None] ** 2))

    pos = proto["b_pos"][cls] + shift[:, None] + p["blob_jitter"] * torch.randn(n, B, 2, generator=g)
    b_sigma = proto["b_sigma"][cls]
    b_y, b_x = gauss(pos[..., 1], b_sigma), gauss(pos[..., 0], b_sigma)

    centre, g_sigma = proto["g_pos"][cls] + shift[:, None], proto["g_sigma"][cls]
    w_y, w_x = gauss(centre[..., 1], g_sigma), gauss(centre[..., 0], g_sigma)
    omega = proto["g_freq"][cls] * (2 * math.pi / 32)
    theta = proto["g_theta"][cls]
    phase = torch.rand(n, G, generator=g) * (2 * math.pi)
    a = (omega * torch.cos(theta))[..., None] * _AXIS + phase[..., None]  # along x
    b = (omega * torch.sin(theta))[..., None] * _AXIS  # along y
    g_y = torch.cat([w_y * torch.cos(b), -w_y * torch.sin(b)], 1)
    g_x = torch.cat([w_x * torch.cos(a), w_x * torch.sin(a)], 1)

    rows = torch.cat([b_y, g_y], 1)
    cols = torch.cat([b_x, g_x], 1)
    colours = torch.cat([proto["b_colour"][cls], proto["g_colour"][cls].repeat(1, 2, 1)], 1)
    return rows, cols, colours * amp[:, None, None]


def _render(
    proto: dict[str, torch.Tensor], n: int, g: torch.Generator, p: dict[str, Any], k: int,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n balanced, shuffled images of the prototypes, with per-image nuisances."""
    proto = {name: value.double() for name, value in proto.items()}
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, chunk):
        cls = labels[start:start + chunk]
        m = cls.shape[0]

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        main = _pattern_factors(proto, cls, uniform(*p["amplitude"], m), uniform(-1, 1, m, 2) * p["shift"], g, p)
        other = (cls + torch.randint(1, k, (m,), generator=g)) % k
        distractor = _pattern_factors(
            proto, other, uniform(*p["distractor"], m), uniform(-1, 1, m, 2) * p["distractor_shift"], g, p
        )
        # Background: a flat colour and a colour gradient along y and along x (rank-1 terms too).
        ones, ramp = torch.ones(m, 1, 32), (_AXIS / 16).expand(m, 1, 32)
        bg_rows, bg_cols = torch.cat([ones, ramp, ones], 1), torch.cat([ones, ones, ramp], 1)
        bg_colours = torch.cat([
            p["offset"] * torch.randn(m, 1, 3, generator=g),
            p["gradient"] * torch.randn(m, 2, 3, generator=g),
        ], 1)
        mixing = (torch.eye(3) + p["colour_mix"] * torch.randn(m, 3, 3, generator=g)).double()
        colours = torch.cat([main[2], distractor[2]], 1) @ mixing.transpose(1, 2)

        rows = torch.cat([main[0], distractor[0], bg_rows], 1)  # m × terms × 32
        cols = torch.cat([main[1], distractor[1], bg_cols], 1)
        colours = torch.cat([colours, bg_colours.double()], 1)  # m × terms × 3
        # image[c, y, x] = Σ_t colours[t, c] · rows[t, y] · cols[t, x]
        img = (rows[:, None] * colours.transpose(1, 2)[..., None]).transpose(-1, -2) @ cols[:, None]
        img.add_(torch.randn(img.shape, generator=g), alpha=p["noise"])
        images[start:start + m] = img.mul_(p["contrast"]).add_(128).round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


def _synthetic(n_train: int, n_test: int, seed: int, **overrides: Any) -> tuple[torch.Tensor, ...]:
    p = {**_SYNTH, **overrides}
    k = len(SYNTHETIC_CLASSES)
    proto = _prototypes(_generator("synthetic", seed, "classes"), k, p)
    # Train and test come from their own streams, so the test set does not depend on n_train.
    train_x, train_y = _render(proto, n_train, _generator("synthetic", seed, "train"), p, k)
    test_x, test_y = _render(proto, n_test, _generator("synthetic", seed, "test"), p, k)
    return train_x, train_y, test_x, test_y


def synthetic_cifar(
    n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The embedded dataset: ``(train_x, train_y, test_x, test_y)``, uint8 N×3×32×32 images
    and int64 labels in 0..9, a pure function of the arguments (see the module doc)."""
    return _synthetic(n_train, n_test, seed)


def write_synthetic_imagenet(
    root: str | os.PathLike, classes: int = 4, train_per_class: int = 16, val_per_class: int = 4,
    sizes: Sequence[tuple[int, int]] = ((320, 256), (256, 288), (288, 288)), seed: int = 0,
) -> str:
    """Write a tiny ILSVRC-style tree made from the embedded synthetic images, for trying the
    ImageNet pipeline without ImageNet: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``
    (``classes`` of the 10 synthetic classes, wnids ``n00000000`` …), each 32×32 image
    upscaled to one of ``sizes`` (width, height). Returns ``root`` for ``imagenet:root``;
    the same arguments write the same files."""
    if not 1 <= classes <= len(SYNTHETIC_CLASSES):
        raise DataError(f"classes={classes} is invalid: use 1..{len(SYNTHETIC_CLASSES)}")
    k = len(SYNTHETIC_CLASSES)
    # enough images that every class gets its share (the synthetic set is balanced)
    train_x, train_y, val_x, val_y = _synthetic(k * (train_per_class + 2), k * (val_per_class + 2), seed)
    i = 0
    for split, xs, ys, per in (("train", train_x, train_y, train_per_class), ("val", val_x, val_y, val_per_class)):
        for c in range(classes):
            folder = os.path.join(str(root), split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for j, img in enumerate(xs[ys == c][:per]):
                w, h = sizes[i % len(sizes)]
                i += 1
                pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((w, h), Image.BILINEAR)
                pil.save(os.path.join(folder, f"{split}_{c}_{j:04d}.JPEG"), quality=90)
    return str(root)


# --------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's pickled batches)
# --------------------------------------------------------------------------------------

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"


def download_cifar10(root: str) -> str:
    """Fetch CIFAR-10 with torchvision (needs the internet); returns ``root`` for ``cifar10:root``."""
    import torchvision

    torchvision.datasets.CIFAR10(root, train=True, download=True)
    return root


def _cifar10_folder(path: str, arg: str) -> str:
    for folder in (os.path.join(path, "cifar-10-batches-py"), path):
        if os.path.isfile(os.path.join(folder, "data_batch_1")):
            missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
                       if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise _fail(arg, f"{folder} lacks {', '.join(missing)}", "cifar10")
            return folder
    raise _fail(arg, "no cifar-10-batches-py/ with data_batch_1..5 and test_batch", "cifar10")


def _unpickle(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _cifar10_classes(folder: str) -> tuple[str, ...]:
    try:
        names = _unpickle(os.path.join(folder, "batches.meta"))["label_names"]
        return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    except Exception:  # no or odd meta file: CIFAR-10's names are fixed anyway
        return CIFAR10_CLASSES


def read_cifar10(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (or ``root`` itself) as uint8 NCHW + int64 labels."""
    folder = _cifar10_folder(os.path.abspath(root), f"cifar10:{root}")

    def read(names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            try:
                batch = _unpickle(os.path.join(folder, name))
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch["labels"], dtype=np.int64))
            except Exception as e:  # a truncated or foreign file
                raise _fail(f"cifar10:{root}", f"cannot read {name} ({type(e).__name__}: {e})", "cifar10") from None
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    return (*read(CIFAR10_TRAIN_FILES), *read([CIFAR10_TEST_FILE]))


# --------------------------------------------------------------------------------------
# Image folders (decoded once, cached)
# --------------------------------------------------------------------------------------


def _decode_files(paths: Sequence[str], size: int) -> np.ndarray:
    """Decode images to an n×size×size×3 uint8 array (a worker's share of the files)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                if img.mode != "RGB":
                    img = img.convert("RGB")
                if img.size != (size, size):  # keep the aspect: shorter side to size, centre crop
                    img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img)
        except Exception as e:
            raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return out


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(workers: int | None) -> int:
    """Loader processes for one training process: ``workers`` if given, else the CPUs it may
    use, shared among the node's ranks under torchrun (``LOCAL_WORLD_SIZE``), at most 8."""
    if workers is None:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return max(1, min(8, _cpu_count() // ranks))
    if not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers={workers!r} is invalid: use 0 (load in the training process) or more")
    return workers


def _decode_all(paths: Sequence[str], size: int, workers: int | None) -> torch.Tensor:
    workers = _cpu_count() if workers is None else workers
    if workers <= 1 or len(paths) < 4000:  # a pool costs more than it saves on small folders
        arrays = [_decode_files(paths, size)]
    else:
        step = max(1, min(2000, math.ceil(len(paths) / (4 * workers))))
        chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            arrays = list(pool.map(partial(_decode_files, size=size), chunks))
    return torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2).contiguous()


def _list_split(root: str, split: str, classes: Sequence[str]) -> tuple[list[str], list[int], list[str]]:
    """Relative paths, labels, and the cache-key lines (path, size, mtime) of one split."""
    paths, labels, lines = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        entries = sorted((e for e in os.scandir(folder) if e.is_file() and _is_image(e.name)), key=lambda e: e.name)
        for e in entries:
            st = e.stat()
            rel = f"{split}/{name}/{e.name}"
            paths.append(rel)
            labels.append(label)
            lines.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
    return paths, labels, lines


def _cache_paths(root: str) -> list[str]:
    """Where a folder's decoded tensor may live: next to it, else in the user's cache."""
    user = os.environ.get("RESNET_EXPLORER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resnet_explorer"
    )
    tag = hashlib.sha256(root.encode()).hexdigest()[:16]
    return [os.path.join(root, CACHE_NAME), os.path.join(user, f"folder-{tag}.pt")]


def _load_cache(root: str, key: str) -> dict[str, Any] | None:
    for path in _cache_paths(root):
        try:
            blob = torch.load(path, weights_only=True)
        except Exception:  # absent, unreadable or stale format: decode again
            continue
        if isinstance(blob, dict) and blob.get("key") == key:
            return blob
    return None


def _save_cache(root: str, blob: dict[str, Any]) -> str | None:
    for path in _cache_paths(root):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            os.close(fd)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as readable as the images
            try:
                torch.save(blob, tmp)
                os.replace(tmp, path)  # atomic: readers never see half a file
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return path
        except OSError:
            continue
    return None


def load_image_folder(
    root: str, size: int = 32, workers: int | None = None, cache: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` as uint8 NCHW tensors + labels.

    Classes are the sorted folder names. Images not already size×size are resized
    (shorter side, then a centre crop). The decoded tensors are cached in
    ``root/.resnet_explorer_cache.pt`` (or the user cache if root is read-only), keyed
    by a hash of the file list with sizes and mtimes, so the next load is instant.
    """
    root = os.path.abspath(root)
    arg = f"folder:{root}"
    if not os.path.isdir(root):
        raise _fail(arg, "no such directory", "folder")
    classes = _check_class_tree(root, arg, "folder", ("train", "test"))
    train_paths, train_labels, train_lines = _list_split(root, "train", classes)
    test_paths, test_labels, test_lines = _list_split(root, "test", classes)
    key_text = "\n".join([f"v1 size={size}", *classes, *train_lines, *test_lines])
    key = hashlib.sha256(key_text.encode()).hexdigest()
    if cache and (blob := _load_cache(root, key)) is not None:
        return blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], list(blob["classes"])

    images = _decode_all([os.path.join(root, p) for p in train_paths + test_paths], size, workers)
    n = len(train_paths)
    blob = dict(
        key=key, classes=list(classes),
        train_x=images[:n].clone(), train_y=torch.tensor(train_labels, dtype=torch.int64),
        test_x=images[n:].clone(), test_y=torch.tensor(test_labels, dtype=torch.int64),
    )
    if cache:
        _save_cache(root, blob)
    return blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"], classes


_SYNTHETIC_CACHE: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}


def _synthetic_cached(n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The synthetic set, generated once per process (the last one asked for is kept) and
    handed out as copies: the runs of an experiment, and their analyses, share it."""
    key = (n_train, n_test, seed)
    if key not in _SYNTHETIC_CACHE:
        _SYNTHETIC_CACHE.clear()
        _SYNTHETIC_CACHE[key] = _synthetic(*key)
    return tuple(t.clone() for t in _SYNTHETIC_CACHE[key])


def load_tensors(source: DataSource) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """An in-memory source as ``(train_x, train_y, test_x, test_y)`` (uint8 NCHW, int64)."""
    if source.kind == "synthetic":
        return _synthetic_cached(source.n_train or SYNTHETIC_TRAIN, source.n_test or SYNTHETIC_TEST, source.seed or 0)
    if source.kind == "cifar10":
        return read_cifar10(source.path)
    if source.kind == "folder":
        return load_image_folder(source.path)[:4]
    raise DataError(f"{source.spec}: ImageNet is read lazily, not into memory; use make_imagenet_loader")


# --------------------------------------------------------------------------------------
# Preprocessing statistics and the held-out split
# --------------------------------------------------------------------------------------


def pixel_mean(x: torch.Tensor) -> torch.Tensor:
    """The per-pixel mean image (3×H×W, float32, in [0, 1] units) of uint8 images."""
    total = x.sum(0, dtype=torch.int32 if x.shape[0] < 2**23 else torch.int64)  # exact, and fast
    return (total.double() / (255.0 * x.shape[0])).float()


def channel_std(x: torch.Tensor) -> torch.Tensor:
    """The per-channel standard deviation (3, float32, [0, 1] units) over all pixels of uint8 images."""
    # From each channel's histogram of the 256 values: exact, and no float copy of the data.
    hist = torch.stack([torch.bincount(x[:, c].flatten(), minlength=256) for c in range(x.shape[1])]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = hist.sum(1)
    mean = (hist * values).sum(1) / n
    var = ((hist * values**2).sum(1) / n - mean**2).clamp_min(0)
    return var.sqrt().float()


def split_train_val(
    x: torch.Tensor, y: torch.Tensor, val_split: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``val_split`` random training images (the paper's 45k/5k split), fixed by seed."""
    if not 0 < val_split < x.shape[0]:
        raise DataError(f"val_split={val_split} must be between 1 and {x.shape[0] - 1} (the training set's size - 1)")
    order = torch.randperm(x.shape[0], generator=_generator("val-split", seed))
    train, val = order[val_split:].sort().values, order[:val_split].sort().values
    return x[train], y[train], x[val], y[val]


# --------------------------------------------------------------------------------------
# The in-memory loader (CIFAR-style data, whole dataset on the device)
# --------------------------------------------------------------------------------------


class GpuCifarLoader:
    """Batches of a uint8 dataset held whole on ``device``, augmented there.

    The dataset moves to the device once; each batch is one gather (random crop of the
    padded images and horizontal flip in a single index), one multiply and one subtract.
    No DataLoader, no worker processes. Training mode shuffles, augments and drops the
    last partial batch; eval mode does none of these.

    The order and augmentation of epoch e are drawn on the CPU from (seed, e), so they
    are identical on any device and batch k of an epoch can be replayed alone:
    ``set_epoch(e, start_batch=k)`` resumes mid-epoch. Iterating a whole epoch moves on
    to the next one, so calling ``set_epoch`` is optional.

    With ``world_size`` > 1 (data-parallel training) ``batch_size`` is the global batch:
    every rank draws the same plan and yields only its contiguous slice (``rank``) of each
    batch, so the ranks together see exactly what one process sees.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: str | torch.device,
        train: bool, mean: torch.Tensor, seed: int = 0, augment: bool = True,
        channels_last: bool = False, dtype: torch.dtype = torch.float32,
        std: torch.Tensor | None = None, pad: int = 4, rank: int = 0, world_size: int = 1,
    ):
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError(f"x must be a uint8 N×C×H×W tensor, got {x.dtype} {tuple(x.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {y.shape[0]} labels")
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.augment = train and augment
        self.drop_last = train
        self.channels_last, self.dtype = channels_last, dtype
        self.pad = pad if self.augment else 0
        self.epoch, self._start = 0, 0

        c, h, w = x.shape[1:]
        mean = torch.as_tensor(mean, dtype=torch.float32).expand(c, h, w)
        std = torch.ones(c) if std is None else torch.as_tensor(std, dtype=torch.float32)
        self.mean, self.std = mean.to(self.device), std.to(self.device)
        # (x/255 - mean)/std = x·scale - shift; padding x and shift with zeros makes the
        # padded border exactly 0 in the output.
        self._scale = (1.0 / (255.0 * std)).view(c, 1, 1).to(self.device)
        shift = mean / std.view(c, 1, 1)
        p = self.pad
        x = x.to(self.device)
        self.x = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        self._shift = torch.nn.functional.pad(shift, (p, p, p, p)).to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.num_samples, self.image_shape = x.shape[0], (c, h, w)
        self._channels = torch.arange(c, device=self.device)
        self._rows = torch.arange(h, device=self.device)
        self._cols = torch.arange(w, device=self.device)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        yield from self.epoch_batches(epoch, start)
        self.epoch = epoch + 1

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s plan, by position in the epoch, on the CPU: the sample order, the
        crops' top-left corners in the padded image (n×2: row, col), and which crops are
        mirrored."""
        n = self.num_samples
        if not self.train:
            return torch.arange(n), torch.zeros(n, 2, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
        g = _generator("epoch", self.seed, epoch)
        order = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5 if self.augment else torch.zeros(n, dtype=torch.bool)
        return order, offsets, flips

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch from ``start_batch`` on; leaves the loader's state alone."""
        order, offsets, flips = (t.to(self.device) for t in self.epoch_plan(epoch))
        for k in range(start_batch, len(self)):
            lo, hi = shard(k * self.batch_size, min((k + 1) * self.batch_size, self.num_samples),
                           self.rank, self.world_size)
            if lo < hi:  # an evaluation batch may leave the last ranks nothing
                yield self._batch(order[lo:hi], offsets[lo:hi], flips[lo:hi])

    def _batch(
        self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.pad:  # no augmentation: a plain gather of whole images
            images = self.x[idx].float() * self._scale - self._shift
        else:
            images = self._augmented(idx, offsets, flips)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images.to(self.dtype), self.y[idx]

    def _augmented(self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        w = self.image_shape[2]
        rows = offsets[:, :1] + self._rows  # b × H rows of the padded image
        cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - self._cols, self._cols)  # b × W
        ch, r, c = self._channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
        return self.x[idx[:, None, None, None], ch, r, c].float() * self._scale - self._shift[ch, r, c]


# --------------------------------------------------------------------------------------
# ImageNet transforms
# --------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel RGB mean, [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)
# Eigen-decomposition of the RGB covariance of ImageNet pixels in [0, 1] units, as used
# for AlexNet-style lighting noise by fb.resnet.torch and most reimplementations.
# Columns of IMAGENET_EIGVEC are the eigenvectors p_i; IMAGENET_EIGVAL are the λ_i.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
MULTI_SCALES = (224, 256, 384, 480, 640)


class Lighting(v2.Transform):
    """AlexNet's PCA colour augmentation: add Σ α_i λ_i p_i to every pixel, α_i ~ N(0, std).

    Works on float images in [0, 1] (after ``ToDtype(float32, scale=True)``).
    """

    _transformed_types = (torch.Tensor,)

    def __init__(self, std: float = 0.1, eigval: Sequence[float] = IMAGENET_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC):
        super().__init__()
        self.std = std
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(3) * self.std
        return dict(rgb=self.eigvec @ (alpha * self.eigval))

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not inpt.is_floating_point():
            raise TypeError("Lighting needs a float image in [0, 1]: put it after ToDtype(torch.float32, scale=True)")
        return inpt + params["rgb"].to(inpt).view(3, 1, 1)


class SubtractMean(v2.Transform):
    """Subtract a mean image (3×H×W, per pixel) or colour (3, per channel) in [0, 1]
    units; with ``std``, also divide by a per-channel std (torchvision's pretrained
    weights expect ``IMAGENET_MEAN`` and ``IMAGENET_STD``)."""

    _transformed_types = (torch.Tensor,)

    def __init__(self, mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
                 std: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        self.mean = mean.view(3, 1, 1) if mean.dim() == 1 else mean
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = inpt - self.mean.to(inpt)
        return out if self.std is None else out / self.std.to(inpt)


def imagenet_train_transform(
    mean: Sequence[float] | torch.Tensor | None = None, lighting: float = 0.1,
    scale: tuple[int, int] = (256, 480), crop: int = 224, std: Sequence[float] | None = None,
) -> v2.Compose:
    """Sec. 3.4's training input: shorter side S ∈ [256, 480], random 224 crop or its flip,
    PCA lighting, mean subtraction (the per-channel ImageNet mean unless given one)."""
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResize(scale[0], scale[1] + 1, antialias=True),  # upper bound exclusive
        v2.RandomCrop(crop),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        Lighting(lighting),
        SubtractMean(IMAGENET_MEAN if mean is None else mean, std),
        v2.ToPureTensor(),
    ])


def ten_crop(img: torch.Tensor, size: int = 224) -> torch.Tensor:
    """The ten-crop (4 corners + centre, then the same of the flipped image) as 10×C×size×size."""
    return torch.stack([torch.as_tensor(c) for c in v2.functional.ten_crop(img, [size, size])])


def imagenet_eval_transform(
    mean: Sequence[float] | torch.Tensor | None = None, resize: int = 256, crop: int = 224,
    ten_crops: bool = False, std: Sequence[float] | None = None,
) -> v2.Compose:
    """The test input: shorter side 256, then the 224 centre crop (C×224×224) or the
    ten-crop (10×C×224×224)."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.Lambda(partial(ten_crop, size=crop)) if ten_crops else v2.CenterCrop(crop),
        v2.ToDtype(torch.float32, scale=True),
        SubtractMean(IMAGENET_MEAN if mean is None else mean, std),
        v2.ToPureTensor(),
    ])


def multi_scale(img: torch.Tensor | Image.Image, scales: Sequence[int] = MULTI_SCALES) -> list[torch.Tensor]:
    """The image with its shorter side resized to each scale, for fully-convolutional
    testing (the scores of a net on each are averaged). Subtract a per-channel mean: a
    per-pixel mean has no single size."""
    img = v2.functional.to_image(img) if isinstance(img, Image.Image) else img
    return [torch.as_tensor(v2.functional.resize(img, [s], antialias=True)) for s in scales]


# --------------------------------------------------------------------------------------
# The ImageNet loader (lazy, worker processes)
# --------------------------------------------------------------------------------------


class _SeededDataset(Dataset):
    """Applies a random transform under a seed sent with each index, so a sample's
    augmentation is fixed by (seed, epoch, position) whichever worker decodes it."""

    def __init__(self, base: Dataset, transform: Any):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        img, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


class _EpochBatchSampler(Sampler):
    """Batches of (index, seed) pairs for one epoch, from (seed, epoch); can start mid-epoch.

    With ``world_size`` > 1, ``batch_size`` is the global batch and this rank's batches are
    its contiguous slices of the global batches (the same order and seeds on every rank)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 sampler: Sampler | None = None, rank: int = 0, world_size: int = 1):
        if sampler is not None and world_size > 1:
            raise ValueError("give either a sampler (e.g. a DistributedSampler) or rank/world_size, not both")
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.seed, self.sampler = seed, sampler
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def _count(self) -> int:
        return len(self.sampler) if self.sampler is not None else self.n  # type: ignore[arg-type]

    def batches_per_epoch(self) -> int:
        n, b = self._count(), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = _generator("imagenet-epoch", self.seed, self.epoch)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            order = list(self.sampler)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        seeds = torch.randint(0, 2**62, (len(order),), generator=g).tolist()
        for k in range(self.start_batch, self.batches_per_epoch()):
            lo, hi = shard(k * self.batch_size, min((k + 1) * self.batch_size, len(order)),
                           self.rank, self.world_size)
            if lo < hi:
                yield list(zip(order[lo:hi], seeds[lo:hi]))


class ImageNetLoader:
    """A DataLoader over an image dataset with the same interface as `GpuCifarLoader`.

    Workers decode and augment; each sample's randomness comes from (seed, epoch, its
    position in the epoch), so batches do not depend on the number of workers and a
    resumed run (``set_epoch(e, start_batch=k)``) replays them. A DistributedSampler (or
    any sampler) may replace the built-in shuffle; its ``set_epoch`` is called for you.
    The trainer shards with ``rank``/``world_size`` instead (each rank its slice of the
    single-process global batches), which keeps N ranks equal to one process.
    """

    def __init__(
        self, dataset: Dataset, transform: Any, batch_size: int, device: str | torch.device,
        train: bool, seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
        channels_last: bool = False, dtype: torch.dtype = torch.float32,
        rank: int = 0, world_size: int = 1,
    ):
        workers = resolve_workers(workers)
        self.device = torch.device(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.drop_last = train
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch, self._start = 0, 0
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        self.batch_sampler = _EpochBatchSampler(self.num_samples, batch_size, train, train, seed, sampler,
                                                rank, world_size)
        self.loader = DataLoader(
            _SeededDataset(dataset, transform), batch_sampler=self.batch_sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_epoch()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self._start = epoch, start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.epoch, self._start
        self._start = 0
        self.batch_sampler.epoch, self.batch_sampler.start_batch = epoch, start
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last and images.dim() == 4:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images.to(self.dtype), labels.to(self.device, non_blocking=True)
        self.epoch = epoch + 1


def make_imagenet_loader(
    root: str, split: str, batch_size: int, device: str | torch.device, train: bool,
    seed: int = 0, workers: int | None = None, sampler: Sampler | None = None,
    mean: Sequence[float] | torch.Tensor | None = None, channels_last: bool = False,
    dtype: torch.dtype = torch.float32, ten_crops: bool = False, std: Sequence[float] | None = None,
    augment: bool = True, rank: int = 0, world_size: int = 1,
) -> ImageNetLoader:
    """A loader over ``root/<split>/<wnid>/*`` (torchvision ImageFolder) with the paper's
    train transform (``train`` and ``augment``) or test transform. ``ten_crops`` makes
    test batches B×10×3×224×224."""
    from torchvision.datasets import ImageFolder

    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise _fail(f"imagenet:{root}", f"no {split}/ subfolder", "imagenet")
    if train and augment:
        transform = imagenet_train_transform(mean, std=std)
    else:
        transform = imagenet_eval_transform(mean, ten_crops=ten_crops, std=std)
    return ImageNetLoader(
        ImageFolder(folder), transform, batch_size, device, train, seed, workers, sampler, channels_last, dtype,
        rank, world_size,
    )


def estimate_imagenet_mean(root: str, samples: int = 10_000, size: int = 224, seed: int = 0) -> torch.Tensor:
    """A per-pixel mean image (3×size×size, [0, 1]) from random training images at the
    test geometry (shorter side 256·size/224, centre crop), to use instead of the
    per-channel mean."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(os.path.join(root, "train"))
    pick = torch.randperm(len(dataset), generator=_generator("imagenet-mean", seed))[:samples]
    tf = v2.Compose([v2.ToImage(), v2.Resize(size * 256 // 224, antialias=True), v2.CenterCrop(size),
                     v2.ToDtype(torch.float32, scale=True)])
    total = torch.zeros(3, size, size, dtype=torch.float64)
    for i in pick.tolist():
        total += tf(dataset[i][0])
    return (total / len(pick)).float()


# --------------------------------------------------------------------------------------
# The trainer's entry point
# --------------------------------------------------------------------------------------


def make_loaders(
    source: DataSource, batch_size: int, device: str | torch.device, seed: int,
    val_split: int | None = None, augment: bool = True, channels_last: bool = False,
    *, dtype: torch.dtype = torch.float32, normalize_std: bool = False,
    eval_batch_size: int | None = None, workers: int | None = None, sampler: Sampler | None = None,
    rank: int = 0, world_size: int = 1,
) -> tuple[GpuCifarLoader | ImageNetLoader, GpuCifarLoader | ImageNetLoader, dict[str, Any]]:
    """The training and evaluation loaders for a source, and a JSON-ready ``info`` dict.

    With ``val_split`` (CIFAR-style sources only) that many training images are held out
    and become the evaluation set (the paper's 45k/5k split); otherwise the test split is
    evaluated. The mean is computed on the images actually trained on. With ``world_size``
    > 1 both loaders yield rank ``rank``'s slice of each (global) batch. ``workers``: ImageNet
    loader processes (default: see `resolve_workers`).
    """
    eval_batch_size = eval_batch_size or batch_size
    workers = resolve_workers(workers)
    info: dict[str, Any] = {"data": source.to_dict(), "val_split": val_split}
    if not source.in_memory:
        if val_split:
            raise DataError("val_split applies to CIFAR-style sources; ImageNet evaluates on val/")
        std = IMAGENET_STD if normalize_std else None
        common = dict(seed=seed, workers=workers, channels_last=channels_last, dtype=dtype, std=std,
                      rank=rank, world_size=world_size)
        train = make_imagenet_loader(source.path, "train", batch_size, device, True, sampler=sampler,
                                     augment=augment, **common)
        test = make_imagenet_loader(source.path, "val", eval_batch_size, device, False, **common)
        info.update(train_size=train.num_samples, eval_size=test.num_samples, eval_split="val",
                    mean=list(IMAGENET_MEAN), std=None if std is None else list(std),
                    augment="scale [256,480], crop 224, flip, lighting 0.1" if augment else "none")
        return train, test, info

    t0 = time.perf_counter()
    train_x, train_y, test_x, test_y = load_tensors(source)
    eval_split = "test"
    if val_split:
        train_x, train_y, test_x, test_y = split_train_val(train_x, train_y, val_split, seed)
        eval_split = "val"
    mean = pixel_mean(train_x)
    std = channel_std(train_x) if normalize_std else None
    shards = dict(rank=rank, world_size=world_size)
    train = GpuCifarLoader(train_x, train_y, batch_size, device, True, mean, seed, augment,
                           channels_last, dtype, std, **shards)
    test = GpuCifarLoader(test_x, test_y, eval_batch_size, device, False, mean, seed, False,
                          channels_last, dtype, std, **shards)
    info.update(
        train_size=int(train_x.shape[0]), eval_size=int(test_x.shape[0]), eval_split=eval_split,
        mean=[round(v, 6) for v in mean.mean((1, 2)).tolist()],  # the mean image's average colour
        std=None if std is None else [round(v, 6) for v in std.tolist()],
        augment="pad 4, crop 32, flip" if augment else "none",
        load_seconds=round(time.perf_counter() - t0, 3),
    )
    return train, test, info
