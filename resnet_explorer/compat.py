"""Loading torchvision's ResNet weights into our models (option B, stride at the 3×3, "v1.5").

Key mapping, torchvision → resnet-explorer (the paper's names):

    conv1.*                  → conv1.0.conv.*
    bn1.*                    → conv1.0.bn.*
    layerK.i.downsample.0.*  → conv{K+1}_x.i.shortcut.conv.*
    layerK.i.downsample.1.*  → conv{K+1}_x.i.shortcut.bn.*
    layerK.i.*               → conv{K+1}_x.i.*      (conv1/bn1/conv2/bn2/conv3/bn3 keep their names)
    fc.*                     → fc.*
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .model import Net, build
from .spec import SpecError
from .zoo import IMAGENET_BLOCKS

_LAYER = re.compile(r"layer(\d)\.(\d+)\.(.*)")


def torchvision_key(key: str) -> str:
    """Our state-dict key for one torchvision ResNet key."""
    if key.startswith("conv1."):
        return "conv1.0.conv." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "conv1.0.bn." + key[len("bn1."):]
    if m := _LAYER.fullmatch(key):
        stage, block, rest = int(m[1]) + 1, m[2], m[3]
        rest = rest.replace("downsample.0.", "shortcut.conv.").replace("downsample.1.", "shortcut.bn.")
        return f"conv{stage}_x.{block}.{rest}"
    return key


def load_torchvision_state_dict(model: Net, state_dict: dict[str, torch.Tensor]) -> Net:
    """Load a ``torchvision.models.resnetNN().state_dict()`` into an option-B, v1.5 model."""
    spec = model.spec
    if (not spec.residual or spec.shortcut != "B" or spec.stride_at != "3x3"
            or spec.shortcut_kind != "identity" or spec.block_order != "post"):
        raise SpecError(
            f"{spec.name}: torchvision weights fit residual nets with shortcut='B' and "
            f"stride_at='3x3', identity shortcuts, post-activation blocks (got residual={spec.residual}, "
            f"shortcut={spec.shortcut!r}, stride_at={spec.stride_at!r}, shortcut_kind={spec.shortcut_kind!r}, "
            f"block_order={spec.block_order!r})"
        )
    model.load_state_dict({torchvision_key(k): v for k, v in state_dict.items()})
    return model


def from_torchvision(tv_model: nn.Module, depth: int) -> Net:
    """Our ResNet-``depth`` (option B, v1.5) carrying the weights of a torchvision ResNet."""
    if depth not in IMAGENET_BLOCKS:
        raise SpecError(f"depth {depth} is invalid: use one of {', '.join(map(str, IMAGENET_BLOCKS))}")
    num_classes = tv_model.fc.out_features
    model = build(f"resnet{depth}", shortcut="B", stride_at="3x3", num_classes=num_classes)
    return load_torchvision_state_dict(model, tv_model.state_dict())
