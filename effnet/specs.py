"""The papers' stage tables as frozen data.

EfficientNet-B0: Table 1 of arXiv:1905.11946. EfficientNet-Lite: tensorflow/tpu
``lite/efficientnet_lite_builder.py``. EfficientNetV2-S: Table 4 of arXiv:2104.00298; V2-M/L/XL
and the V2 base network (B0..B3): google/automl ``effnetv2_configs.py``. Specs hold only unscaled
values; ``effnet.scaling.plan`` turns a family plus coefficients into final integers. The
preprocessing constants (mean / std) and the padding / shortcut choices live here too, so that
every layer reads one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

BlockKind = Literal["mbconv", "fused"]
# Convolution padding: PyTorch's symmetric k // 2, or TensorFlow "SAME" (for TF-trained weights).
PADDINGS = ("symmetric", "same")
# Blocks without an identity path: no shortcut, or a 1x1 conv + BN "projection" shortcut.
SHORTCUTS = ("identity", "projection")
# Preprocessing constants (mean, std on 0..1 RGB): ImageNet statistics, and TF's (x - 127) / 128
# of the Lite and V2 weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class StageSpec:
    """One stage of identical blocks; the stride applies to its first block only."""

    block: BlockKind
    r: int  # repeats
    k: int  # kernel size
    s: int  # stride of the first block
    e: int  # expansion ratio
    c: int  # output channels
    se: float = 0.0  # squeeze-excitation ratio of the block *input* channels

    def __post_init__(self) -> None:
        if self.block not in ("mbconv", "fused"):
            raise ValueError(f"block must be 'mbconv' or 'fused', got {self.block!r}")
        if self.r < 1:
            raise ValueError(f"repeats must be >= 1, got {self.r}")
        if self.s not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.s}")
        if self.k < 1 or self.k % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {self.k}")
        if self.e < 1:
            raise ValueError(f"expansion must be >= 1, got {self.e}")
        if not 0.0 <= self.se <= 1.0:
            raise ValueError(f"se ratio must be in [0, 1], got {self.se}")

    def __str__(self) -> str:
        tag = "ir" if self.block == "mbconv" else "er"
        se = f"_se{self.se:g}" if self.se else ""
        return f"{tag}_r{self.r}_k{self.k}_s{self.s}_e{self.e}_c{self.c}{se}"


mb = partial(StageSpec, "mbconv")
fused = partial(StageSpec, "fused")


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """A baseline network and the family rules that govern how it scales."""

    name: str
    stages: tuple[StageSpec, ...]
    stem_ch: int = 32
    head_ch: int = 1280
    act: str = "silu"
    scale_stem: bool = True
    scale_head: bool = True
    fixed_depth_stages: frozenset[int] = field(default_factory=frozenset)
    # TF keeps >= 90% of the scaled width in V1/Lite; automl V2 drops that guard (0.0).
    round_limit: float = 0.9
    bn_eps: float = 1e-3
    # PyTorch convention (1 - TF decay): V1/Lite use TF 0.99, automl V2 uses TF 0.9.
    bn_momentum: float = 0.01


B0_STAGES = (
    mb(r=1, k=3, s=1, e=1, c=16, se=0.25),
    mb(r=2, k=3, s=2, e=6, c=24, se=0.25),
    mb(r=2, k=5, s=2, e=6, c=40, se=0.25),
    mb(r=3, k=3, s=2, e=6, c=80, se=0.25),
    mb(r=3, k=5, s=1, e=6, c=112, se=0.25),
    mb(r=4, k=5, s=2, e=6, c=192, se=0.25),
    mb(r=1, k=3, s=1, e=6, c=320, se=0.25),
)

EFFICIENTNET = FamilySpec(name="efficientnet", stages=B0_STAGES)

# Lite: no SE, ReLU6, stem/head and first/last stage depth not scaled (quantization friendly).
EFFICIENTNET_LITE = replace(
    EFFICIENTNET,
    name="efficientnet_lite",
    stages=tuple(replace(s, se=0.0) for s in B0_STAGES),
    act="relu6",
    scale_stem=False,
    scale_head=False,
    fixed_depth_stages=frozenset({0, len(B0_STAGES) - 1}),
)

_V2 = {"round_limit": 0.0, "bn_momentum": 0.1}

EFFICIENTNETV2_BASE = FamilySpec(
    name="efficientnetv2_base",
    stages=(
        fused(r=1, k=3, s=1, e=1, c=16),
        fused(r=2, k=3, s=2, e=4, c=32),
        fused(r=2, k=3, s=2, e=4, c=48),
        mb(r=3, k=3, s=2, e=4, c=96, se=0.25),
        mb(r=5, k=3, s=1, e=6, c=112, se=0.25),
        mb(r=8, k=3, s=2, e=6, c=192, se=0.25),
    ),
    stem_ch=32,
    **_V2,
)

EFFICIENTNETV2_S = FamilySpec(
    name="efficientnetv2_s",
    stages=(
        fused(r=2, k=3, s=1, e=1, c=24),
        fused(r=4, k=3, s=2, e=4, c=48),
        fused(r=4, k=3, s=2, e=4, c=64),
        mb(r=6, k=3, s=2, e=4, c=128, se=0.25),
        mb(r=9, k=3, s=1, e=6, c=160, se=0.25),
        mb(r=15, k=3, s=2, e=6, c=256, se=0.25),
    ),
    stem_ch=24,
    **_V2,
)


def _v2_large(name: str, stem: int, rows: tuple[tuple[int, int], ...]) -> FamilySpec:
    """V2-M/L/XL share one layout (3 fused + 4 MBConv stages); only repeats and widths change."""
    kinds = (fused, fused, fused, mb, mb, mb, mb)
    strides = (1, 2, 2, 2, 1, 2, 1)
    expand = (1, 4, 4, 4, 6, 6, 6)
    stages = tuple(
        kind(r=r, k=3, s=s, e=e, c=c, **({"se": 0.25} if kind is mb else {}))
        for kind, s, e, (r, c) in zip(kinds, strides, expand, rows, strict=True)
    )
    return FamilySpec(name=name, stages=stages, stem_ch=stem, **_V2)


EFFICIENTNETV2_M = _v2_large(
    "efficientnetv2_m", 24, ((3, 24), (5, 48), (5, 80), (7, 160), (14, 176), (18, 304), (5, 512))
)
EFFICIENTNETV2_L = _v2_large(
    "efficientnetv2_l", 32, ((4, 32), (7, 64), (7, 96), (10, 192), (19, 224), (25, 384), (7, 640))
)
EFFICIENTNETV2_XL = _v2_large(
    "efficientnetv2_xl", 32, ((4, 32), (8, 64), (8, 96), (16, 192), (24, 256), (32, 512), (8, 640))
)

FAMILIES: dict[str, FamilySpec] = {
    f.name: f
    for f in (
        EFFICIENTNET,
        EFFICIENTNET_LITE,
        EFFICIENTNETV2_BASE,
        EFFICIENTNETV2_S,
        EFFICIENTNETV2_M,
        EFFICIENTNETV2_L,
        EFFICIENTNETV2_XL,
    )
}


# -- stage tables as plain data (the spec files of `effnet nas`) --------------------------------

_STAGE_KEYS = ("block", "r", "k", "s", "e", "c", "se")
_FAMILY_KEYS = (
    "name",
    "stem_ch",
    "head_ch",
    "act",
    "scale_stem",
    "scale_head",
    "round_limit",
    "bn_eps",
    "bn_momentum",
)


def family_to_dict(family: FamilySpec) -> dict:
    """A JSON-ready dict of ``family``: its stage table and its scaling rules."""
    out = {k: getattr(family, k) for k in _FAMILY_KEYS}
    out["fixed_depth_stages"] = sorted(family.fixed_depth_stages)
    out["stages"] = [{k: getattr(s, k) for k in _STAGE_KEYS} for s in family.stages]
    return out


def family_from_dict(data: object) -> FamilySpec:
    """The ``FamilySpec`` of ``family_to_dict``'s output; a ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"a family spec must be a JSON object, got {type(data).__name__}")
    unknown = [k for k in data if k not in (*_FAMILY_KEYS, "fixed_depth_stages", "stages")]
    if unknown:
        raise ValueError(f"unknown family spec key {unknown[0]!r}")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"a family spec needs a non-empty 'stages' list, got {stages!r:.60}")
    rows = []
    for i, row in enumerate(stages):
        if not isinstance(row, dict) or set(row) - set(_STAGE_KEYS) or "block" not in row:
            raise ValueError(f"stage {i}: expected an object with keys {_STAGE_KEYS}, got {row!r}")
        ints = {k: row[k] for k in ("r", "k", "s", "e", "c") if k in row}
        bad = [v for v in ints.values() if isinstance(v, bool) or not isinstance(v, int)]
        if len(ints) < 5 or bad:
            raise ValueError(f"stage {i}: r, k, s, e and c must be integers, got {row!r}")
        if ints["c"] < 1:
            raise ValueError(f"stage {i}: channels must be >= 1, got {ints['c']}")
        se = row.get("se", 0.0)
        if isinstance(se, bool) or not isinstance(se, int | float):
            raise ValueError(f"stage {i}: se must be a number, got {se!r}")
        rows.append(StageSpec(row["block"], **ints, se=float(se)))
    kw = {k: data[k] for k in _FAMILY_KEYS if k in data}
    if not isinstance(kw.get("name", ""), str):
        raise ValueError(f"name must be a string, got {kw['name']!r}")
    for k in ("stem_ch", "head_ch"):
        if k in kw and (isinstance(kw[k], bool) or not isinstance(kw[k], int) or kw[k] < 0):
            raise ValueError(f"{k} must be an integer >= 0, got {kw[k]!r}")
    fixed = data.get("fixed_depth_stages", [])
    if not isinstance(fixed, list) or any(not isinstance(i, int) for i in fixed):
        raise ValueError(f"fixed_depth_stages must be a list of stage indices, got {fixed!r}")
    return FamilySpec(
        name=kw.pop("name", "custom"),
        stages=tuple(rows),
        fixed_depth_stages=frozenset(fixed),
        **kw,
    )
