"""MBConv (arXiv:1905.11946 / MobileNetV2) and Fused-MBConv (arXiv:2104.00298, Fig. 2)."""

from __future__ import annotations

import torch
from torch import nn

from effnet.layers import ConvBNAct, DropPath, SqueezeExcite
from effnet.scaling import BlockPlan

SHORTCUTS = ("identity", "projection")


class _Residual(nn.Module):
    """Shared residual logic: identity add when shapes allow, optional 1x1 projection otherwise."""

    def _init_shortcut(self, p: BlockPlan, shortcut: str, bn: dict, padding: str) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.has_skip = p.has_identity or shortcut == "projection"
        self.shortcut = (
            ConvBNAct(p.in_ch, p.out_ch, 1, p.stride, act=None, padding=padding, **bn)
            if self.has_skip and not p.has_identity
            else nn.Identity()
        )
        self.drop_path = DropPath(p.drop_path)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.has_skip:
            out = self.drop_path(out) + self.shortcut(x)
        return out


class MBConv(_Residual):
    """1x1 expand -> kxk depthwise -> SE -> 1x1 linear projection (+ residual)."""

    def __init__(
        self,
        p: BlockPlan,
        act: str = "silu",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        padding: str = "symmetric",
        shortcut: str = "identity",
    ) -> None:
        super().__init__()
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.expand = (
            ConvBNAct(p.in_ch, p.mid_ch, 1, act=act, **bn) if p.mid_ch != p.in_ch else nn.Identity()
        )
        self.dw = ConvBNAct(
            p.mid_ch, p.mid_ch, p.kernel, p.stride, groups=p.mid_ch, act=act, padding=padding, **bn
        )
        self.se = SqueezeExcite(p.mid_ch, p.se_ch, act) if p.se_ch else nn.Identity()
        self.project = ConvBNAct(p.mid_ch, p.out_ch, 1, act=None, **bn)
        self._init_shortcut(p, shortcut, bn, padding)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(x))))


class FusedMBConv(_Residual):
    """kxk full conv (expand + spatial) -> SE -> 1x1 projection; e=1: one conv + act."""

    def __init__(
        self,
        p: BlockPlan,
        act: str = "silu",
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.01,
        padding: str = "symmetric",
        shortcut: str = "identity",
    ) -> None:
        super().__init__()
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        single = p.mid_ch == p.in_ch
        # e=1 has no projection, so the one conv keeps its activation (automl, torchvision).
        conv_out = p.out_ch if single else p.mid_ch
        self.conv = ConvBNAct(p.in_ch, conv_out, p.kernel, p.stride, act=act, padding=padding, **bn)
        self.se = SqueezeExcite(conv_out, p.se_ch, act) if p.se_ch else nn.Identity()
        self.project = nn.Identity() if single else ConvBNAct(p.mid_ch, p.out_ch, 1, act=None, **bn)
        self._init_shortcut(p, shortcut, bn, padding)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.conv(x)))


BLOCKS: dict[str, type[_Residual]] = {"mbconv": MBConv, "fused": FusedMBConv}
