"""effnet's fused training kernels: memory-lean SiLU, BatchNorm+SiLU and the SE channel scale
as custom autograd Functions, plus the activation-recompute recorder.

Autograd keeps every intermediate a backward formula needs. In a conv -> BN -> SiLU unit that is
the conv output (for BN), the BN output (for SiLU) and the SiLU output (for the next conv): three
activation maps. ``bn_silu`` keeps only the conv output and the per-channel batch statistics,
recomputes the BN output in backward (one cheap elementwise pass) and writes the SiLU and BN
gradients over that buffer. Inside ``recompute_activations`` the consumers of a BN+SiLU output
(the next conv, SE) store a recipe instead of the map, rebuilt in backward to float rounding.
Forward and backward run on the ATen batch-norm kernels autograd itself uses, so gradients match
the plain modules.

Nothing here is used by the models ``create_model`` returns: they are plain ``nn`` modules. The
kernels run only inside the modules that ``effnet.accelerate`` installs (``effnet/fast.py``),
and only when ``fast_ops()`` says the call is an ordinary eager one. Each backward checks for
``create_graph=True`` (grad mode on inside backward) and then differentiates the plain formula
instead, so double backward stays correct.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

_fast_paths = True


@contextmanager
def plain_ops() -> Iterator[None]:
    """Switch the fast modules that ``effnet.accelerate`` installed back to their plain ``nn``
    behaviour for the duration (the reference for tests and before/after benchmarks)."""
    global _fast_paths
    before, _fast_paths = _fast_paths, False
    try:
        yield
    finally:
        _fast_paths = before


def fast_ops() -> bool:
    """Whether a fast path may run now: not switched off, and an ordinary eager call (not a
    trace, script, export, compile, FX trace or torch.func transform)."""
    return _fast_paths and not exporting() and not transformed()


def exporting() -> bool:
    """True while the model is being traced, scripted, exported or compiled."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or is_fx_symbolic_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    return torch.compiler.is_compiling()


def transformed() -> bool:
    """True under torch.func transforms (vmap, grad, jvp) or forward-mode AD, which need
    autograd formulas the fused Functions do not provide."""
    return (
        torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0
    )


class _SiLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain formula
            s = torch.sigmoid(x)
            return grad * s * (1 + x * (1 - s))
        return _silu_grad(x.clone(), grad)


def _silu_grad(y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """grad * SiLU'(y), written over y (a buffer of our own) by ATen's fused kernel: one pass, and
    no full-size temporary in the backward of the largest layer, which sets the training peak."""
    return torch.ops.aten.silu_backward.grad_input(grad, y, grad_input=y)


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU that saves only its input for backward; in-place when no gradient is recorded."""
    if not fast_ops():
        return F.silu(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        # Without autograd nobody else holds this intermediate, so overwrite it (no allocation).
        return F.silu(x, inplace=True)
    return _SiLUFn.apply(x)


class MemoryEfficientSiLU(nn.Module):
    """Drop-in ``nn.SiLU``: same values and gradients, stores only the input, exports as SiLU.
    It overwrites its input when no gradient is recorded, so use it only where nothing else
    reads that input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silu(x)


class _BNSiLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        # ATen's own training BN: batch statistics, the running-average update (unbiased
        # variance, as nn.BatchNorm) and the normalized output in its vectorized kernels.
        out, mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        out = F.silu(out, inplace=True)
        shape = (1, -1, 1, 1)
        scale = (weight * invstd).reshape(shape)
        shift = (bias - mean * scale.flatten()).reshape(shape)
        ctx.save_for_backward(x, weight, bias, mean, invstd, scale, shift)
        ctx.eps = eps
        if _recipes is not None:
            # Whoever saves ``out`` for backward (the next conv, SE) may store this recipe
            # instead: ``x`` is kept here anyway, so the activation itself is never stored.
            _recipes[out.data_ptr()] = (weakref.ref(out), out._version, x, scale, shift)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd, scale, shift = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain formula
            grads = _bn_silu_grads_differentiable(ctx, grad, x, weight, bias)
        else:
            grads = _bn_silu_grads(ctx, grad, x, weight, mean, invstd, scale, shift)
        grads = [
            g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3], strict=True)
        ]
        return (*grads, None, None, None, None)


def _bn_silu_grads(ctx, grad, x, weight, mean, invstd, scale, shift):
    grad_y = _silu_grad(_affine(x, scale, shift), grad)
    # The input gradient overwrites grad_y (our own buffer): ATen reduces grad_y first and then
    # writes each element after reading it, so this is exact and saves an allocation.
    dw, db = torch.empty_like(weight), torch.empty_like(weight)
    return torch.ops.aten.native_batch_norm_backward.out(
        grad_y,
        x,
        weight,
        None,
        None,
        mean,
        invstd,
        True,
        ctx.eps,
        [True, True, True],
        out0=grad_y,
        out1=dw,
        out2=db,
    )


def _bn_silu_grads_differentiable(ctx, grad, x, weight, bias):
    inputs = (x, weight, bias)
    with torch.enable_grad():
        y = F.silu(F.batch_norm(x, None, None, weight, bias, True, 0.0, ctx.eps))
    return torch.autograd.grad(y, inputs, grad, create_graph=True, allow_unused=True)


def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    # The BN output rebuilt from x: equals ATen's forward kernel to float rounding (tested
    # against the plain modules in tests/test_perf.py).
    if x.dtype == scale.dtype:
        return torch.addcmul(shift, x, scale)
    # Mixed precision (bf16 x, fp32 scale and shift): ATen's eval BN kernel with mean 0, var 1,
    # eps 0 computes x * scale + shift in fp32 and rounds once to x's dtype, as the training
    # forward did (the same values), without a full-size fp32 temporary.
    zeros = torch.zeros_like(scale.flatten())
    ones = torch.ones_like(zeros)
    return torch.ops.aten._native_batch_norm_legit_no_training(
        x, scale.flatten(), shift.flatten(), zeros, ones, 0.0, 0.0
    )[0]


# data_ptr -> (weakref to the BN+SiLU output, its version, x, scale, shift); only while a
# ``recompute_activations`` block records a training forward.
_recipes: dict[int, tuple] | None = None


class _Recompute:
    __slots__ = ("scale", "shift", "x")

    def __init__(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> None:
        self.x, self.scale, self.shift = x, scale, shift


def _pack(t: torch.Tensor):
    entry = _recipes.get(t.data_ptr()) if _recipes is not None else None
    # Same tensor object, not modified since: a freed activation's address can be reused.
    if entry is not None and entry[0]() is t and entry[1] == t._version:
        return _Recompute(entry[2], entry[3], entry[4])
    return t


def _unpack(obj):
    if isinstance(obj, _Recompute):
        return F.silu(_affine(obj.x, obj.scale, obj.shift), inplace=True)
    return obj


@contextmanager
def recompute_activations() -> Iterator[None]:
    """Record a training forward so that BN+SiLU outputs saved by their consumers are rebuilt
    from the BN input in backward instead of being stored (one elementwise pass each)."""
    global _recipes
    if not fast_ops():
        yield
        return
    outer, _recipes = _recipes, {}
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _recipes = outer


def bn_silu_eligible(bn: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``bn_silu`` reproduces ``SiLU(bn(x))`` exactly for this module and input."""
    return (
        type(bn) is nn.BatchNorm2d
        and bn.training
        and bn.track_running_stats
        and bn.affine
        and bn.running_mean is not None
        and torch.is_grad_enabled()
        and fast_ops()
        and x.dim() == 4
        and not x.is_meta
        and _precision_ok(x, bn)
    )


def _precision_ok(x: torch.Tensor, bn: nn.BatchNorm2d) -> bool:
    """The input and the parameters share a dtype, or it is CPU bf16 autocast's mixed precision
    (a bf16 conv output, fp32 BN parameters and running statistics), which ATen's BN kernels
    take as the plain ``nn.BatchNorm2d`` does: batch statistics accumulated in fp32, the
    output rounded to bf16 once."""
    params = bn.weight.dtype
    if x.dtype == params:
        return True
    return (
        x.device.type == "cpu"
        and x.dtype == torch.bfloat16
        and params == torch.float32
        and bn.running_mean.dtype == torch.float32
    )


def bn_silu(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``SiLU(bn(x))`` in training mode, storing only ``x`` and the batch statistics."""
    if x.numel() // x.shape[1] <= 1:
        # nn.BatchNorm's own check, made before anything is written: one value per channel
        # would put NaN into the running variance.
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.size()}"
        )
    # nn.BatchNorm's own bookkeeping: count batches, momentum None means a cumulative average.
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:
        momentum = 1.0 / float(bn.num_batches_tracked)
    return _BNSiLUFn.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps)


# A gate below this is rebuilt too coarsely from ``x * gate`` (and 0 not at all): ``x`` is kept.
_TINY_GATE = 1e-20


class _ChannelScaleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor, keep_output: bool) -> torch.Tensor:
        out = x * gate
        # In fp32 the gate's gradient sum_hw(grad * x) is sum_hw(grad * out) / gate, since the
        # gate is one number per (n, c). Saving ``out`` (which the next conv saves anyway)
        # instead of ``x`` lets ``x`` be freed: one activation map less per SE block. Only when
        # the caller knows that nothing changes ``out`` in place (``keep_output``), and only on
        # the CPU: the gate check reads a value back (a GPU would sync once per block).
        ctx.from_out = (
            keep_output
            and x.dtype == gate.dtype == out.dtype == torch.float32
            and x.device.type == "cpu"
            and bool(gate.detach().abs().amin() > _TINY_GATE)
        )
        ctx.save_for_backward(out if ctx.from_out else x, gate)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved, gate = ctx.saved_tensors
        need_x, need_gate, _ = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the plain, differentiable formula
            x = saved / gate if ctx.from_out else saved
            dgate = (grad * x).sum((2, 3), keepdim=True) if need_gate else None
            return (grad * gate if need_x else None), dgate, None
        if not need_gate:
            return grad * gate, None, None
        # One full-size buffer instead of autograd's two: grad * x (or grad * out) is reduced
        # to the gate's gradient, then the same buffer receives the input gradient.
        buf = torch.mul(grad, saved)
        dgate = buf.sum((2, 3), keepdim=True, dtype=gate.dtype)
        if ctx.from_out:
            dgate = dgate.div_(gate)
        dx = torch.mul(grad, gate, out=buf) if need_x else None
        return dx, dgate, None


def channel_scale(x: torch.Tensor, gate: torch.Tensor, keep_output: bool = False) -> torch.Tensor:
    """``x * gate`` for a (N, C, 1, 1) gate, with a backward that allocates one map, not two.
    With ``keep_output`` (the caller vouches that nothing modifies the output in place: effnet's
    MBConv when a plain conv reads it), in fp32 on the CPU it keeps only the output (which that
    conv saves anyway), not the input."""
    return _ChannelScaleFn.apply(x, gate, keep_output)
