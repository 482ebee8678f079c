"""The model registry: published variants as data; ``build_model`` and ``list_models``.

Coefficients (width, depth, resolution, dropout) are the released ones (tensorflow/tpu
``efficientnet_params``, the Lite builder, google/automl ``efficientnetv2_params``); they are not
alpha^phi etc. Compound scaling by any phi is available separately through ``phi=``. The registry
builds architectures from this data only; weights are ``effnet.api.create_model``'s business.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet import specs
from effnet.model import EfficientNet
from effnet.scaling import check_multipliers, plan, refuse_mixed, resolve_scaling
from effnet.specs import HALF, IMAGENET_MEAN, IMAGENET_STD


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
        """Evaluation preprocessing at ``resolution`` (default the variant's own); the model's
        image size is ``input_size``, its one and only record."""
        res = resolution or self.resolution
        crop = self.crop_pct if self.crop_pct is not None else res / (res + 32)
        return {
            "input_size": (3, res, res),
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


def canonical_name(name: str) -> str:
    """The registered spelling of ``name``: case and ``-`` vs ``_`` do not matter
    (``EfficientNet-B0`` -> ``efficientnet_b0``); a name that matches nothing comes back as is."""
    if not isinstance(name, str) or name in VARIANTS or name in ALIASES:
        return name
    key = name.strip().lower().replace("-", "_")
    return key if key in VARIANTS or key in ALIASES else name


SPEC_FORMAT = "effnet-spec"  # a JSON file holding one Variant: a stage table plus its defaults
_SPEC_CACHE: dict[tuple[str, int, int], Variant] = {}


def is_spec_file(name: object) -> bool:
    """Whether ``name`` names a spec file (``*.json``) rather than a registered model."""
    return isinstance(name, str) and name.lower().endswith(".json")


def variant_to_dict(variant: Variant) -> dict[str, Any]:
    """The JSON body of a spec file for ``variant`` (read back by ``variant_from_dict``)."""
    out: dict[str, Any] = {"format": SPEC_FORMAT, "version": 1}
    out["family"] = specs.family_to_dict(variant.family)
    for k in ("width", "depth", "resolution", "dropout", "train_resolution", "interpolation"):
        out[k] = getattr(variant, k)
    out.update(mean=list(variant.mean), std=list(variant.std), crop_pct=variant.crop_pct)
    return out


def variant_from_dict(data: Any, where: str = "spec") -> Variant:
    """A ``Variant`` from a spec file's JSON; one-line ValueErrors naming ``where``."""
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
        raise ValueError(f"{where}: not an effnet spec file (no \"format\": \"{SPEC_FORMAT}\")")
    try:
        family = specs.family_from_dict(data.get("family"))
        kw = {k: data[k] for k in ("width", "depth", "dropout") if k in data}
        for k, v in kw.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"{k} must be a number >= 0, got {v!r}")
        res = data.get("resolution", 224)
        if isinstance(res, bool) or not isinstance(res, int) or res < 32:
            raise ValueError(f"resolution must be an integer >= 32, got {res!r}")
        extra = {k: data[k] for k in ("train_resolution", "interpolation", "crop_pct") if k in data}
        extra.update({k: tuple(data[k]) for k in ("mean", "std") if k in data})
        return Variant(
            family, kw.get("width", 1.0), kw.get("depth", 1.0), res, kw.get("dropout", 0.2), **extra
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid stage table ({str(e).splitlines()[0]})") from None


def read_spec_file(path: str) -> Variant:
    """The Variant a spec file holds (the same object while the file is unchanged)."""
    try:
        st = os.stat(path)
    except OSError:
        raise ValueError(f"{path}: no such spec file") from None
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if key not in _SPEC_CACHE:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON spec file ({str(e).splitlines()[0]})") from None
        _SPEC_CACHE[key] = variant_from_dict(data, path)
    return _SPEC_CACHE[key]


def model_label(name: Any) -> str:
    """The name a model built from ``name`` carries: the family's for spec files and specs."""
    if is_spec_file(name):
        return read_spec_file(name).family.name
    if isinstance(name, Variant):
        return name.family.name
    if isinstance(name, specs.FamilySpec):
        return name.name
    return canonical_name(name)


def get_variant(name: str | Variant | specs.FamilySpec) -> Variant:
    """A registered variant by name (aliases, any case), a spec file's, or a spec object's (a
    ``FamilySpec`` gets B0's defaults: width and depth 1, 224 px, dropout 0.2)."""
    if isinstance(name, Variant):
        return name
    if isinstance(name, specs.FamilySpec):
        return Variant(name, 1.0, 1.0, 224, 0.2)
    if is_spec_file(name):
        return read_spec_file(name)
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {name!r}")
    name = canonical_name(name)
    key = ALIASES.get(name, name)
    if key not in VARIANTS:
        known = [*VARIANTS, *ALIASES]
        typed = name.strip().lower().replace("-", "_")
        close = difflib.get_close_matches(typed, known, n=3, cutoff=0.5)
        # Common typos (b0 typed as bo) rank first when they fix the name exactly.
        fixed = typed.replace("bo", "b0")
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
    """Return (variant, width, depth, resolution) after compound scaling or explicit overrides.

    Compound scaling (``effnet.scaling.resolve_scaling``) multiplies the variant's own width,
    depth and resolution; ``width_mult`` / ``depth_mult`` replace them (not with compound
    scaling: that is refused); ``image_size`` replaces the resolution.
    """
    variant = get_variant(name)
    explicit = {"width_mult": width_mult, "depth_mult": depth_mult}
    check_multipliers(explicit)
    refuse_mixed({"phi": phi, "alpha": alpha, "beta": beta, "gamma": gamma}, explicit)
    scaled = resolve_scaling(phi=phi, alpha=alpha, beta=beta, gamma=gamma)
    width = variant.width * scaled.width if width_mult is None else width_mult
    depth = variant.depth * scaled.depth if depth_mult is None else depth_mult
    res = scaled.image_size(variant.resolution)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size must be an integer >= 32, got {image_size}")
        res = image_size
    return variant, width, depth, res


def customize(
    family: specs.FamilySpec,
    *,
    act: str | None = None,
    se: bool | None = None,
    bn_eps: float | None = None,
    bn_momentum: float | None = None,
) -> specs.FamilySpec:
    """``family`` with another activation, SE switched off / on (ratio 0.25), or other BN."""
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
    return family


def build_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
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
    global_pool: str = "avg",
    device: str | torch.device | None = None,
) -> EfficientNet:
    """A registered architecture with fresh weights and the variant's data config.

    The arguments are ``effnet.create_model``'s, less those about weights (it documents them).
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
    name = model_label(name)
    family = customize(variant.family, act=act, se=se, bn_eps=bn_eps, bn_momentum=bn_momentum)
    model_plan = plan(
        family, width, depth, drop_path_rate, padding=padding or "symmetric", shortcut=shortcut
    )
    drop = variant.dropout if drop_rate is None else drop_rate
    with torch.device(device) if device is not None else nullcontext():
        model = EfficientNet(
            model_plan, num_classes, in_chans, drop, name=name, global_pool=global_pool
        )
    model.pretrained_cfg = variant.data_config(res)
    return model


def data_config(model_or_name: nn.Module | str) -> dict[str, Any]:
    """Preprocessing for a model's weights: input size, crop fraction, interpolation, mean/std.

    For a registered name, also ``train_size``: the resolution its published recipe trains at.
    """
    if isinstance(model_or_name, str):
        variant = get_variant(model_or_name)
        return {
            **variant.data_config(),
            "train_size": variant.train_resolution or variant.resolution,
        }
    cfg = getattr(model_or_name, "pretrained_cfg", None)
    if not cfg or "input_size" not in cfg:  # architecture keys alone say nothing of the data
        raise ValueError("this model carries no data config; build it with effnet.create_model")
    return dict(cfg)
