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


def train_transform(
    cfg: dict[str, Any],
    image_size: int,
    *,
    augment: str = "basic",
    hflip: float = 0.5,
    scale_min: float = 0.08,
    magnitude: float = 9.0,
) -> T.Compose:
    """Training preprocessing: random resized crop, flip, optional RandAugment / AutoAugment.

    ``augment``: ``none`` (resize only), ``basic`` (crop + flip), ``randaugment`` (+ RandAugment
    with 2 ops at ``magnitude`` on a 0-30 scale, as in the papers) or ``autoaugment`` (+ the
    ImageNet AutoAugment policy). Normalisation comes from the model's data config.
    """
    interp = interpolation(cfg.get("interpolation", "bicubic"))
    ops: list = [T.ToImage()]
    if augment == "none":
        ops.append(T.Resize((image_size, image_size), interpolation=interp, antialias=True))
    else:
        ops.append(
            T.RandomResizedCrop(
                image_size, scale=(scale_min, 1.0), interpolation=interp, antialias=True
            )
        )
        if hflip > 0:
            ops.append(T.RandomHorizontalFlip(hflip))
    if augment == "randaugment" and magnitude > 0:
        # torchvision's magnitude is an integer bin out of num_magnitude_bins - 1 (=30).
        ops.append(T.RandAugment(num_ops=2, magnitude=round(magnitude), num_magnitude_bins=31))
    elif augment == "autoaugment":
        ops.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
    ops += [
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
    ]
    return T.Compose(ops)


def batch_mixer(mixup_alpha: float, cutmix_alpha: float, num_classes: int):
    """MixUp and/or CutMix on whole batches (one picked at random per batch), or None if both off.

    The returned callable maps ``(images, int labels)`` to ``(mixed images, soft labels)``.
    """
    ops = []
    if mixup_alpha > 0:
        ops.append(T.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        ops.append(T.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else T.RandomChoice(ops)
