"""effnet state dicts in upstream names: ``to_timm`` and ``to_torchvision`` (``effnet.convert``).

The inverse of ``effnet.weights.convert``'s importers, for the architectures that exist upstream:
names only, tensors shared, so effnet -> timm -> effnet gives back the very same tensors. The
model is checked against its registry architecture first (a model scaled, re-activated or given
projection shortcuts has no upstream twin), and a one-line ``ValueError`` says why not.

Upstream numerics depend on more than the keys: timm's ``tf_*`` models pad like TensorFlow
(effnet ``padding="same"``) with BN eps 1e-3, its other models pad symmetrically with 1e-5;
torchvision pads symmetrically, with eps 1e-5 for B0-B4 and 1e-3 for B5-B7 and V2.
``timm_name`` / ``torchvision_name`` say which upstream model to load the weights into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from effnet.model import EfficientNet
from effnet.registry import ALIASES, build_model
from effnet.scaling import ModelPlan
from effnet.weights.convert import _TIMM_BLOCKS, _TIMM_SE

_V1 = [f"efficientnet_b{i}" for i in range(9)] + ["efficientnet_l2"]
_LITE = [f"efficientnet_lite{i}" for i in range(5)]
_V2 = [f"efficientnetv2_{s}" for s in ("s", "m", "l", "xl")]
_V2_BASE = [f"efficientnetv2_b{i}" for i in range(4)]
# effnet name -> timm's symmetric-padding model (None: timm has only the TF port) ...
TIMM_NAMES: dict[str, str | None] = {
    **{n: n for n in _V1 + _LITE + _V2},
    **dict.fromkeys(_V2_BASE),
}
# ... and its TF port is "tf_" + the effnet name.
TORCHVISION_NAMES = {
    **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)},
    **{f"efficientnetv2_{s}": f"efficientnet_v2_{s}" for s in ("s", "m", "l")},
}


def _architecture(plan: ModelPlan) -> tuple:
    """What the weights' shapes and the forward depend on (not BN, padding or drop path)."""
    blocks = tuple(replace(b, drop_path=0.0) for b in plan.blocks)
    return plan.stem_ch, plan.head_ch, plan.act, plan.shortcut, blocks


def upstream_arch(model: nn.Module, library: str, table: dict) -> str:
    """The effnet registry name of ``model`` when ``library`` has that architecture."""
    if not isinstance(model, EfficientNet):
        raise ValueError(f"to_{library} takes an effnet EfficientNet, got {type(model).__name__}")
    name = ALIASES.get(model.record.name, model.record.name)
    if name not in table:
        raise ValueError(
            f"{library} has no {model.record.name!r} architecture; to_{library} covers "
            f"{', '.join(table)}"
        )
    plan = model.plan
    ref = build_model(
        name,
        num_classes=0,
        device="meta",
        padding=plan.padding,
        bn_eps=plan.bn_eps,
        bn_momentum=plan.bn_momentum,
    ).plan
    if _architecture(ref) != _architecture(plan):
        raise ValueError(
            f"this {name} differs from the published architecture (width, depth, activation, SE "
            f"or shortcuts), so {library} has no model to load it into"
        )
    return name


def timm_name(model: nn.Module) -> str:
    """The timm model whose architecture and padding match ``model`` (``tf_*``: TF padding)."""
    name = upstream_arch(model, "timm", TIMM_NAMES)
    plain = TIMM_NAMES[name]
    return f"tf_{name}" if model.plan.padding == "same" or plain is None else plain


def torchvision_name(model: nn.Module) -> str:
    """The ``torchvision.models`` builder with ``model``'s architecture."""
    return TORCHVISION_NAMES[upstream_arch(model, "torchvision", TORCHVISION_NAMES)]


def _blocks(state: dict[str, torch.Tensor]) -> dict[tuple[int, int], dict[str, str]]:
    """effnet block keys by (stage, block): {(s, j): {module path in the block: full key}}."""
    out: dict[tuple[int, int], dict[str, str]] = {}
    for key in state:
        if key.startswith("stages."):
            _, s, j, rest = key.split(".", 3)
            out.setdefault((int(s), int(j)), {})[rest] = key
    return out


def _timm_block_table(rests: set[str]) -> dict[str, str]:
    """effnet module -> timm module for one block (the inverse of the importer's table)."""
    if "expand.conv.weight" in rests:
        kind = "inverted_residual"
    elif "dw.conv.weight" in rests:
        kind = "depthwise_separable"
    elif "project.conv.weight" in rests:
        kind = "edge_residual"
    else:
        kind = "conv_bn_act"
    return {ours: theirs for theirs, ours in {**_TIMM_BLOCKS[kind], **_TIMM_SE}.items()}


def _rename(key: str, module: str, table: dict[str, str]) -> str:
    if module not in table:
        raise ValueError(f"effnet key {key!r} has no upstream counterpart")
    return table[module]


BlockNames = Callable[[int, int, dict[str, str]], dict[str, str]]


def _convert(state: dict[str, torch.Tensor], top: dict[str, str], block: BlockNames) -> dict:
    """Rename the stem / head / classifier keys through ``top`` and each block's keys through
    ``block(s, j, {path in block: key}) -> {key: new key}``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith("stages."):
            module, _, leaf = key.rpartition(".")
            out[f"{_rename(key, module, top)}.{leaf}"] = value
    for (s, j), keys in _blocks(state).items():
        for key, new in block(s, j, keys).items():
            out[new] = state[key]
    return out


def _timm_block(s: int, j: int, keys: dict[str, str]) -> dict[str, str]:
    table = _timm_block_table(set(keys))
    names = {}
    for rest, key in keys.items():
        module, _, leaf = rest.rpartition(".")
        names[key] = f"blocks.{s}.{j}.{_rename(key, module, table)}.{leaf}"
    return names


def to_timm(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict in timm's names, for ``timm.create_model(timm_name(model))``
    with the same ``num_classes``, ``in_chans`` and ``global_pool``. Tensors are shared."""
    upstream_arch(model, "timm", TIMM_NAMES)
    top = {"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head", "head.bn": "bn2"}
    top["classifier"] = "classifier"
    return _convert(model.state_dict(), top, _timm_block)


_TV_ORDER = ("expand", "dw", "conv", "se", "project")  # torchvision's layer order in a block
_TV_PARTS = {"conv": "0", "bn": "1", "reduce": "fc1", "expand": "fc2"}


def _torchvision_block(s: int, j: int, keys: dict[str, str]) -> dict[str, str]:
    """``block.I.0`` / ``block.I.1`` (conv / BN) or ``block.I.fc1|fc2`` (SE) per key."""
    roles = {rest.split(".")[0] for rest in keys}
    layers = [r for r in _TV_ORDER if r in roles]
    names = {}
    for rest, key in keys.items():
        role, sub, leaf = rest.split(".", 2)
        fits = sub in (("reduce", "expand") if role == "se" else ("conv", "bn"))
        if role not in layers or not fits:
            raise ValueError(f"effnet key {key!r} has no upstream counterpart")
        names[key] = f"features.{s + 1}.{j}.block.{layers.index(role)}.{_TV_PARTS[sub]}.{leaf}"
    return names


def to_torchvision(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict in torchvision's names, for
    ``getattr(torchvision.models, torchvision_name(model))(num_classes=model.num_classes)``."""
    upstream_arch(model, "torchvision", TORCHVISION_NAMES)
    if model.in_chans != 3 or model.num_classes == 0 or model.pool.pool_type != "avg":
        raise ValueError(
            "torchvision's EfficientNet takes 3 input channels and has an average-pooled "
            f"classifier; got in_chans={model.in_chans}, num_classes={model.num_classes}, "
            f"global_pool={model.pool.pool_type!r}"
        )
    last = len(model.stages) + 1  # features.0 is the stem, features.last the head conv
    top = {"stem.conv": "features.0.0", "stem.bn": "features.0.1", "classifier": "classifier.1"}
    top.update({"head.conv": f"features.{last}.0", "head.bn": f"features.{last}.1"})
    return _convert(model.state_dict(), top, _torchvision_block)
