"""Building layers: activations, Conv-BN-Act (symmetric or TF "SAME" padding), SE, drop path."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from effnet.perf.fused import (
    MemoryEfficientSiLU,
    bn_silu,
    bn_silu_eligible,
    exporting,
    fast_ops,
)

# Every activation here follows a conv or BN whose output nothing else reads, so the ReLUs may
# work in place (their backward needs only the result); SiLU is the memory-lean variant.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": MemoryEfficientSiLU,
    "swish": MemoryEfficientSiLU,
    "relu": partial(nn.ReLU, inplace=True),
    "relu6": partial(nn.ReLU6, inplace=True),
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
}

PADDINGS = ("symmetric", "same")


def make_act(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output ceil(n / s), any odd remainder goes after.

    Only strided convs differ from symmetric padding, so those pad at run time (the pad depends on
    the input size); the rest use the equivalent static padding.
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((ih + sh - 1) // sh * sh - sh + kh - ih, 0)
        pw = max((iw + sw - 1) // sw * sw - sw + kw - iw, 0)
        if ph > 0 or pw > 0:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


def make_conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if padding == "same" and stride > 1:
        return Conv2dSame(in_ch, out_ch, kernel, stride, padding=0, groups=groups, bias=bias)
    return nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> activation (``act=None`` leaves the output linear).

    Two fast paths give the same values as the three modules in a row: in eval mode without
    autograd the BN is folded into the conv weights (cached until a weight or statistic changes);
    in training, BN + SiLU run as one memory-lean autograd Function (``effnet.perf.fused``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "silu",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = make_conv(in_ch, out_ch, kernel, stride, groups, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps, momentum=bn_momentum)
        self.act = make_act(act) if act else nn.Identity()
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.bn, nn.BatchNorm2d):  # already folded (optimize_for_inference)
            return self.act(self.conv(x))
        if not self.training and not torch.is_grad_enabled() and fast_ops() and not self._hooked():
            weight, bias = self.folded_weights()
            return self.act(self.conv._conv_forward(x, weight, bias))
        x = self.conv(x)
        if isinstance(self.act, MemoryEfficientSiLU) and bn_silu_eligible(self.bn, x):
            return bn_silu(x, self.bn)
        return self.act(self.bn(x))

    def _hooked(self) -> bool:
        """Hooks on the conv or BN (MAC counters, feature taps) must see those modules run."""
        return hooked(self.conv, self.bn, self.act)

    def folded_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv's weight and bias with the eval-mode BN folded in (see ``fold_bn``)."""
        conv, bn = self.conv, self.bn
        tensors = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        # In-place updates (load_state_dict, optimizer steps) bump _version; .to() swaps storage.
        key = (
            *(
                (t.data_ptr(), t._version, t.device, t.dtype) if t is not None else None
                for t in tensors
            ),
            bn.eps,
        )
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                self._folded = (key, *fold_bn(conv, bn))
        return self._folded[1], self._folded[2]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one conv equal to ``bn(conv(x))`` with BN in eval mode."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = -bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    return weight, bias


def hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook (global, or on one of ``modules``) may see or hold activations:
    fast paths that skip a module or overwrite a buffer step aside then."""
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks:
        return True
    return any(mod._forward_hooks or mod._forward_pre_hooks for mod in modules)


class SqueezeExcite(nn.Module):
    """Channel gate: mean-pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int, act: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_act(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Exported graphs get GlobalAveragePool: ONNX Runtime keeps it in its blocked (NCHWc)
        # layout, while ReduceMean forces a layout round trip around every SE.
        s = F.adaptive_avg_pool2d(x, 1) if exporting() else x.mean((2, 3), keepdim=True)
        gate = torch.sigmoid(self.expand(self.act(self.reduce(s))))
        if torch.is_grad_enabled() and fast_ops() and not torch.compiler.is_compiling():
            return channel_scale(x, gate)
        return x * gate


class _ChannelScaleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, gate)
        return x * gate

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, gate = ctx.saved_tensors
        need_x, need_gate = ctx.needs_input_grad
        if not need_gate:
            return grad * gate, None
        # One full-size buffer instead of autograd's two: grad * x is reduced to the gate's
        # gradient, then the same buffer receives the input gradient.
        buf = torch.mul(grad, x)
        dgate = buf.sum((2, 3), keepdim=True, dtype=gate.dtype)
        dx = torch.mul(grad, gate, out=buf) if need_x else None
        return dx, dgate


def channel_scale(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x * gate`` for a (N, C, 1, 1) gate, with a backward that allocates one map, not two."""
    return _ChannelScaleFn.apply(x, gate)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, rescale survivors by 1 / keep."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        # Scale the (B, 1, 1, 1) mask, not the activation: one full-size product instead of two.
        return x * mask.div_(keep)

    def add(self, x: torch.Tensor, skip: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """``self(x) + skip`` in one pass: the residual add of a block whose branch is ``x``.
        ``in_place`` lets a caller that owns ``x`` (nobody else reads it) reuse its buffer."""
        if self.p == 0.0 or not self.training:
            if in_place and fast_ops() and not (torch.is_grad_enabled() and x.requires_grad):
                return x.add_(skip)
            return x + skip
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        # skip + x * mask / keep; autograd keeps only the (B, 1, 1, 1) mask for backward.
        return torch.addcmul(skip, x, mask.div_(keep))

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
