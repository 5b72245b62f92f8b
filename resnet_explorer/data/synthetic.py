"""The embedded default dataset: generated from a seed, no file, no download.

**Gratings and blobs** is CIFAR-shaped: uint8 N×3×32×32, 10 classes, balanced. Each class
is a random prototype made of two oriented sinusoid gratings (class-specific orientation,
frequency and colour, each inside a Gaussian window at a class-specific place) and three
coloured Gaussian blobs at class-specific places. Every image draws its class's prototype
with a random translation (±8 px), random grating phases, jittered blob positions and a
random amplitude, adds a fainter copy of another class's prototype (the distractor) at
its own translation, mixes the colours with a random 3×3 matrix, adds a random
background colour and gradient, and pixel noise. The label therefore lives in spatial
structure (which textures and blobs, where relative to each other) rather than in mean
colour, which alone gives little better than chance. It is generated in about a second,
bit for bit the same from a given seed on any machine (float64 arithmetic; checked on
AVX2 and AVX-512 CPUs), so tests and quick CPU runs need no download and runs can be
compared. It is meant to show the degradation problem on a CPU, not to stand in for
CIFAR-10's accuracy numbers.

**synthetic-demo** (``--data synthetic-demo[:N[:SEED]]``, N = 10,000 by default) is the same
generator with three knobs turned, made for the CPU demo (`experiments.cpu_demo`): 16×16
images (places and widths scaled from 32 px, frequencies in cycles per image), each class
split into 5 sub-types (5 unrelated prototypes share a label, so fitting the set takes
more features), and a per-class colour cast added to the background (``tint`` 0.6). Why:
a deep *plain* net trains badly (the degradation problem) and at CPU budgets learns
almost nothing of the textures, but it can learn the colour cast, a cue that is large in
pixel space, so plain-56 trains, to a higher error than plain-20, instead of sitting at
chance; the textured sub-types are what the better-trained nets must fit beyond it, and
with 8-wide nets (68k weights for ResNet-20, 215k for ResNet-56) 10,000 training images are
more than either fits in the demo's 1,000 iterations. Measured
(`benchmarks/demo_orderings.py`): the plain orderings hold by a wide margin; ResNet-56 vs
ResNet-20 is a near tie at this budget (−4.5 to +3.8 points over seeds 0–4: it holds for 3).
The colour cast alone leaves a linear classifier on mean colour at about 52 % error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import DataError
from .seeds import seeded_generator
from .sources import SYNTHETIC_CLASSES, SYNTHETIC_TEST, SYNTHETIC_TRAIN, SYNTHETIC_VARIANTS


# Knobs of the generator; the defaults are tuned so that depth matters (see module doc).
_SYNTH: dict[str, Any] = dict(
    gratings=2, blobs=3,
    grating_freq=(2.0, 6.0),  # cycles per 32 px
    grating_sigma=(4.0, 7.0), grating_spread=14.0,  # window width, spread of window centres
    blob_sigma=(1.5, 3.5), blob_spread=18.0, blob_jitter=1.0, blob_gain=1.3,
    shift=8.0,  # per-image translation, ± px
    amplitude=(0.7, 1.3), distractor=(0.25, 0.55), distractor_shift=12.0,
    colour_mix=0.25, offset=0.3, gradient=0.3, noise=0.12, contrast=60.0,
    size=32,  # image side, px (places and widths above are in units of a 32-px image)
    modes=1,  # sub-types (prototypes) per class
    tint=0.0,  # strength of a per-class background colour cast
)
# The images are computed in float64 from float32 random draws, so that machines whose
# exp/cos differ in the last bit (AVX2 vs AVX-512 kernels) still round every pixel to the
# same uint8 value.


def _prototypes(g: torch.Generator, k: int, p: dict[str, Any], classes: int) -> dict[str, torch.Tensor]:
    """Each prototype's gratings and blobs (orientation, frequency, colour, place, width);
    ``k`` prototypes (``classes`` × sub-types) and, with a tint, one colour cast per class."""
    G, B = p["gratings"], p["blobs"]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=g)

    def colour(*shape: int) -> torch.Tensor:  # unit RGB directions, so colours differ in hue
        return torch.nn.functional.normalize(torch.randn(*shape, 3, generator=g), dim=-1)

    out = dict(
        g_theta=uniform(0, math.pi, k, G), g_freq=uniform(*p["grating_freq"], k, G),
        g_colour=colour(k, G), g_sigma=uniform(*p["grating_sigma"], k, G),
        g_pos=uniform(-0.5, 0.5, k, G, 2) * p["grating_spread"],
        b_colour=colour(k, B) * p["blob_gain"], b_sigma=uniform(*p["blob_sigma"], k, B),
        b_pos=uniform(-0.5, 0.5, k, B, 2) * p["blob_spread"],
    )
    if p["tint"]:  # drawn last, so that the other draws do not depend on it
        out["tint"] = colour(classes)
    return out


def _pattern_factors(
    proto: dict[str, torch.Tensor], cls: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor,
    g: torch.Generator, p: dict[str, Any], axis: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One class pattern per image as a sum of rank-1 terms: column profile × row profile
    × RGB colour. A blob is one term, a windowed grating two (cos(a+b) = cos a cos b −
    sin a sin b), so an image is a small batched matmul instead of a per-pixel loop. Places
    and widths are in units of a 32-pixel image, scaled to the image's side."""
    n, G, B = cls.shape[0], p["gratings"], p["blobs"]
    s = axis.shape[0] / 32

    def gauss(centre: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((axis - centre[..., None]) ** 2) / (2 * sigma[..., None] ** 2))

    pos = (proto["b_pos"][cls] + shift[:, None] + p["blob_jitter"] * torch.randn(n, B, 2, generator=g)) * s
    b_sigma = proto["b_sigma"][cls] * s
    b_y, b_x = gauss(pos[..., 1], b_sigma), gauss(pos[..., 0], b_sigma)

    centre, g_sigma = (proto["g_pos"][cls] + shift[:, None]) * s, proto["g_sigma"][cls] * s
    w_y, w_x = gauss(centre[..., 1], g_sigma), gauss(centre[..., 0], g_sigma)
    omega = proto["g_freq"][cls] * (2 * math.pi / axis.shape[0])  # cycles per image
    theta = proto["g_theta"][cls]
    phase = torch.rand(n, G, generator=g) * (2 * math.pi)
    a = (omega * torch.cos(theta))[..., None] * axis + phase[..., None]  # along x
    b = (omega * torch.sin(theta))[..., None] * axis  # along y
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
    """n balanced, shuffled images of the prototypes, with per-image nuisances. With
    ``modes`` > 1, prototype q is sub-type q // k of class q % k."""
    proto = {name: value.double() for name, value in proto.items()}
    size, modes = p["size"], p["modes"]
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2  # pixel centres
    kinds = (torch.arange(n) % (k * modes))[torch.randperm(n, generator=g)]
    labels = kinds % k
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for start in range(0, n, chunk):
        cls = kinds[start:start + chunk]
        m = cls.shape[0]

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        main = _pattern_factors(proto, cls, uniform(*p["amplitude"], m), uniform(-1, 1, m, 2) * p["shift"], g, p, axis)
        other = (cls % k + torch.randint(1, k, (m,), generator=g)) % k  # another class
        if modes > 1:
            other = other + k * torch.randint(0, modes, (m,), generator=g)
        distractor = _pattern_factors(
            proto, other, uniform(*p["distractor"], m), uniform(-1, 1, m, 2) * p["distractor_shift"], g, p, axis
        )
        # Background: a flat colour and a colour gradient along y and along x (rank-1 terms too).
        ones, ramp = torch.ones(m, 1, size), (axis / (size / 2)).expand(m, 1, size)
        bg_rows, bg_cols = torch.cat([ones, ramp, ones], 1), torch.cat([ones, ones, ramp], 1)
        bg_colours = torch.cat([
            p["offset"] * torch.randn(m, 1, 3, generator=g),
            p["gradient"] * torch.randn(m, 2, 3, generator=g),
        ], 1)
        if p["tint"]:  # the class's colour cast, on top of the random background colour
            bg_colours[:, 0] += p["tint"] * proto["tint"][cls % k].float()
        mixing = (torch.eye(3) + p["colour_mix"] * torch.randn(m, 3, 3, generator=g)).double()
        colours = torch.cat([main[2], distractor[2]], 1) @ mixing.transpose(1, 2)

        rows = torch.cat([main[0], distractor[0], bg_rows], 1)  # m × terms × size
        cols = torch.cat([main[1], distractor[1], bg_cols], 1)
        colours = torch.cat([colours, bg_colours.double()], 1)  # m × terms × 3
        # image[c, y, x] = Σ_t colours[t, c] · rows[t, y] · cols[t, x]
        img = (rows[:, None] * colours.transpose(1, 2)[..., None]).transpose(-1, -2) @ cols[:, None]
        img.add_(torch.randn(img.shape, generator=g), alpha=p["noise"])
        images[start:start + m] = img.mul_(p["contrast"]).add_(128).round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


def generate_synthetic(n_train: int, n_test: int, seed: int, **overrides: Any) -> tuple[torch.Tensor, ...]:
    """``(train_x, train_y, test_x, test_y)`` from the generator, its knobs (size, tint, modes …)
    overridden."""
    p = {**_SYNTH, **overrides}
    k = len(SYNTHETIC_CLASSES)
    proto = _prototypes(seeded_generator("synthetic", seed, "classes"), k * p["modes"], p, k)
    # Train and test come from their own streams, so the test set does not depend on n_train.
    train_x, train_y = _render(proto, n_train, seeded_generator("synthetic", seed, "train"), p, k)
    test_x, test_y = _render(proto, n_test, seeded_generator("synthetic", seed, "test"), p, k)
    return train_x, train_y, test_x, test_y


def synthetic_cifar(
    n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The embedded dataset: ``(train_x, train_y, test_x, test_y)``, uint8 N×3×32×32 images
    and int64 labels in 0..9, a pure function of the arguments (see the module doc)."""
    return generate_synthetic(n_train, n_test, seed)


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
    train_x, train_y, val_x, val_y = generate_synthetic(k * (train_per_class + 2), k * (val_per_class + 2), seed)
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


_SYNTHETIC_CACHE: dict[tuple[int, int, int, str], tuple[torch.Tensor, ...]] = {}


def synthetic_variant(n_train: int, n_test: int, seed: int, variant: str = "synthetic") -> tuple[torch.Tensor, ...]:
    """The synthetic set (one of `SYNTHETIC_VARIANTS`), generated once per process (the last
    one asked for is kept) and handed out as copies: the runs of an experiment, and their
    analyses, share it."""
    key = (n_train, n_test, seed, variant)
    if key not in _SYNTHETIC_CACHE:
        _SYNTHETIC_CACHE.clear()
        _SYNTHETIC_CACHE[key] = generate_synthetic(n_train, n_test, seed, **SYNTHETIC_VARIANTS[variant])
    return tuple(t.clone() for t in _SYNTHETIC_CACHE[key])
