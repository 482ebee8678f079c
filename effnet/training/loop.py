"""One training epoch and one evaluation pass, as free functions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from effnet.training import distributed as D
from effnet.training.faults import fault_point
from effnet.training.optim import set_lr


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite."""


@dataclass
class EpochState:
    """Running sums of a (possibly resumed) epoch; saved in mid-epoch checkpoints."""

    batches: int = 0  # batches done in this epoch (this process)
    loss_sum: float = 0.0
    images: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepContext:
    device: torch.device
    lr_fn: Callable[[int], float]
    criterion: nn.Module
    mixer: Callable | None = None
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    clip_grad: float | None = None
    ema: object | None = None
    channels_last: bool = False
    # called after each optimizer step with (global_step, epoch_state); returns True to stop now
    after_step: Callable[[int, EpochState], bool] | None = None
    # called after each optimizer step with (global_step, epoch, batch loss, lr): loggers
    on_step: Callable[[int, int, float, float], None] | None = None
    extras: dict = field(default_factory=dict)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    ctx: StepContext,
    *,
    epoch: int,
    global_step: int,
    state: EpochState,
    progress=None,
) -> tuple[int, bool]:
    """Train over ``loader``; returns (global step after the epoch, stopped early by after_step)."""
    model.train()
    t0 = time.perf_counter()
    for images, targets, skipped in loader:
        state.skipped += skipped
        if images is None:
            continue
        fault_point("data")
        images = images.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True)
        if ctx.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if ctx.mixer is not None:
            images, targets = ctx.mixer(images, targets)
        set_lr(optimizer, ctx.lr_fn(global_step))
        with _autocast(ctx.device, ctx.amp_dtype):
            fault_point("forward")
            logits = model(images)
            loss = ctx.criterion(logits.float(), targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(
                f"loss became {value} at epoch {epoch + 1}, step {state.batches + 1}"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler = ctx.scaler if ctx.scaler is not None and ctx.scaler.is_enabled() else None
        fault_point("backward")
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if ctx.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), ctx.clip_grad)
        fault_point("optimizer_step")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ctx.ema is not None:
            ctx.ema.update(model)
            fault_point("ema_update")
        global_step += 1
        n = images.shape[0]
        state.batches += 1
        state.loss_sum += value * n
        state.images += n
        lr = optimizer.param_groups[0]["lr"]
        if progress is not None:
            progress.update(images=n, loss=value, lr=lr)
        if ctx.on_step is not None:
            ctx.on_step(global_step, epoch + 1, value, lr)
        if ctx.after_step is not None:
            state.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            if ctx.after_step(global_step, state):
                return global_step, True
    state.seconds += time.perf_counter() - t0
    return global_step, False


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress=None,
) -> dict:
    """Top-1 / top-5 / loss and the confusion matrix (rows: true class), summed over processes.
    ``progress`` (a ``report.Progress``) is updated after each batch."""
    model.eval()
    k = min(5, num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top-k hits, count
    for images, targets, _ in loader:
        if images is None:
            continue
        images, targets = images.to(device), targets.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            logits = model(images).float()
        sums[0] += F.cross_entropy(logits, targets, reduction="sum")
        topk = logits.topk(k, dim=1).indices
        sums[1] += (topk == targets[:, None]).any(dim=1).sum()
        sums[2] += targets.numel()
        pred = topk[:, 0]
        confusion.index_put_(
            (targets, pred), torch.ones_like(pred, dtype=torch.float64), accumulate=True
        )
        if progress is not None:
            progress.update(images=targets.numel())
    fault_point("eval")
    D.all_sum(confusion)
    D.all_sum(sums)
    n = max(1.0, float(sums[2]))
    correct = float(confusion.diag().sum())
    return {
        "top1": 100.0 * correct / n,
        "top5": 100.0 * float(sums[1]) / n,
        "loss": float(sums[0]) / n,
        "count": int(sums[2]),
        "confusion": confusion.cpu().long(),
    }
