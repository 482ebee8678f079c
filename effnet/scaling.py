"""Compound scaling (arXiv:1905.11946, eq. 3) and the rounding rules that turn it into integers.

Pure Python, no torch: ``plan`` expands a ``FamilySpec`` into a ``ModelPlan`` of final integers that
the model, the MAC counter and the summaries all read, so they cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from effnet.specs import PADDINGS, SHORTCUTS, BlockKind, FamilySpec

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
    """Everything that shapes a network: per-block integers, activation, BN, padding, shortcut.

    ``width``, ``depth`` and ``drop_path_rate`` are the arguments ``plan`` expanded; the integers
    do not need them, summaries report them. ``to_dict`` / ``from_dict`` round-trip through JSON,
    so a model file rebuilds exactly this plan whatever the registry says later.
    """

    name: str
    stem_ch: int
    blocks: tuple[BlockPlan, ...]
    head_ch: int
    act: str
    bn_eps: float
    bn_momentum: float
    padding: str = "symmetric"
    shortcut: str = "identity"
    width: float = 1.0
    depth: float = 1.0
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
        if not self.blocks:
            raise ValueError(f"plan {self.name!r} has no blocks")

    @property
    def num_stages(self) -> int:
        return self.blocks[-1].stage + 1

    def stage_blocks(self, stage: int) -> tuple[BlockPlan, ...]:
        return tuple(b for b in self.blocks if b.stage == stage)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; ``blocks`` is a list of dicts with ``BlockPlan``'s fields."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["blocks"] = [{f.name: getattr(b, f.name) for f in fields(b)} for b in self.blocks]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> ModelPlan:
        """Rebuild a plan from ``to_dict`` output (e.g. read from a file); one-line ValueError."""
        if not isinstance(data, dict) or not isinstance(data.get("blocks"), list):
            raise ValueError(f"a model plan must be a dict with a list of blocks, got {data!r:.80}")
        blocks = tuple(from_fields(BlockPlan, b) for b in data["blocks"])
        return from_fields(cls, {**data, "blocks": blocks})


_TYPES = {"int": int, "float": (int, float), "str": str, "BlockKind": str}


def from_fields(cls: type, data: Any) -> Any:
    """``cls(**data)`` after checking that the keys are its fields and plain values their types."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a dict, got {data!r:.80}")
    names = {f.name: f for f in fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    for key, value in data.items():
        want = _TYPES.get(str(names[key].type))
        if want is not None and (isinstance(value, bool) or not isinstance(value, want)):
            raise ValueError(f"{cls.__name__}.{key} must be {names[key].type}, got {value!r:.80}")
    try:
        return cls(**data)
    except TypeError as e:  # a required field missing
        raise ValueError(f"{cls.__name__}: {e}") from None


def plan(
    family: FamilySpec,
    width: float = 1.0,
    depth: float = 1.0,
    drop_path_rate: float = 0.2,
    *,
    padding: str = "symmetric",
    shortcut: str = "identity",
) -> ModelPlan:
    """Expand ``family`` scaled by ``width`` and ``depth`` into per-block integers.

    Stochastic depth is linear in the global block index i over all N blocks: rate_i = p * i / N
    (TF ``drop_connect_rate``; first block 0, last block p * (N - 1) / N). ``padding`` is
    ``"symmetric"`` or TF ``"same"``; ``shortcut="projection"`` gives every block without an
    identity path a 1x1 conv shortcut.
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
        padding=padding,
        shortcut=shortcut,
        width=width,
        depth=depth,
        drop_path_rate=drop_path_rate,
    )


# -- the one rule for compound / explicit scaling ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Scaling:
    """Multipliers against a base network (depth d, width w, resolution r) and their source:
    ``phi``/``alpha``/``beta``/``gamma`` for compound scaling, else ``None``."""

    depth: float = 1.0
    width: float = 1.0
    resolution: float = 1.0
    phi: float | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None

    def image_size(self, base: int, divisor: int = 8) -> int:
        """``base`` pixels scaled by ``resolution``: unchanged at r = 1, else rounded to a
        multiple of ``divisor`` (``scale_resolution``)."""
        return base if self.resolution == 1.0 else scale_resolution(base, self.resolution, divisor)


def check_multipliers(multipliers: dict[str, float | None]) -> None:
    """Each given (non-None) explicit multiplier must be a number in (0, 100]."""
    for label, v in multipliers.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 100:
            raise ValueError(f"{label} must be a number > 0 and <= 100, got {v}")


def refuse_mixed(compound: dict[str, float | None], explicit: dict[str, float | None]) -> None:
    """Compound scaling and explicit multipliers together are ambiguous: one-line ValueError."""
    compound = {k: v for k, v in compound.items() if v is not None}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if compound and explicit:
        got = ", ".join(f"{k}={v}" for k, v in {**compound, **explicit}.items())
        raise ValueError(
            f"give either phi/alpha/beta/gamma (compound) or explicit multipliers "
            f"({', '.join(explicit)}), not both; got {got}"
        )


def resolve_scaling(
    *,
    phi: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    depth: float | None = None,
    width: float | None = None,
    resolution: float | None = None,
) -> Scaling:
    """The only rule for phi, alpha/beta/gamma and explicit multipliers (``create_model``,
    ``effnet scale`` and the lab all call it).

    Compound: d, w, r = alpha^phi, beta^phi, gamma^phi with alpha/beta/gamma defaulting to
    1.2/1.1/1.15. Given alpha/beta/gamma without phi, phi is 1: the paper defines them as the
    phi = 1 multipliers (step 1 of its method fixes phi = 1 and searches alpha, beta, gamma).
    Explicit: ``depth``/``width``/``resolution`` multipliers, each defaulting to 1. Giving both
    kinds is refused.
    """
    explicit = {"depth": depth, "width": width, "resolution": resolution}
    check_multipliers(explicit)
    refuse_mixed({"phi": phi, "alpha": alpha, "beta": beta, "gamma": gamma}, explicit)
    if phi is None and alpha is None and beta is None and gamma is None:
        return Scaling(float(depth or 1.0), float(width or 1.0), float(resolution or 1.0))
    a = DEFAULT_ALPHA if alpha is None else alpha
    b = DEFAULT_BETA if beta is None else beta
    g = DEFAULT_GAMMA if gamma is None else gamma
    p = 1.0 if phi is None else phi
    d, w, r = compound_coefficients(p, a, b, g)
    return Scaling(float(d), float(w), float(r), p, a, b, g)
