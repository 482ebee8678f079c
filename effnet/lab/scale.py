"""``scale``: apply compound (or per-dimension) scaling to any staged baseline and count the result.

The paper's eq. 3: depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi, with
alpha * beta^2 * gamma^2 ~ 2 so MACs grow by about 2^phi. Rounding (repeats ceil per stage,
channels to the spec's divisor, pixels to a multiple of 8) makes the real ratio differ from
d * w^2 * r^2; ``scale`` reports both.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from effnet.analysis.info import model_info
from effnet.lab.baselines import BASELINES, Baseline, baseline_plan, count
from effnet.model import EfficientNet
from effnet.registry import get_variant
from effnet.scaling import plan, resolve_scaling
from effnet.specs import FamilySpec


def _baseline_counts(base: Baseline, d: float, w: float, px: int) -> dict[str, Any]:
    p = baseline_plan(base, d, w)
    c = count(p, px)
    stages = []
    for s in range(p.blocks[-1].stage + 1):
        blocks = [b for b in p.blocks if b.stage == s]
        b0 = blocks[0]
        part = c["parts"][f"stages.{s}"]
        stages.append(
            {
                "stage": s + 1,
                "block": b0.kind,
                "kernel": b0.kernel,
                "stride": b0.stride,
                "in_ch": b0.in_ch,
                "mid_ch": b0.mid_ch,
                "out_ch": b0.out_ch,
                "repeats": len(blocks),
                "params": part["params"],
                "macs": part["macs"],
            }
        )
    return {
        "params": c["params"],
        "macs": c["macs"],
        "stem_ch": p.stem_ch,
        "head_ch": p.head_ch,
        "stages": stages,
    }


def _effnet_counts(family: FamilySpec, d: float, w: float, px: int) -> dict[str, Any]:
    with torch.device("meta"):
        model = EfficientNet(plan(family, w, d))
    info = model_info(model, px)
    stages = [
        {
            k: s[k]
            for k in (
                "stage",
                "block",
                "kernel",
                "stride",
                "in_ch",
                "out_ch",
                "repeats",
                "params",
                "macs",
            )
        }
        | {"mid_ch": s["in_ch"] * s["expand"]}
        for s in info["stages"]
    ]
    return {
        "params": info["params"],
        "macs": info["macs"],
        "stem_ch": info["stem"]["out_ch"],
        "head_ch": info["head"]["out_ch"],
        "stages": stages,
    }


def _resolve_base(base: str | Baseline | FamilySpec) -> tuple[str, Any, float, float, int]:
    """(name, spec, base depth, base width, base resolution)."""
    if isinstance(base, Baseline):
        return base.name, base, 1.0, 1.0, base.resolution
    if isinstance(base, FamilySpec):
        return base.name, base, 1.0, 1.0, 224
    if not isinstance(base, str):
        raise ValueError(
            f"base must be a name, a Baseline or a FamilySpec, got {type(base).__name__}"
        )
    key = base.lower().replace("-", "").replace("_", "")
    for name, spec in BASELINES.items():
        if key == name:
            return name, spec, 1.0, 1.0, spec.resolution
    try:
        v = get_variant(base)
    except ValueError as e:
        raise ValueError(f"{e} (or one of {', '.join(BASELINES)})") from None
    return base, v.family, v.depth, v.width, v.resolution


def scale(
    base: str | Baseline | FamilySpec,
    *,
    phi: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    depth: float | None = None,
    width: float | None = None,
    resolution: float | None = None,
) -> dict[str, Any]:
    """Scale ``base`` and return its per-stage architecture, params, MACs and the MACs ratio.

    Args:
        base: ``"mobilenetv1"``, ``"mobilenetv2"``, ``"resnet50"``, any registered EfficientNet
            name (scaling multiplies its own coefficients), or your own ``Baseline`` /
            ``FamilySpec``.
        phi, alpha, beta, gamma: compound scaling d = alpha^phi, w = beta^phi, r = gamma^phi
            (defaults 1.2, 1.1, 1.15; phi defaults to 1 when only alpha/beta/gamma are given).
        depth, width, resolution: explicit multipliers instead (each defaults to 1).

    Returns a dict with ``depth``/``width``/``resolution`` multipliers, ``image_size`` (pixels,
    a multiple of 8), ``params``, ``macs``, ``stages``, the baseline's ``base_params`` /
    ``base_macs``, ``macs_ratio`` (measured), ``theory_ratio`` (d * w^2 * r^2) and, for compound
    scaling, ``phi_ratio`` (2^phi, the paper's target).
    """
    scaling = resolve_scaling(
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        depth=depth,
        width=width,
        resolution=resolution,
    )
    co = asdict(scaling)
    name, spec, d0, w0, res0 = _resolve_base(base)
    counter = _baseline_counts if isinstance(spec, Baseline) else _effnet_counts
    d, w, r = scaling.depth, scaling.width, scaling.resolution
    px = scaling.image_size(res0)
    scaled = counter(spec, d0 * d, w0 * w, px)
    ref = counter(spec, d0, w0, res0)
    out = {
        "base": name,
        **co,
        "image_size": px,
        "base_image_size": res0,
        # Absolute multipliers against the family's unscaled spec (B3: width 1.2, depth 1.4).
        "total_depth": d0 * d,
        "total_width": w0 * w,
        **scaled,
        "base_params": ref["params"],
        "base_macs": ref["macs"],
        "macs_ratio": scaled["macs"] / ref["macs"],
        "theory_ratio": d * w * w * r * r,
    }
    if co["phi"] is not None:
        out["phi_ratio"] = 2.0 ** co["phi"]
    return out
