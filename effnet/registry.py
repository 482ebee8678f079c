"""The model registry: published variants as data, ``create_model`` and ``list_models``.

Coefficients (width, depth, resolution, dropout) are the released ones (tensorflow/tpu
``efficientnet_params``, the Lite builder, google/automl ``efficientnetv2_params``); they are not
alpha^phi etc. Compound scaling by any phi is available separately through ``phi=``.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from effnet import specs
from effnet.model import EfficientNet, EfficientNetFeatures
from effnet.scaling import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_GAMMA,
    compound_coefficients,
    plan,
    scale_resolution,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True, slots=True)
class Variant:
    family: specs.FamilySpec
    width: float
    depth: float
    resolution: int  # evaluation resolution
    dropout: float
    train_resolution: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float | None = None  # None -> resolution / (resolution + 32), the TF V1 rule

    def data_config(self, resolution: int | None = None) -> dict[str, Any]:
        res = resolution or self.resolution
        crop = self.crop_pct if self.crop_pct is not None else res / (res + 32)
        return {
            "input_size": (3, res, res),
            "train_size": self.train_resolution or res,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": round(crop, 4),
        }


VARIANTS: dict[str, Variant] = {}


def register(name: str, variant: Variant) -> None:
    if name in VARIANTS:
        raise ValueError(f"model {name!r} is already registered")
    VARIANTS[name] = variant


_V1 = (  # name, width, depth, resolution, dropout
    ("b0", 1.0, 1.0, 224, 0.2),
    ("b1", 1.0, 1.1, 240, 0.2),
    ("b2", 1.1, 1.2, 260, 0.3),
    ("b3", 1.2, 1.4, 300, 0.3),
    ("b4", 1.4, 1.8, 380, 0.4),
    ("b5", 1.6, 2.2, 456, 0.4),
    ("b6", 1.8, 2.6, 528, 0.5),
    ("b7", 2.0, 3.1, 600, 0.5),
    ("b8", 2.2, 3.6, 672, 0.5),
    ("l2", 4.3, 5.3, 800, 0.5),
)
for _n, _w, _d, _r, _p in _V1:
    register(f"efficientnet_{_n}", Variant(specs.EFFICIENTNET, _w, _d, _r, _p))

_LITE = (
    ("lite0", 1.0, 1.0, 224, 0.2),
    ("lite1", 1.0, 1.1, 240, 0.2),
    ("lite2", 1.1, 1.2, 260, 0.3),
    ("lite3", 1.2, 1.4, 280, 0.3),
    ("lite4", 1.4, 1.8, 300, 0.3),
)
for _n, _w, _d, _r, _p in _LITE:
    # TF Lite preprocessing: (x - 127) / 128 on 0..255, i.e. mean = std = 0.5 on 0..1.
    register(
        f"efficientnet_{_n}",
        Variant(
            specs.EFFICIENTNET_LITE, _w, _d, _r, _p, mean=HALF, std=HALF, interpolation="bilinear"
        ),
    )

_V2 = (  # name, family, train resolution, eval resolution, dropout
    ("s", specs.EFFICIENTNETV2_S, 300, 384, 0.2),
    ("m", specs.EFFICIENTNETV2_M, 384, 480, 0.3),
    ("l", specs.EFFICIENTNETV2_L, 384, 480, 0.4),
    ("xl", specs.EFFICIENTNETV2_XL, 384, 512, 0.4),
)
for _n, _f, _t, _r, _p in _V2:
    register(
        f"efficientnetv2_{_n}",
        Variant(
            _f,
            1.0,
            1.0,
            _r,
            _p,
            train_resolution=_t,
            mean=HALF,
            std=HALF,
            interpolation="bilinear",
            crop_pct=1.0,
        ),
    )

_V2B = (  # name, width, depth, train resolution, eval resolution, dropout
    ("b0", 1.0, 1.0, 192, 224, 0.2),
    ("b1", 1.0, 1.1, 192, 240, 0.2),
    ("b2", 1.1, 1.2, 208, 260, 0.3),
    ("b3", 1.2, 1.4, 240, 300, 0.3),
)
for _n, _w, _d, _t, _r, _p in _V2B:
    register(
        f"efficientnetv2_{_n}",
        Variant(specs.EFFICIENTNETV2_BASE, _w, _d, _r, _p, train_resolution=_t),
    )

# Baseline aliases for compound scaling by phi; not listed by ``list_models``.
ALIASES = {
    "efficientnet": "efficientnet_b0",
    "efficientnet_lite": "efficientnet_lite0",
    "efficientnetv2": "efficientnetv2_b0",
}


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (e.g. ``"*lite*"``)."""
    return [n for n in VARIANTS if fnmatch.fnmatchcase(n, pattern)]


def get_variant(name: str) -> Variant:
    key = ALIASES.get(name, name)
    if key not in VARIANTS:
        known = [*VARIANTS, *ALIASES]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        # Common typos (b0 typed as bo) rank first when they fix the name exactly.
        fixed = name.lower().replace("-", "_").replace("bo", "b0")
        if fixed in known:
            close = [fixed, *[c for c in close if c != fixed]][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `effnet models`"
        raise ValueError(f"unknown model {name!r}{hint}")
    return VARIANTS[key]


def resolve(
    name: str,
    *,
    phi: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    image_size: int | None = None,
) -> tuple[Variant, float, float, int]:
    """Return (variant, width, depth, resolution) after compound and explicit overrides."""
    variant = get_variant(name)
    width, depth, res = variant.width, variant.depth, variant.resolution
    if phi is not None or any(c is not None for c in (alpha, beta, gamma)):
        d, w, r = compound_coefficients(
            0.0 if phi is None else phi,
            DEFAULT_ALPHA if alpha is None else alpha,
            DEFAULT_BETA if beta is None else beta,
            DEFAULT_GAMMA if gamma is None else gamma,
        )
        width, depth, res = width * w, depth * d, scale_resolution(res, r)
    for label, v in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if v is not None and not (isinstance(v, int | float) and 0 < v <= 100):
            raise ValueError(f"{label} must be a number in (0, 100], got {v}")
    width = width_mult if width_mult is not None else width
    depth = depth_mult if depth_mult is not None else depth
    if image_size is not None:
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an integer >= 32, got {image_size}")
        res = image_size
    return variant, width, depth, res


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    pretrained: str | None = None,
    phi: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    image_size: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float = 0.2,
    act: str | None = None,
    se: bool | None = None,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
    padding: str | None = None,
    shortcut: str = "identity",
    features_only: bool = False,
    out_indices: tuple[int, ...] = (0, 1, 2, 3, 4),
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build a registered EfficientNet, optionally scaled, modified and loaded with weights.

    Args:
        name: a name from ``list_models()``, or a baseline alias (``efficientnet``,
            ``efficientnet_lite``, ``efficientnetv2``) to scale with ``phi``.
        phi, alpha, beta, gamma: compound scaling on top of the variant: depth x alpha^phi,
            width x beta^phi, resolution x gamma^phi (defaults 1.2, 1.1, 1.15).
        width_mult, depth_mult: explicit multipliers that replace the variant's own.
        pretrained: a weight file (effnet, timm, torchvision or lukemelas format; detected), or
            ``"timm"`` / ``"torchvision"`` / ``"timm:NAME"`` to download upstream weights.
        padding: ``"symmetric"`` (PyTorch) or ``"same"`` (TensorFlow, for TF-trained weights);
            ``None`` picks what the weights need.
        shortcut: ``"projection"`` gives every block without an identity path a 1x1 conv shortcut.
    """
    variant, width, depth, res = resolve(
        name,
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        width_mult=width_mult,
        depth_mult=depth_mult,
        image_size=image_size,
    )
    weights = None
    if pretrained is not None:
        from effnet.weights import read_pretrained

        weights = read_pretrained(pretrained, name)
        padding = padding or weights.padding
        bn_eps = bn_eps if bn_eps is not None else weights.bn_eps
    family = variant.family
    if act is not None:
        family = replace(family, act=act)
    if se is False:
        family = replace(family, stages=tuple(replace(s, se=0.0) for s in family.stages))
    elif se is True and not any(s.se for s in family.stages):
        family = replace(family, stages=tuple(replace(s, se=0.25) for s in family.stages))
    if bn_eps is not None:
        if not 0 < bn_eps < 1:
            raise ValueError(f"bn_eps must be in (0, 1), got {bn_eps}")
        family = replace(family, bn_eps=bn_eps)
    if bn_momentum is not None:
        if not 0 <= bn_momentum <= 1:
            raise ValueError(
                f"bn_momentum must be in [0, 1] (PyTorch convention), got {bn_momentum}"
            )
        family = replace(family, bn_momentum=bn_momentum)
    model_plan = plan(family, width, depth, drop_path_rate)
    ctx = torch.device(device) if device is not None else None
    with ctx if ctx is not None else _null():
        model = EfficientNet(
            model_plan,
            num_classes=num_classes,
            in_chans=in_chans,
            drop_rate=variant.dropout if drop_rate is None else drop_rate,
            padding=padding or "symmetric",
            shortcut=shortcut,
        )
    model.variant = name
    # Everything needed to rebuild this architecture (saved with checkpoints and exports).
    model.build_args = {
        "name": name,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "width_mult": width,
        "depth_mult": depth,
        "image_size": res,
        "drop_rate": model.dropout.p,
        "drop_path_rate": drop_path_rate,
        "act": model_plan.act,
        "se": any(b.se_ch for b in model_plan.blocks),
        "bn_eps": model_plan.bn_eps,
        "bn_momentum": model_plan.bn_momentum,
        "padding": padding or "symmetric",
        "shortcut": shortcut,
    }
    model.padding = padding or "symmetric"
    model.shortcut_mode = shortcut
    model.pretrained_cfg = variant.data_config(res)
    if weights is not None:
        from effnet.weights import apply_pretrained

        apply_pretrained(model, weights)
    if features_only:
        return EfficientNetFeatures(model, tuple(out_indices))
    return model


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def data_config(model_or_name: nn.Module | str) -> dict[str, Any]:
    """Preprocessing for a model's weights: input size, crop fraction, interpolation, mean/std."""
    if isinstance(model_or_name, str):
        return get_variant(model_or_name).data_config()
    cfg = getattr(model_or_name, "pretrained_cfg", None)
    if not cfg:
        raise ValueError("this model carries no data config; build it with effnet.create_model")
    return dict(cfg)
