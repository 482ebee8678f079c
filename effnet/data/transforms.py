"""Preprocessing built from a model's data config with torchvision.transforms.v2."""

from __future__ import annotations

import math
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def interpolation(name: str) -> InterpolationMode:
    try:
        return INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(
            f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}"
        ) from None


def eval_transform(cfg: dict[str, Any], image_size: int | None = None) -> T.Compose:
    """Resize the short side to size / crop_pct, centre-crop ``size``, scale to [0, 1], normalise.

    ``crop_pct`` = 1.0 resizes the whole image to ``size`` x ``size`` without cropping (the V2
    S/M/L evaluation); below 1 it is the TF V1 rule size / (size + 32) unless the weights say else.
    """
    size = image_size or cfg["input_size"][-1]
    crop = float(cfg.get("crop_pct", 1.0))
    if not 0 < crop <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop}")
    interp = interpolation(cfg.get("interpolation", "bicubic"))
    if crop >= 1.0:
        resize = [T.Resize((size, size), interpolation=interp, antialias=True)]
    else:
        resize = [
            T.Resize(math.floor(size / crop), interpolation=interp, antialias=True),
            T.CenterCrop(size),
        ]
    return T.Compose(
        [
            T.ToImage(),
            *resize,
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
        ]
    )
