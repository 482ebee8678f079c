"""Pure schedule functions: learning rate per step and progressive-learning stage values."""

from __future__ import annotations

import math
from dataclasses import dataclass

# EfficientNetV2 paper, Table 6: (image size, RandAugment magnitude, mixup alpha, dropout) ranges.
V2_PROGRESSIVE = {
    "efficientnetv2_s": {
        "image_size": (128, 300),
        "magnitude": (5, 15),
        "mixup": (0, 0),
        "dropout": (0.1, 0.3),
    },
    "efficientnetv2_m": {
        "image_size": (128, 380),
        "magnitude": (5, 20),
        "mixup": (0, 0.2),
        "dropout": (0.1, 0.4),
    },
    "efficientnetv2_l": {
        "image_size": (128, 380),
        "magnitude": (5, 25),
        "mixup": (0, 0.4),
        "dropout": (0.1, 0.5),
    },
}
V2_PROGRESSIVE["efficientnetv2_xl"] = V2_PROGRESSIVE["efficientnetv2_l"]


def lr_at(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    schedule: str = "cosine",
    decay_rate: float = 0.97,
    decay_epochs: float = 2.4,
    min_lr: float = 0.0,
) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then the decay.

    ``exponential`` is the EfficientNet recipe: x ``decay_rate`` every ``decay_epochs`` (staircase),
    counted from the end of warmup. ``cosine`` anneals from ``base_lr`` to ``min_lr``.
    """
    warmup = round(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "exponential":
        k = math.floor((step - warmup) / (decay_epochs * steps_per_epoch))
        return max(min_lr, base_lr * decay_rate**k)
    if schedule == "cosine":
        span = max(1, total_steps - warmup - 1)
        t = min(1.0, (step - warmup) / span)
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))
    raise ValueError(f"schedule must be cosine, exponential or constant, got {schedule!r}")


@dataclass(frozen=True)
class Stage:
    index: int
    first_epoch: int  # inclusive
    last_epoch: int  # exclusive
    image_size: int
    magnitude: float
    mixup: float
    dropout: float


def interpolate(start: float, end: float, i: int, stages: int) -> float:
    """Algorithm 1: value at stage ``i`` of ``stages``, linear from start (i=0) to end (i=M-1)."""
    if stages <= 1:
        return float(end)
    return start + (end - start) * i / (stages - 1)


def progressive_stages(
    epochs: int,
    stages: int,
    image_size: tuple[int, int],
    magnitude: tuple[float, float],
    mixup: tuple[float, float],
    dropout: tuple[float, float],
    multiple: int = 1,
) -> list[Stage]:
    """Split ``epochs`` into ``stages`` near-equal stages with linearly growing values.

    Image sizes are rounded to a multiple of ``multiple`` (1: the nearest integer).
    """
    if stages < 1 or stages > epochs:
        raise ValueError(f"stages must be in [1, epochs={epochs}], got {stages}")
    out = []
    for i in range(stages):
        first = (epochs * i) // stages
        last = (epochs * (i + 1)) // stages
        size = interpolate(image_size[0], image_size[1], i, stages)
        size = max(multiple, round(size / multiple) * multiple)
        out.append(
            Stage(
                index=i,
                first_epoch=first,
                last_epoch=last,
                image_size=size,
                magnitude=round(interpolate(*magnitude, i, stages), 4),
                mixup=round(interpolate(*mixup, i, stages), 4),
                dropout=round(interpolate(*dropout, i, stages), 4),
            )
        )
    return out


def stage_for_epoch(stages: list[Stage], epoch: int) -> Stage:
    for s in stages:
        if s.first_epoch <= epoch < s.last_epoch:
            return s
    return stages[-1]
