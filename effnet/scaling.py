"""Compound scaling (arXiv:1905.11946, eq. 3) and the rounding rules that turn it into integers.

Pure Python, no torch: ``plan`` expands a ``FamilySpec`` into a ``ModelPlan`` of final integers that
the model, the MAC counter and the summaries all read, so they cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from effnet.specs import BlockKind, FamilySpec

DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA = 1.2, 1.1, 1.15


def round_channels(
    channels: float, multiplier: float = 1.0, divisor: int = 8, round_limit: float = 0.9
) -> int:
    """Scale ``channels`` and round to the nearest multiple of ``divisor`` (half up).

    TF's ``round_filters``: the result never drops below ``round_limit`` of the scaled value (V1 and
    Lite use 0.9; automl V2 uses 0, i.e. no guard) and never below ``divisor``.
    """
    if channels <= 0 or multiplier <= 0:
        raise ValueError(f"channels and multiplier must be > 0, got {channels} and {multiplier}")
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, multiplier: float = 1.0) -> int:
    """Depth scaling: ceil per stage, as in every reference implementation."""
    if multiplier <= 0:
        raise ValueError(f"depth multiplier must be > 0, got {multiplier}")
    return max(1, math.ceil(multiplier * repeats - 1e-9))


def compound_coefficients(
    phi: float,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[float, float, float]:
    """Return (depth, width, resolution) multipliers = (alpha^phi, beta^phi, gamma^phi).

    The published B1..B7 coefficients are hand-picked and are *not* these values (B7 is
    w=2.0, d=3.1, 600 px while phi=7 gives 1.95, 3.58, 596); they live in the registry as data.
    """
    validate_coefficients(alpha, beta, gamma)
    if not math.isfinite(phi):
        raise ValueError(f"phi must be a finite number, got {phi}")
    return alpha**phi, beta**phi, gamma**phi


def validate_coefficients(alpha: float, beta: float, gamma: float) -> None:
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not isinstance(v, int | float) or not math.isfinite(v) or v < 1.0:
            raise ValueError(f"{name} must be a finite number >= 1 (paper eq. 3), got {v}")


def scale_resolution(base: int, multiplier: float, divisor: int = 8) -> int:
    """Resolution multiplier -> pixels, rounded to a multiple of ``divisor`` (at least 32)."""
    if multiplier <= 0 or not math.isfinite(multiplier):
        raise ValueError(f"resolution multiplier must be a finite number > 0, got {multiplier}")
    return max(32, round(base * multiplier / divisor) * divisor)


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """Final integers for one block; blocks do no arithmetic of their own."""

    kind: BlockKind
    stage: int
    in_ch: int
    mid_ch: int
    out_ch: int
    kernel: int
    stride: int
    se_ch: int
    drop_path: float

    @property
    def has_identity(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclass(frozen=True, slots=True)
class ModelPlan:
    name: str
    stem_ch: int
    blocks: tuple[BlockPlan, ...]
    head_ch: int
    act: str
    bn_eps: float
    bn_momentum: float

    @property
    def num_stages(self) -> int:
        return self.blocks[-1].stage + 1

    def stage_blocks(self, stage: int) -> tuple[BlockPlan, ...]:
        return tuple(b for b in self.blocks if b.stage == stage)


def plan(
    family: FamilySpec, width: float = 1.0, depth: float = 1.0, drop_path_rate: float = 0.2
) -> ModelPlan:
    """Expand ``family`` scaled by ``width`` and ``depth`` into per-block integers.

    Stochastic depth is linear in the global block index i over all N blocks: rate_i = p * i / N
    (TF ``drop_connect_rate``; first block 0, last block p * (N - 1) / N).
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")

    def ch(c: int) -> int:
        return round_channels(c, width, round_limit=family.round_limit)

    stem_ch = ch(family.stem_ch) if family.scale_stem else family.stem_ch
    head_ch = ch(family.head_ch) if family.scale_head else family.head_ch

    rows = []
    in_ch = stem_ch
    for si, spec in enumerate(family.stages):
        reps = spec.r if si in family.fixed_depth_stages else round_repeats(spec.r, depth)
        out_ch = ch(spec.c)
        for j in range(reps):
            stride = spec.s if j == 0 else 1
            mid = in_ch * spec.e
            se_ch = max(1, int(in_ch * spec.se)) if spec.se > 0 else 0
            rows.append((spec.block, si, in_ch, mid, out_ch, spec.k, stride, se_ch))
            in_ch = out_ch

    n = len(rows)
    blocks = tuple(BlockPlan(*row, drop_path=drop_path_rate * i / n) for i, row in enumerate(rows))
    return ModelPlan(
        name=family.name,
        stem_ch=stem_ch,
        blocks=blocks,
        head_ch=head_ch,
        act=family.act,
        bn_eps=family.bn_eps,
        bn_momentum=family.bn_momentum,
    )
