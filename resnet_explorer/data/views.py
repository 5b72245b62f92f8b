"""The paper's ImageNet views (Sec. 3.4) as geometry that both input paths share.

A `View` is a window of an image resized to ``height × width`` (antialiased bilinear):
rows ``top …`` and columns ``left …`` of the resized image, ``out_h × out_w`` of them,
optionally mirrored, plus the RGB shift of the PCA lighting. Training draws one view per
image from the image's own seed (`draw_train_view`); testing takes the centre crop or the
ten crops of the 256 resize (`eval_views`) or the whole image at several scales.

The CPU path applies a view to one image with torchvision (`apply_view`); the GPU path
applies a batch of views at once as two matrix products per image (`resample_views`)
with the same antialiased bilinear weights as torchvision and PIL, so the two paths give
the same crops, flips, scales and lighting for the same draws. They differ only in
rounding: torchvision's uint8 resize rounds between its horizontal and vertical passes,
`resample_views` rounds once, so a pixel differs by at most one level (1/255).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as F

# Eigen-decomposition of the RGB covariance of ImageNet pixels in [0, 1] units, as used
# for AlexNet-style lighting noise by fb.resnet.torch and most reimplementations.
# Columns of IMAGENET_EIGVEC are the eigenvectors p_i; IMAGENET_EIGVAL are the λ_i.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclass(frozen=True)
class View:
    """Rows ``top:top+out_h`` and columns ``left:left+out_w`` of the image resized to
    ``height × width``, mirrored left-right if ``flip``, with ``rgb`` added ([0, 1] units)."""

    height: int
    width: int
    top: int
    left: int
    out_h: int
    out_w: int
    flip: bool = False
    rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)


def resized_size(h: int, w: int, shorter: int) -> tuple[int, int]:
    """The size torchvision's ``resize(img, [shorter])`` gives an ``h × w`` image."""
    if w <= h:
        return int(shorter * h / w), shorter
    return shorter, int(shorter * w / h)


def lighting_rgb(alpha: torch.Tensor) -> tuple[float, float, float]:
    """AlexNet's lighting shift Σ α_i λ_i p_i for the draws ``alpha`` (3 values)."""
    eigvec = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float32)
    eigval = torch.tensor(IMAGENET_EIGVAL, dtype=torch.float32)
    return tuple((eigvec @ (alpha.float() * eigval)).tolist())  # type: ignore[return-value]


def draw_train_view(h: int, w: int, generator: torch.Generator | None = None,
                    scale: tuple[int, int] = (256, 480), crop: int = 224, lighting: float = 0.1) -> View:
    """The training view of an ``h × w`` image: shorter side S uniform in ``scale``
    (both ends included), a uniform ``crop``² window, a mirror with probability ½, and
    lighting α ~ N(0, ``lighting``). The draws come from ``generator`` (default: torch's
    global one), in that order, so a seed fixes the view on either path."""
    if scale[0] < crop or scale[1] < scale[0]:
        raise ValueError(f"scale={scale} must satisfy crop ({crop}) <= min <= max")
    g = generator
    s = int(torch.randint(scale[0], scale[1] + 1, (), generator=g))
    rh, rw = resized_size(h, w, s)
    top = int(torch.randint(0, rh - crop + 1, (), generator=g))
    left = int(torch.randint(0, rw - crop + 1, (), generator=g))
    flip = bool(torch.rand((), generator=g) < 0.5)
    alpha = torch.randn(3, generator=g) * lighting
    return View(rh, rw, top, left, crop, crop, flip, lighting_rgb(alpha))


def eval_views(h: int, w: int, resize: int = 256, crop: int = 224, ten_crops: bool = False) -> list[View]:
    """The test views of an ``h × w`` image resized to shorter side ``resize``: the centre
    crop, or torchvision's ten crops (corners and centre, then those of the mirror image)."""
    rh, rw = resized_size(h, w, resize)
    ct, cl = round((rh - crop) / 2.0), round((rw - crop) / 2.0)
    if not ten_crops:
        return [View(rh, rw, ct, cl, crop, crop)]
    five = [(0, 0), (0, rw - crop), (rh - crop, 0), (rh - crop, rw - crop), (ct, cl)]
    views = [View(rh, rw, t, left, crop, crop) for t, left in five]
    # a crop at column L of the mirror image is the original's crop at rw - L - crop, mirrored
    return views + [View(rh, rw, t, rw - left - crop, crop, crop, True) for t, left in five]


def scale_views(h: int, w: int, scales: Sequence[int]) -> list[View]:
    """Fully-convolutional testing: the whole image at each shorter side, and its mirror."""
    out = []
    for s in scales:
        rh, rw = resized_size(h, w, s)
        out += [View(rh, rw, 0, 0, rh, rw), View(rh, rw, 0, 0, rh, rw, True)]
    return out


@dataclass(frozen=True)
class ViewMaker:
    """The views of each image for one kind of loader: ``train`` (drawn from the image's
    seed), ``centre``, ``ten`` or ``scales``; a picklable ``(height, width, seed) → views``
    for the loader's worker processes."""

    kind: str = "train"
    scale: tuple[int, int] = (256, 480)
    crop: int = 224
    lighting: float = 0.1
    scales: tuple[int, ...] = ()

    def __call__(self, h: int, w: int, seed: int) -> list[View]:
        if self.kind == "train":
            return [draw_train_view(h, w, torch.Generator().manual_seed(seed), self.scale, self.crop, self.lighting)]
        if self.kind == "scales":
            return scale_views(h, w, self.scales)
        return eval_views(h, w, crop=self.crop, ten_crops=self.kind == "ten")


def apply_view(img: torch.Tensor, view: View) -> torch.Tensor:
    """A view of one uint8 C×H×W image with torchvision's resize (the CPU path)."""
    img = F.resize(img, [view.height, view.width], antialias=True)
    img = img[..., view.top:view.top + view.out_h, view.left:view.left + view.out_w]
    return img.flip(-1) if view.flip else img


# -- the batched resample (the GPU path) ----------------------------------------------------------
def _span(in_len: int, out_len: int, first: int, n: int) -> tuple[int, int]:
    """The source pixels [lo, hi) that outputs ``first … first+n-1`` of a resize from
    ``in_len`` to ``out_len`` read (the support of torchvision's antialiased weights)."""
    scale = in_len / out_len
    support = max(scale, 1.0)
    lo = max(math.floor((first + 0.5) * scale - support + 0.5), 0)
    hi = min(math.floor((first + n - 0.5) * scale + support + 0.5), in_len)
    return lo, hi


def _weights(in_len: torch.Tensor, out_len: torch.Tensor, first: torch.Tensor, flip: torch.Tensor,
             start: torch.Tensor, n: int, span: int) -> torch.Tensor:
    """B × n × span interpolation weights: output j of view b reads source pixel
    ``start[b] + k`` with weight [b, j, k] (torchvision's antialiased bilinear filter)."""
    in_len, out_len = in_len.double()[:, None], out_len.double()[:, None]
    j = torch.arange(n, dtype=torch.float64, device=in_len.device)[None]
    pos = first.double()[:, None] + torch.where(flip[:, None], n - 1 - j, j)  # in the resized image
    scale = in_len / out_len
    support = scale.clamp(min=1.0)
    centre = (pos + 0.5) * scale
    lo = (centre - support + 0.5).floor().clamp(min=0)
    hi = torch.minimum((centre + support + 0.5).floor(), in_len)
    k = (start.double()[:, None, None] + torch.arange(span, dtype=torch.float64, device=in_len.device))
    w = (1 - (k - centre[..., None] + 0.5).abs() / support[..., None]).clamp(min=0)
    w = w * ((k >= lo[..., None]) & (k < hi[..., None]))
    return (w / w.sum(-1, keepdim=True)).float()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without making the host wait for the stream's
    earlier work (pinned and non-blocking on CUDA)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def resample_views(images: Sequence[torch.Tensor], views: Sequence[View], chunk: int = 64,
                   rounded: bool = True) -> torch.Tensor:
    """Views of uint8 3×H×W images (one view per entry, same ``out_h × out_w``) as one
    B×3×out_h×out_w float32 batch of values 0…255, rounded like a uint8 image (unless not
    ``rounded``).

    Each output is ``Wy · window · Wxᵀ``: the window of source pixels the view reads,
    between two matrices of antialiased bilinear weights (mirror = reversed rows of Wx).
    Each window is padded to the next multiple of 64 pixels and views of one padded size
    go together, ``chunk`` at a time: padding stays small, and a view's result does not
    depend on which other views share its batch (N ranks give one process's pixels)."""
    if not views:
        raise ValueError("no views to resample")
    out_h, out_w = views[0].out_h, views[0].out_w
    device = images[0].device
    spans = []
    for img, v in zip(images, views):
        if (v.out_h, v.out_w) != (out_h, out_w):
            raise ValueError("resample_views needs views of one output size")
        h, w = img.shape[-2:]
        spans.append((_span(h, v.height, v.top, out_h), _span(w, v.width, v.left, out_w)))
    pad = [(-(-(y1 - y0) // 64) * 64, -(-(x1 - x0) // 64) * 64) for (y0, y1), (x0, x1) in spans]
    order = sorted(range(len(views)), key=lambda i: pad[i])  # each padded size's views together
    # what the weights need, for the whole batch in one copy to the device
    meta = to_device(torch.tensor([[images[i].shape[-2], views[i].height, views[i].top, spans[i][0][0],
                                    images[i].shape[-1], views[i].width, views[i].left, spans[i][1][0],
                                    int(views[i].flip), i] for i in order], dtype=torch.int64), device)
    out = torch.empty(len(views), 3, out_h, out_w, device=device)
    a = 0
    while a < len(order):
        b = a
        while b < len(order) and b - a < chunk and pad[order[b]] == pad[order[a]]:
            b += 1
        hm, wm = pad[order[a]]
        x = _resample_group([images[i] for i in order[a:b]], [spans[i] for i in order[a:b]], meta[a:b],
                            hm, wm, out_h, out_w)
        out.index_copy_(0, meta[a:b, 9], x.round_().clamp_(0, 255) if rounded else x)
        a = b
    return out


def _resample_group(images: list[torch.Tensor], spans: list, meta: torch.Tensor, hm: int, wm: int,
                    out_h: int, out_w: int) -> torch.Tensor:
    """`resample_views` for views whose windows fit ``hm × wm`` (``meta``: their rows of
    source size, resized size, offset, window start; for y, then x; then the mirror flag)."""
    device, n = images[0].device, len(images)
    buf = torch.zeros(n, 3, hm, wm, dtype=images[0].dtype, device=device)
    for k, (img, ((y0, y1), (x0, x1))) in enumerate(zip(images, spans)):
        buf[k, :, :y1 - y0, :x1 - x0] = img[:, y0:y1, x0:x1]
    no_flip = torch.zeros(n, dtype=torch.bool, device=device)
    wy = _weights(meta[:, 0], meta[:, 1], meta[:, 2], no_flip, meta[:, 3], out_h, hm)
    wx = _weights(meta[:, 4], meta[:, 5], meta[:, 6], meta[:, 8].bool(), meta[:, 7], out_w, wm)
    x = buf.float()
    if hm < wm:  # contract the longer side first: fewer multiply-adds
        return wy[:, None] @ (x @ wx[:, None].transpose(-1, -2))
    return (wy[:, None] @ x) @ wx[:, None].transpose(-1, -2)
