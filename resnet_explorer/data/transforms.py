"""The paper's ImageNet preprocessing (Sec. 3.4) as torchvision v2 transforms.

Training: scale augmentation (shorter side S ∈ [256, 480]), a random 224×224 crop or its
flip, AlexNet's PCA lighting, and mean subtraction. Testing: the 224 centre crop of the
image resized to 256, the ten-crop, or several scales (fully convolutional).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

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
