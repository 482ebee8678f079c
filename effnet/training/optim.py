"""Optimizers (TF-style RMSProp, SGD, AdamW), parameter groups and an EMA of the weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from effnet.weights.serialize import _unwrap


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as TensorFlow computes it (the EfficientNet recipe).

    Differences from ``torch.optim.RMSprop``: epsilon sits inside the square root
    (``g / sqrt(ms + eps)``), the mean square starts at 1 instead of 0, and momentum is applied to
    the lr-scaled step, so changing the lr mid-run does not rescale accumulated momentum.
    """

    def __init__(self, params, lr=0.016, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=0.0):
        if lr <= 0 or eps <= 0 or not 0 <= momentum < 1 or not 0 < alpha < 1:
            raise ValueError(f"invalid RMSpropTF settings: lr={lr} eps={eps} momentum={momentum}")
        super().__init__(
            params,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "momentum": momentum,
                "weight_decay": weight_decay,
            },
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                sq = state["square_avg"]
                sq.mul_(group["alpha"]).addcmul_(grad, grad, value=1 - group["alpha"])
                update = grad / (sq + group["eps"]).sqrt()
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: never on BatchNorm parameters or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        eps = 1e-3 if cfg.opt_eps is None else cfg.opt_eps
        return RMSpropTF(groups, lr=cfg.lr, eps=eps, momentum=cfg.momentum)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        eps = 1e-8 if cfg.opt_eps is None else cfg.opt_eps
        return torch.optim.AdamW(groups, lr=cfg.lr, eps=eps)
    raise ValueError(f"optimizer must be rmsprop, sgd or adamw, got {cfg.optimizer!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a model's weights (buffers are copied as they are).

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` so the average is useful
    in short runs too, as in the TF EfficientNet code.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = _unwrap(model).state_dict()  # DDP / torch.compile wrap the model: same keys
        for name, value in self.module.state_dict().items():
            new = src[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(new.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(new)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
