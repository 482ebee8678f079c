"""The non-EfficientNet baselines of the paper's Table 3 as staged specs, with a MAC/param counter.

MobileNetV1 (arXiv:1704.04861 Table 1), MobileNetV2 (arXiv:1801.04381 Table 2) and ResNet-50
(arXiv:1512.03385 Table 1, "v1.5": the stride sits on the 3x3 conv, as in torchvision) are written
as data. ``baseline_plan`` scales one by (depth, width) with the same rules EfficientNet uses
(repeats ceil(d * r) per stage, channels rounded to the spec's divisor); ``count`` gives exact
conv + linear MACs and parameters analytically; ``build`` makes an ``nn.Module`` from the same
plan, so the counter can be checked against torchvision's models and a hook-based count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from effnet.scaling import round_channels

BaselineBlock = Literal["dwsep", "ir", "bottleneck"]


@dataclass(frozen=True, slots=True)
class Stage:
    """``r`` identical blocks with ``c`` output channels; the stride applies to the first only.

    ``e`` is the expansion ratio of an inverted residual, or the bottleneck reduction of a ResNet
    block (mid channels = c / e).
    """

    block: BaselineBlock
    r: int
    c: int
    s: int = 1
    e: int = 1
    k: int = 3

    def __post_init__(self) -> None:
        if self.block not in ("dwsep", "ir", "bottleneck"):
            raise ValueError(f"block must be 'dwsep', 'ir' or 'bottleneck', got {self.block!r}")
        if self.r < 1 or self.c < 1 or self.e < 1:
            raise ValueError(
                f"repeats, channels and e must be >= 1, got {self.r}, {self.c}, {self.e}"
            )
        if self.s not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.s}")


@dataclass(frozen=True, slots=True)
class Baseline:
    """A staged network: stem conv (+ optional max-pool), stages, optional 1x1 head conv, FC."""

    name: str
    stages: tuple[Stage, ...]
    stem_ch: int = 32
    stem_k: int = 3
    stem_pool: bool = False  # ResNet: 3x3 max-pool, stride 2, after the stem
    head_ch: int = 0  # 0: no head conv, the last stage feeds the pool
    head_grows_only: bool = False  # MobileNetV2: head = 1280 * max(1, w)
    divisor: int = 1  # channel rounding (MobileNetV2 rounds to 8; V1 and ResNet truncate)
    act: str = "relu"
    resolution: int = 224
    num_classes: int = 1000


MOBILENETV1 = Baseline(
    name="mobilenetv1",
    stages=(
        Stage("dwsep", r=1, c=64, s=1),
        Stage("dwsep", r=2, c=128, s=2),
        Stage("dwsep", r=2, c=256, s=2),
        Stage("dwsep", r=6, c=512, s=2),
        Stage("dwsep", r=2, c=1024, s=2),
    ),
    stem_ch=32,
)

MOBILENETV2 = Baseline(
    name="mobilenetv2",
    stages=(
        Stage("ir", r=1, c=16, s=1, e=1),
        Stage("ir", r=2, c=24, s=2, e=6),
        Stage("ir", r=3, c=32, s=2, e=6),
        Stage("ir", r=4, c=64, s=2, e=6),
        Stage("ir", r=3, c=96, s=1, e=6),
        Stage("ir", r=3, c=160, s=2, e=6),
        Stage("ir", r=1, c=320, s=1, e=6),
    ),
    stem_ch=32,
    head_ch=1280,
    head_grows_only=True,
    divisor=8,
    act="relu6",
)

RESNET50 = Baseline(
    name="resnet50",
    stages=(
        Stage("bottleneck", r=3, c=256, s=1, e=4),
        Stage("bottleneck", r=4, c=512, s=2, e=4),
        Stage("bottleneck", r=6, c=1024, s=2, e=4),
        Stage("bottleneck", r=3, c=2048, s=2, e=4),
    ),
    stem_ch=64,
    stem_k=7,
    stem_pool=True,
)

BASELINES: dict[str, Baseline] = {b.name: b for b in (MOBILENETV1, MOBILENETV2, RESNET50)}


@dataclass(frozen=True, slots=True)
class BaselineBlockPlan:
    kind: BaselineBlock
    stage: int
    in_ch: int
    mid_ch: int
    out_ch: int
    kernel: int
    stride: int


@dataclass(frozen=True, slots=True)
class BaselinePlan:
    name: str
    stem_ch: int
    stem_k: int
    stem_pool: bool
    blocks: tuple[BaselineBlockPlan, ...]
    head_ch: int
    act: str
    num_classes: int

    @property
    def features(self) -> int:
        return self.head_ch or self.blocks[-1].out_ch


def _round(c: float, divisor: int) -> int:
    if divisor <= 1:
        return max(1, int(c))
    return round_channels(c, divisor=divisor)  # MobileNetV2's make_divisible is the same rule


def baseline_plan(base: Baseline, depth: float = 1.0, width: float = 1.0) -> BaselinePlan:
    """Scale ``base``: repeats ceil(depth * r) per stage, every channel count times ``width``."""
    for label, v in (("depth", depth), ("width", width)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"{label} multiplier must be a finite number > 0, got {v}")

    def ch(c: int) -> int:
        return _round(c * width, base.divisor)

    stem = ch(base.stem_ch)
    blocks = []
    in_ch = stem
    for si, st in enumerate(base.stages):
        out = ch(st.c)
        for j in range(max(1, math.ceil(depth * st.r - 1e-9))):
            if st.block == "ir":
                mid = round(in_ch * st.e)
            elif st.block == "bottleneck":
                mid = out // st.e
            else:
                mid = in_ch
            blocks.append(
                BaselineBlockPlan(st.block, si, in_ch, mid, out, st.k, st.s if j == 0 else 1)
            )
            in_ch = out
    head = 0
    if base.head_ch:
        head = _round(base.head_ch * (max(1.0, width) if base.head_grows_only else width), 8)
    return BaselinePlan(
        base.name,
        stem,
        base.stem_k,
        base.stem_pool,
        tuple(blocks),
        head,
        base.act,
        base.num_classes,
    )


def _out(n: int, s: int) -> int:
    return (n + s - 1) // s


def _block_counts(b: BaselineBlockPlan, h: int, w: int) -> tuple[int, int, int, int]:
    """(macs, params, out_h, out_w) of one block; BN contributes 2 params per channel."""
    oh, ow = _out(h, b.stride), _out(w, b.stride)
    k2 = b.kernel * b.kernel
    if b.kind == "dwsep":
        macs = oh * ow * b.in_ch * k2 + oh * ow * b.in_ch * b.out_ch
        params = b.in_ch * k2 + b.in_ch * b.out_ch + 2 * (b.in_ch + b.out_ch)
    elif b.kind == "ir":
        expand = b.mid_ch != b.in_ch
        macs = h * w * b.in_ch * b.mid_ch if expand else 0
        params = b.in_ch * b.mid_ch + 2 * b.mid_ch if expand else 0
        macs += oh * ow * b.mid_ch * k2 + oh * ow * b.mid_ch * b.out_ch
        params += b.mid_ch * k2 + 2 * b.mid_ch + b.mid_ch * b.out_ch + 2 * b.out_ch
    else:
        macs = h * w * b.in_ch * b.mid_ch + oh * ow * b.mid_ch * (b.mid_ch * k2 + b.out_ch)
        params = b.in_ch * b.mid_ch + b.mid_ch * b.mid_ch * k2 + b.mid_ch * b.out_ch
        params += 2 * (2 * b.mid_ch + b.out_ch)
        if b.stride != 1 or b.in_ch != b.out_ch:
            macs += oh * ow * b.in_ch * b.out_ch
            params += b.in_ch * b.out_ch + 2 * b.out_ch
    return macs, params, oh, ow


def count(p: BaselinePlan, image_size: int, in_chans: int = 3) -> dict:
    """Conv + linear MACs and parameters of ``p`` at ``image_size``, in total and per part."""
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size}")
    h = w = _out(image_size, 2)
    parts = {
        "stem": {
            "macs": h * w * in_chans * p.stem_ch * p.stem_k**2,
            "params": in_chans * p.stem_ch * p.stem_k**2 + 2 * p.stem_ch,
        }
    }
    if p.stem_pool:
        h, w = _out(h, 2), _out(w, 2)
    for b in p.blocks:
        macs, params, h, w = _block_counts(b, h, w)
        part = parts.setdefault(f"stages.{b.stage}", {"macs": 0, "params": 0})
        part["macs"] += macs
        part["params"] += params
    if p.head_ch:
        last = p.blocks[-1].out_ch
        parts["head"] = {
            "macs": h * w * last * p.head_ch,
            "params": last * p.head_ch + 2 * p.head_ch,
        }
    parts["classifier"] = {
        "macs": p.features * p.num_classes,
        "params": p.features * p.num_classes + p.num_classes,
    }
    return {
        "macs": sum(v["macs"] for v in parts.values()),
        "params": sum(v["params"] for v in parts.values()),
        "parts": parts,
    }


# --- a plain PyTorch build of a plan (for cross-checks and experiments) ----------------------


def _act(name: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


def _cba(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: str | None = "relu"):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, _act(act)) if act else nn.Sequential(*layers)


class _Block(nn.Module):
    def __init__(self, b: BaselineBlockPlan, act: str) -> None:
        super().__init__()
        self.kind = b.kind
        self.shortcut: nn.Module | None = None
        if b.kind == "dwsep":
            self.body = nn.Sequential(
                _cba(b.in_ch, b.in_ch, b.kernel, b.stride, b.in_ch, act),
                _cba(b.in_ch, b.out_ch, 1, act=act),
            )
        elif b.kind == "ir":
            layers = [_cba(b.in_ch, b.mid_ch, 1, act=act)] if b.mid_ch != b.in_ch else []
            layers += [
                _cba(b.mid_ch, b.mid_ch, b.kernel, b.stride, b.mid_ch, act),
                _cba(b.mid_ch, b.out_ch, 1, act=None),  # linear bottleneck
            ]
            self.body = nn.Sequential(*layers)
            self.residual = b.stride == 1 and b.in_ch == b.out_ch
        else:
            self.body = nn.Sequential(
                _cba(b.in_ch, b.mid_ch, 1, act=act),
                _cba(b.mid_ch, b.mid_ch, b.kernel, b.stride, act=act),
                _cba(b.mid_ch, b.out_ch, 1, act=None),
            )
            if b.stride != 1 or b.in_ch != b.out_ch:
                self.shortcut = _cba(b.in_ch, b.out_ch, 1, b.stride, act=None)
            self.out_act = _act(act)

    def forward(self, x):
        y = self.body(x)
        if self.kind == "ir":
            return x + y if self.residual else y
        if self.kind == "bottleneck":
            return self.out_act(y + (self.shortcut(x) if self.shortcut is not None else x))
        return y


class BaselineNet(nn.Module):
    """stem -> stages -> [head conv] -> global pool -> FC, from a ``BaselinePlan``."""

    def __init__(self, p: BaselinePlan, in_chans: int = 3) -> None:
        super().__init__()
        stem = [_cba(in_chans, p.stem_ch, p.stem_k, 2, act=p.act)]
        if p.stem_pool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        n = p.blocks[-1].stage + 1
        self.stages = nn.Sequential(
            *(
                nn.Sequential(*(_Block(b, p.act) for b in p.blocks if b.stage == s))
                for s in range(n)
            )
        )
        last = p.blocks[-1].out_ch
        self.head = _cba(last, p.head_ch, 1, act=p.act) if p.head_ch else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(p.features, p.num_classes)

    def forward_features(self, x):
        return self.head(self.stages(self.stem(x)))

    def forward(self, x):
        return self.classifier(self.pool(self.forward_features(x)).flatten(1))


def build(p: BaselinePlan, in_chans: int = 3) -> BaselineNet:
    return BaselineNet(p, in_chans)
