"""The paper's ImageNet preprocessing (Sec. 3.4) as torchvision v2 transforms.

Training: scale augmentation (shorter side S ∈ [256, 480]), a random 224×224 crop or its
flip, AlexNet's PCA lighting, and mean subtraction. Testing: the 224 centre crop of the
image resized to 256, the ten-crop, or several scales (fully convolutional). The training
draws come from `views.draw_train_view`, which the GPU path uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from .views import IMAGENET_EIGVAL, IMAGENET_EIGVEC, View, apply_view, draw_train_view

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel RGB mean, [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)
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


class PaperTrainTransform:
    """Sec. 3.4's training input for one image (PIL or uint8 C×H×W): shorter side S ∈
    ``scale``, a random ``crop``² window or its mirror, PCA lighting, mean subtraction.

    The view is drawn by `draw_train_view` from torch's global generator (which the loader
    seeds per sample), or given; `GpuImageNetLoader` draws the same views from the same seeds."""

    def __init__(self, mean: Sequence[float] | torch.Tensor | None = None, lighting: float = 0.1,
                 scale: tuple[int, int] = (256, 480), crop: int = 224, std: Sequence[float] | None = None):
        if scale[0] < crop:
            raise ValueError(f"scale={scale} starts below the crop size {crop}")
        self.lighting, self.scale, self.crop = lighting, scale, crop
        self.normalize = SubtractMean(IMAGENET_MEAN if mean is None else mean, std)

    def view(self, h: int, w: int, generator: torch.Generator | None = None) -> View:
        """The random view of an ``h × w`` image (see `draw_train_view`)."""
        return draw_train_view(h, w, generator, self.scale, self.crop, self.lighting)

    def __call__(self, img: Image.Image | torch.Tensor, view: View | None = None) -> torch.Tensor:
        img = v2.functional.to_image(img).as_subclass(torch.Tensor)
        view = view or self.view(*img.shape[-2:])
        x = v2.functional.to_dtype(apply_view(img, view), torch.float32, scale=True)
        x = x + torch.tensor(view.rgb, dtype=torch.float32).view(3, 1, 1)
        return self.normalize(x).as_subclass(torch.Tensor)


def imagenet_train_transform(
    mean: Sequence[float] | torch.Tensor | None = None, lighting: float = 0.1,
    scale: tuple[int, int] = (256, 480), crop: int = 224, std: Sequence[float] | None = None,
) -> PaperTrainTransform:
    """Sec. 3.4's training input: shorter side S ∈ [256, 480], random 224 crop or its flip,
    PCA lighting, mean subtraction (the per-channel ImageNet mean unless given one)."""
    return PaperTrainTransform(mean, lighting, scale, crop, std)


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
