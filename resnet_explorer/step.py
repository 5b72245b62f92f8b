"""One training step: forward, loss, backward and the SGD update, with the chosen helpers.

`Stepper` applies what `devices.Accel` chose (autocast, an fp16 grad scaler, a compiled
model) and returns the loss and logits still on the device, so the training loop never
waits for the GPU between steps.
"""

from __future__ import annotations

import torch
from torch import nn

from .devices import Accel


class Stepper:
    """One SGD step with the chosen helpers: autocast, grad scaling (fp16), compiled model.

    ``forward`` is the module to call when it is not ``model`` itself (DDP around ``model``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, accel: Accel,
                 device: torch.device, forward: nn.Module | None = None):
        self.model, self.optimizer, self.accel, self.device = model, optimizer, accel, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=accel.amp == "fp16")
        net = model if forward is None else forward
        self.compiled = net if accel.compile == "off" else torch.compile(
            net, mode=None if accel.compile == "default" else accel.compile)
        self.criterion = nn.CrossEntropyLoss()

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of the last step's gradient for each conv and fc weight, in order."""
        named = [(n, p.grad) for n, p in self.model.named_parameters()
                 if n.endswith("weight") and p.dim() in (2, 4) and p.grad is not None]
        if not named:
            return {}
        norms = torch.stack(torch._foreach_norm([g for _, g in named])).float().cpu().tolist()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        return {n.removesuffix(".weight"): v / scale for (n, _), v in zip(named, norms)}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        with self.accel.autocast(self.device):
            logits = self.compiled(x)
            loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()
