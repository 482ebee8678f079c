"""Synchronised BatchNorm for multi-process training, on CPU processes (gloo) as well as GPUs.

torch's ``nn.SyncBatchNorm`` has kernels for CUDA tensors only. ``SyncBatchNorm2d`` is an
``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) whose training forward
normalises with the statistics of the global batch, every process's images together: the
per-channel sums and counts are all-reduced, then the sums of squared deviations from the global
mean. Both all-reduces are differentiable (their backward all-reduces the gradients of the sums),
so the input and parameter gradients are those of BatchNorm on the concatenated batch, and the
running statistics get the unbiased global variance, exactly as ``nn.BatchNorm2d`` would on the
concatenated batch. In eval mode, or without a process group of more than one process, it is
plain ``nn.BatchNorm2d``.

``convert_sync_batchnorm(model)`` picks torch's module for a model on CUDA and this one elsewhere.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllSum(torch.autograd.Function):
    """``all_reduce(SUM)`` that autograd can see through: the gradient is all-reduced too
    (each process's loss depends on every process's share of the sum)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """The sum of ``t`` over the processes of ``group`` (default: all), differentiably."""
    return _AllSum.apply(t, group)


def group_size(group=None) -> int:
    """Processes in ``group`` (1 when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch."""

    process_group = None  # None: all processes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or group_size(self.process_group) <= 1:
            return super().forward(x)
        return self.global_batch_norm(x)

    def global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward on the statistics of all processes' batches together."""
        self._check_input_dim(x)
        c, dims = x.shape[1], (0, 2, 3)
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        # Sums accumulate in float64: the count is exact and the global mean loses nothing.
        n = torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)
        sums = all_sum(torch.cat([xf.sum(dims, dtype=torch.float64), n]), self.process_group)
        count = sums[-1]
        if float(count.detach()) <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()}"
            )
        mean = sums[:c] / count
        centred = xf - mean.to(xf.dtype).view(1, c, 1, 1)
        var = all_sum(centred.square().sum(dims, dtype=torch.float64), self.process_group) / count
        self._update_running_stats(mean, var, count)
        y = centred * torch.rsqrt(var + self.eps).to(xf.dtype).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean, var, count) -> None:
        """nn.BatchNorm's bookkeeping (momentum None: a cumulative average) on global stats."""
        if not self.track_running_stats or self.running_mean is None:
            return
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / (count - 1))
        self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """Make every BatchNorm2d of ``model`` synchronise its statistics across processes.

    A model on CUDA gets torch's ``nn.SyncBatchNorm``; a model elsewhere (CPU processes under
    gloo) gets ``SyncBatchNorm2d``, switched in place. Parameters and buffers stay the same
    tensors (an optimizer built before keeps working) and state-dict keys are unchanged.
    Returns the model (a new root object only if ``model`` itself is a BatchNorm on CUDA).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"convert_sync_batchnorm needs an nn.Module, got {type(model).__name__}")
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:  # a subclass keeps its own forward
            m.__class__ = SyncBatchNorm2d
            if process_group is not None:
                m.process_group = process_group
    return model
