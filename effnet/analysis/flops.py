"""Multiply-accumulate (MAC) counts of conv and linear layers: the papers' "FLOPs".

Two independent counters: ``plan_macs`` works analytically from a ``ModelPlan`` (no torch model),
``count_macs`` runs hooks over any ``nn.Module`` on the meta device. BN, activations, SE multiply,
pooling and residual adds are not counted (the rule torchvision's ``_ops`` and the papers use).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import nn

from effnet.scaling import BlockPlan, ModelPlan


def _out(n: int, stride: int) -> int:
    return (n + stride - 1) // stride  # odd kernels: symmetric and SAME padding agree


def block_macs(
    b: BlockPlan, h: int, w: int, projection_shortcut: bool = False
) -> tuple[int, int, int]:
    """MACs of one block at input size (h, w); returns (macs, out_h, out_w)."""
    oh, ow = _out(h, b.stride), _out(w, b.stride)
    k2 = b.kernel * b.kernel
    if b.kind == "mbconv":
        macs = h * w * b.in_ch * b.mid_ch if b.mid_ch != b.in_ch else 0
        macs += oh * ow * b.mid_ch * k2  # depthwise
        se_width = b.mid_ch
        macs += oh * ow * b.mid_ch * b.out_ch
    else:
        single = b.mid_ch == b.in_ch
        conv_out = b.out_ch if single else b.mid_ch
        macs = oh * ow * b.in_ch * conv_out * k2
        se_width = conv_out
        if not single:
            macs += oh * ow * b.mid_ch * b.out_ch
    if b.se_ch:
        macs += 2 * se_width * b.se_ch
    if projection_shortcut and not b.has_identity:
        macs += oh * ow * b.in_ch * b.out_ch
    return macs, oh, ow


def plan_macs(
    p: ModelPlan,
    image_size: int | tuple[int, int],
    num_classes: int = 1000,
    in_chans: int = 3,
) -> dict[str, int]:
    """Per-part MACs: ``stem``, ``stages.0`` .. ``stages.N``, ``head``, ``classifier``."""
    projection_shortcut = p.shortcut == "projection"
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    h, w = _out(h, 2), _out(w, 2)
    parts: dict[str, int] = {"stem": h * w * in_chans * p.stem_ch * 9}
    for b in p.blocks:
        macs, h, w = block_macs(b, h, w, projection_shortcut)
        key = f"stages.{b.stage}"
        parts[key] = parts.get(key, 0) + macs
    parts["head"] = h * w * p.blocks[-1].out_ch * p.head_ch
    parts["classifier"] = p.head_ch * num_classes
    return parts


def count_macs(model: nn.Module, input_size: tuple[int, ...], depth: int = 2) -> dict[str, int]:
    """Hook-based MAC count of ``model`` for one image of ``input_size`` (C, H, W).

    Runs on a meta-device copy of the structure, so it is cheap even for B7 at 600 px. Returns the
    MACs grouped by the first ``depth`` components of the module names (plus ``"total"``).
    """
    meta = _to_meta(model)
    totals: dict[str, int] = defaultdict(int)
    handles = []

    def hook(name: str):
        def fn(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if isinstance(mod, nn.Conv2d):
                per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                macs = out[0].numel() * per_out
            else:
                macs = out[0].numel() * mod.in_features
            key = ".".join(name.split(".")[:depth])
            totals[key] += int(macs)
            totals["total"] += int(macs)

        return fn

    for name, mod in meta.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            meta.eval()(torch.empty((1, *input_size), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return dict(totals)


def _to_meta(model: nn.Module) -> nn.Module:
    with torch.device("meta"):
        clone = copy.deepcopy(model) if _is_meta(model) else None
    if clone is not None:
        return clone
    state = {id(p): p for p in list(model.parameters()) + list(model.buffers())}
    memo = {k: torch.empty_like(v, device="meta") for k, v in state.items()}
    return copy.deepcopy(model, memo)


def _is_meta(model: nn.Module) -> bool:
    return all(p.device.type == "meta" for p in model.parameters())
