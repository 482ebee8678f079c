"""Building layers: activations, Conv-BN-Act (symmetric or TF "SAME" padding), SE, drop path."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# Every activation here follows a conv or BN whose output nothing else reads, so the ReLUs may
# work in place (their backward needs only the result, as in torchvision). SiLU stays out of
# place: autograd would save a copy of its input anyway.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
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


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max(
        (size + stride - 1) // stride * stride - stride + (kernel - 1) * dilation + 1 - size, 0
    )


@torch.fx.wrap
def pad_same(
    x: torch.Tensor, kernel: list[int], stride: list[int], dilation: list[int]
) -> torch.Tensor:
    """Pad ``x`` as TensorFlow's "SAME" does: output ceil(n / s), any odd remainder goes after.
    A leaf in FX graphs (the pad depends on the input size); scriptable for TorchScript."""
    ph = _same_pad(x.shape[-2], kernel[0], stride[0], dilation[0])
    pw = _same_pad(x.shape[-1], kernel[1], stride[1], dilation[1])
    if ph > 0 or pw > 0:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return x


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output ceil(n / s), any odd remainder goes after.

    Only strided convs differ from symmetric padding, so those pad at run time (the pad depends on
    the input size); the rest use the equivalent static padding.
    """

    def _conv_forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
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
    """conv -> BatchNorm -> activation (``act=None`` leaves the output linear), three ordinary
    modules run in a row: swap any of them and the swap runs. ``effnet.accelerate`` installs the
    fused version of this unit for effnet's own training and inference entry points."""

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


class SqueezeExcite(nn.Module):
    """Channel gate: mean-pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int, act: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_act(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d(x, 1) is ATen's mean over H, W, and exports as GlobalAveragePool,
        # which ONNX Runtime keeps in its blocked layout (ReduceMean forces a round trip).
        return torch.sigmoid(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample, rescale survivors by 1 / keep."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, 1, 1, ...) mask of 0 and 1 / keep, one draw per sample."""
        keep = 1.0 - self.p
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        return x.new_empty(shape).bernoulli_(keep).div_(keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        # Scale the (B, 1, 1, 1) mask, not the activation: one full-size product instead of two.
        return x * self.mask(x)

    def add(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``self(x) + skip`` in one pass; autograd keeps only the (B, 1, 1, 1) mask."""
        if self.p == 0.0 or not self.training:
            return x + skip
        return torch.addcmul(skip, x, self.mask(x))

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
