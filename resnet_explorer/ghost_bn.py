"""Ghost batch norm: BatchNorm statistics over groups of ``bn_batch`` images of each batch.

The paper trained its CIFAR nets with a batch of 128 "on two GPUs", so each BatchNorm layer
normalised the 64 images of its own GPU (data-parallel training without synchronised BN).
A recipe's ``bn_batch`` reproduces that on one device: in training, each batch is split
into consecutive groups of ``bn_batch`` images and each group is normalised with its own
mean and variance, exactly as each rank normalises its slice under DDP
(`distributed.shard`: rank r gets the r-th contiguous slice). The running statistics are
updated from the first group alone, as DDP keeps rank 0's (it broadcasts rank 0's buffers
before every forward), so evaluation sees what a two-GPU run would have saved.

How BN is computed in training is a recipe choice, not part of the net: the spec, the
parameters and the state dict are unchanged (a checkpoint loads into a plain model), and
evaluation mode is plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import RecipeError


class GhostBatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` whose training-mode statistics are taken over groups of ``bn_batch``
    images (the last group shorter if the batch does not divide); running statistics from
    the first group. Evaluation, and a batch of at most ``bn_batch`` images, are plain BN."""

    def __init__(self, num_features: int, bn_batch: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.bn_batch = bn_batch

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d, bn_batch: int) -> GhostBatchNorm2d:
        """The same layer (the very parameters and buffers, shared) with ghost statistics."""
        ghost = cls(bn.num_features, bn_batch, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                    track_running_stats=bn.track_running_stats)
        ghost.weight, ghost.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(ghost, name, getattr(bn, name))
        ghost.train(bn.training)
        return ghost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.bn_batch:
            return super().forward(x)
        first, *rest = torch.split(x, self.bn_batch)
        out = [super().forward(first)]  # updates the running statistics (rank 0's slice)
        out += [F.batch_norm(g, None, None, self.weight, self.bias, True, 0.0, self.eps) for g in rest]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bn_batch={self.bn_batch}"


def per_process(bn_batch: int | None, batch: int, sync_bn: bool = False) -> int | None:
    """The ghost-batch size one training process applies to its ``batch`` images (None: plain
    BN, when ``bn_batch`` is unset or spans the whole per-process batch); one line when the
    recipe asks for groups that this process's batch cannot hold."""
    if bn_batch is None:
        return None
    if sync_bn:
        raise RecipeError(f"bn_batch={bn_batch} and --sync-bn contradict each other (BN over groups of "
                          f"{bn_batch} images, or over the whole global batch): drop one of them")
    if batch % bn_batch:
        raise RecipeError(f"bn_batch={bn_batch} does not divide the {batch} images each process trains on: "
                          f"use --set bn_batch=N with N a divisor of {batch}, or fewer processes")
    return bn_batch if bn_batch < batch else None


def convert(model: nn.Module, bn_batch: int | None) -> nn.Module:
    """``model`` with every `nn.BatchNorm2d` computing ghost statistics (in place; the same
    parameters, so build the optimizer after). ``bn_batch`` None leaves it as it is."""
    if bn_batch is None:
        return model
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, GhostBatchNorm2d.from_bn(child, bn_batch))
        else:
            convert(child, bn_batch)
    return model
