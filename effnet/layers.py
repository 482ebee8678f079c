"""Building layers: activations, Conv-BN-Act (symmetric or TF "SAME" padding), SE, drop path."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2], x.shape[-1]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((ih + sh - 1) // sh * sh - sh + kh - ih, 0)
        pw = max((iw + sw - 1) // sw * sw - sw + kw - iw, 0)
        if ph > 0 or pw > 0:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


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
    """conv -> BatchNorm -> activation (``act=None`` leaves the output linear)."""

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


class SqueezeExcite(nn.Module):
    """Channel gate: mean-pool -> 1x1 reduce -> act -> 1x1 expand -> sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int, act: str = "silu") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_act(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


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
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
