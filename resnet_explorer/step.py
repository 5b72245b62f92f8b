"""One training step: forward, loss, backward and the SGD update, with the chosen helpers.

`Stepper` applies what `devices.Accel` chose (autocast, an fp16 grad scaler, a compiled
model) and returns the loss and logits still on the device, so the training loop never
waits for the GPU between steps.

With ``--compile step`` the whole step is one function (`WholeStep`): the forward and the
backward (``torch.func.grad`` over the module called with its own parameters and buffers)
and SGD with momentum and weight decay written as tensor ops, the learning rate, momentum
and weight decay held in device tensors. `torch.compile` makes it one graph: on a GPU in
``reduce-overhead`` mode, so each iteration replays one CUDA graph (evaluation and
checkpoints stay outside it); on the CPU compiled by inductor. The momentum buffers stay
in the optimizer's state, so checkpoints and resumption are those of the eager step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .devices import Accel
from .errors import TrainingError


class Stepper:
    """One SGD step with the chosen helpers: autocast, grad scaling (fp16), compiled model.

    ``forward`` is the module to call when it is not ``model`` itself (DDP around ``model``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, accel: Accel,
                 device: torch.device, forward: nn.Module | None = None):
        self.model, self.optimizer, self.accel, self.device = model, optimizer, accel, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=accel.amp == "fp16")
        net = model if forward is None else forward
        self.whole = WholeStep(model, optimizer, accel, device, net) if accel.compile == "step" else None
        self.compiled = net if accel.compile in ("off", "step") else torch.compile(
            net, mode=None if accel.compile == "default" else accel.compile)
        self.criterion = nn.CrossEntropyLoss()

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of the last step's gradient for each conv and fc weight, in order."""
        if self.whole is not None:
            return self.whole.grad_norms()
        named = [(n, p.grad) for n, p in self.model.named_parameters()
                 if n.endswith("weight") and p.dim() in (2, 4) and p.grad is not None]
        if not named:
            return {}
        norms = torch.stack(torch._foreach_norm([g for _, g in named])).float().cpu().tolist()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        return {n.removesuffix(".weight"): v / scale for (n, _), v in zip(named, norms)}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.whole is not None:
            return self.whole(x, y, lr)
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


def _sgd_group(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """The one SGD parameter group the whole step can apply, or one line saying why not."""
    if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
        raise TrainingError("--compile step applies SGD with one parameter group: use --compile reduce-overhead")
    group = optimizer.param_groups[0]
    if group["dampening"] or group["maximize"] or group["nesterov"]:
        raise TrainingError("--compile step applies SGD without dampening, nesterov or maximize: "
                            "use --compile reduce-overhead")
    if [id(p) for p in group["params"]] != [id(p) for p in model.parameters()]:
        raise TrainingError("--compile step needs the optimizer over all the model's parameters, in order")
    return group


class WholeStep:
    """Forward, backward and SGD (momentum, weight decay) as one compiled function.

    The same arithmetic as ``torch.optim.SGD`` (dampening 0, no nesterov): ``g += wd·p``,
    ``buf = momentum·buf + g`` (``buf`` starts at zero, so the first step's ``buf`` is
    ``g``, as SGD's clone), ``p -= lr·buf``. Parameters, buffers and momentum buffers
    are updated in place at fixed addresses (marked static for CUDA graphs).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, accel: Accel,
                 device: torch.device, forward: nn.Module):
        if forward is not model:
            raise TrainingError("--compile step trains in one process: under torchrun use --compile reduce-overhead")
        if accel.amp == "fp16":
            raise TrainingError("--compile step has no fp16 grad scaler: use --amp bf16 or off")
        self.model, self.optimizer, self.accel, self.device = model, optimizer, accel, device
        self.group = _sgd_group(optimizer, model)
        self.decay = bool(self.group["weight_decay"])  # fixed when traced
        named = list(model.named_parameters())
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.buffer_names = [n for n, _ in model.named_buffers()]
        self.buffers = [b for _, b in model.named_buffers()]
        self.norm_names = [n.removesuffix(".weight") for n, p in named if n.endswith("weight") and p.dim() in (2, 4)]
        self.norm_idx = [i for i, (n, p) in enumerate(named) if n.endswith("weight") and p.dim() in (2, 4)]
        self.hyper = torch.zeros(3, device=device)  # lr, momentum, weight decay
        self._hyper_now: tuple[float, float, float] | None = None
        self.momenta: list[torch.Tensor] = []
        self.adopt_momenta()
        optimizer.register_load_state_dict_post_hook(lambda opt: self.adopt_momenta())
        for t in (*self.params, *self.buffers, *self.momenta, self.hyper):
            torch._dynamo.mark_static_address(t)
        self.last_norms: torch.Tensor | None = None
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.compiled = torch.compile(self.step, mode=mode, dynamic=False)

    def adopt_momenta(self) -> None:
        """Keep one momentum buffer per parameter, at a fixed address, in the optimizer's state
        (a checkpoint's buffers are copied in; a parameter without one starts at zero)."""
        if not self.group["momentum"]:
            return
        old = self.momenta or [None] * len(self.params)
        kept = []
        for p, mine in zip(self.params, old):
            state = self.optimizer.state[p]
            given = state.get("momentum_buffer")
            buf = mine if mine is not None else torch.zeros_like(p, memory_format=torch.preserve_format)
            if given is not buf:
                buf.copy_(given) if given is not None else buf.zero_()
            state["momentum_buffer"] = buf
            kept.append(buf)
        self.momenta = kept

    def grad_norms(self) -> dict[str, float]:
        """The L2 norm of the last step's gradient for each conv and fc weight, in order."""
        if self.last_norms is None:
            return {}
        return dict(zip(self.norm_names, self.last_norms.float().cpu().tolist()))

    def step(self, params: list[torch.Tensor], buffers: list[torch.Tensor], momenta: list[torch.Tensor],
             hyper: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """The whole step on explicit tensors (what `torch.compile` traces): returns the loss,
        the logits and the gradient norms of the conv and fc weights."""
        def loss_of(ps: list[torch.Tensor], bs: list[torch.Tensor]):
            state = {**dict(zip(self.names, ps)), **dict(zip(self.buffer_names, bs))}
            with self.accel.autocast(self.device):
                logits = torch.func.functional_call(self.model, state, (x,))
                loss = F.cross_entropy(logits.float(), y)
            return loss, (loss.detach(), logits.detach())

        grads, (loss, logits) = torch.func.grad(loss_of, has_aux=True)(params, buffers)
        norms = torch.stack(torch._foreach_norm([grads[i] for i in self.norm_idx])) if self.norm_idx else hyper.new_zeros(0)
        lr, momentum, wd = hyper[0], hyper[1], hyper[2]
        if self.decay:
            grads = torch._foreach_add(grads, torch._foreach_mul(params, wd))
        if momenta:
            torch._foreach_mul_(momenta, momentum)
            torch._foreach_add_(momenta, grads)
            grads = momenta
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
        return loss, logits, norms

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.group
        g["lr"] = lr
        now = (float(lr), float(g["momentum"]), float(g["weight_decay"]))
        if now != self._hyper_now:  # one small copy when the schedule moves, none otherwise
            self.hyper.copy_(torch.tensor(now), non_blocking=True)
            self._hyper_now = now
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():  # torch.func.grad differentiates inside; nothing outside needs a graph
            loss, logits, self.last_norms = self.compiled(self.params, self.buffers, self.momenta, self.hyper, x, y)
        return loss, logits
