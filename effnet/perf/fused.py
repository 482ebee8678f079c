"""Memory-lean activations for training: SiLU and BatchNorm+SiLU as custom autograd Functions.

Autograd keeps every intermediate a backward formula needs. In a conv -> BN -> SiLU unit that is
the conv output (for BN), the BN output (for SiLU) and the SiLU output (for the next conv): three
activation maps. ``bn_silu`` keeps only the conv output and the per-channel batch statistics and
recomputes the BN output in backward (one cheap elementwise pass), so one map per unit is never
stored. Gradients come from the same ATen kernels autograd uses, so they match the plain modules.

Both fall back to the plain ops while exporting (ONNX, TorchScript, torch.export), where a custom
Function would not translate into standard operators.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_fast_paths = True


@contextmanager
def plain_ops() -> Iterator[None]:
    """Run effnet models with their fast paths off: no BN folding, fused BN+SiLU, in-place ops
    or automatic channels-last. The reference behaviour for tests and before/after benchmarks."""
    global _fast_paths
    before, _fast_paths = _fast_paths, False
    try:
        yield
    finally:
        _fast_paths = before


def fast_ops() -> bool:
    """Whether the fast paths may run now (not switched off, not exporting)."""
    return _fast_paths and not exporting()


def exporting() -> bool:
    """True while the model is being traced or scripted for export (plain ops only there)."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_exporting())


class _SiLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1.0 + x * (1.0 - s))


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU that saves only its input for backward; in-place when no gradient is recorded."""
    if not fast_ops():
        return F.silu(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        # Without autograd nobody else holds this intermediate, so overwrite it (no allocation).
        return F.silu(x, inplace=True)
    return _SiLUFn.apply(x)


class MemoryEfficientSiLU(nn.Module):
    """Drop-in ``nn.SiLU``: same values and gradients, stores only the input, exports as SiLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silu(x)


class _BNSiLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        y, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        return F.silu(y, inplace=True)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = (weight * invstd).reshape(shape)
        y = (x - mean.reshape(shape)) * scale + bias.reshape(shape)
        s = torch.sigmoid(y)
        grad_y = grad * s * (1.0 + y * (1.0 - s))
        del y, s
        mask = list(ctx.needs_input_grad[:3])
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return dx, dw, db, None, None, None, None


def bn_silu_eligible(bn: nn.BatchNorm2d, x: torch.Tensor) -> bool:
    """Whether ``bn_silu`` reproduces ``SiLU(bn(x))`` exactly for this module and input."""
    return (
        bn.training
        and bn.track_running_stats
        and bn.affine
        and bn.running_mean is not None
        and torch.is_grad_enabled()
        and fast_ops()
        # Under torch.compile the plain ops fuse and recompute on their own.
        and not torch.compiler.is_compiling()
        and x.dim() == 4
    )


def bn_silu(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``SiLU(bn(x))`` in training mode, storing only ``x`` and the batch statistics."""
    # nn.BatchNorm's own bookkeeping: count batches, momentum None means a cumulative average.
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:
        momentum = 1.0 / float(bn.num_batches_tracked)
    return _BNSiLUFn.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)
