"""Translate upstream state dicts (timm, torchvision, lukemelas) into effnet's parameter names.

The format is detected from the keys. Each converter maps names only (tensors are shared, never
reshaped), and records where every effnet key came from so that a mismatch can name the source key.
effnet's layout: ``stem``, ``stages.S.J.{expand,dw,conv,se,project}``, ``head``, ``classifier``,
where each conv module is ``.conv`` + ``.bn`` and SE is ``.se.reduce`` / ``.se.expand``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

FORMATS = ("effnet", "timm", "torchvision", "lukemelas")


@dataclass(frozen=True)
class Converted:
    """A state dict in effnet names; ``origin`` maps each effnet key to its source key."""

    state_dict: dict[str, torch.Tensor]
    origin: dict[str, str]
    format: str


def detect_format(state: dict[str, torch.Tensor]) -> str:
    """Return which library wrote ``state``: one of ``FORMATS``."""
    keys = set(state)
    if "stem.conv.weight" in keys:
        return "effnet"
    if "conv_stem.weight" in keys:
        return "timm"
    if "_conv_stem.weight" in keys:
        return "lukemelas"
    if "features.0.0.weight" in keys:
        return "torchvision"
    first = next(iter(state), "<empty>")
    raise ValueError(
        f"unknown checkpoint format (first key {first!r}); expected an effnet, timm, "
        "torchvision or lukemelas/EfficientNet-PyTorch EfficientNet state dict"
    )


def _split(key: str, pattern: str) -> re.Match[str]:
    m = re.fullmatch(pattern, key)
    if m is None:
        raise ValueError(f"unexpected key {key!r} in checkpoint")
    return m


class _Builder:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.state: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}

    def put(self, new: str, old: str, value: torch.Tensor) -> None:
        self.state[new] = value
        self.origin[new] = old

    def done(self) -> Converted:
        return Converted(self.state, self.origin, self.fmt)


def _group(state: dict[str, torch.Tensor], pattern: str) -> dict[tuple[int, ...], dict[str, str]]:
    """Group block keys by their numeric index tuple: {(s, j): {suffix: full key}}."""
    groups: dict[tuple[int, ...], dict[str, str]] = {}
    for key in state:
        m = re.fullmatch(pattern, key)
        if m:
            idx = tuple(int(g) for g in m.groups()[:-1])
            groups.setdefault(idx, {})[m.groups()[-1]] = key
    return dict(sorted(groups.items()))


def _map_module(
    b: _Builder, state: dict[str, torch.Tensor], keys: dict[str, str], prefix: str, table: dict
) -> None:
    """Map every ``suffix`` of one block through ``table`` (source module -> effnet module)."""
    for suffix, full in keys.items():
        module, _, leaf = suffix.rpartition(".")
        if module not in table:
            raise ValueError(f"unexpected key {full!r} in {b.fmt} checkpoint")
        b.put(f"{prefix}.{table[module]}.{leaf}", full, state[full])


# -- timm ----------------------------------------------------------------------------------------

_TIMM_SE = {"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
_TIMM_BLOCKS = {  # block class (told apart by its conv names) -> source module -> effnet module
    "inverted_residual": {
        "conv_pw": "expand.conv",
        "bn1": "expand.bn",
        "conv_dw": "dw.conv",
        "bn2": "dw.bn",
        "conv_pwl": "project.conv",
        "bn3": "project.bn",
    },
    "depthwise_separable": {
        "conv_dw": "dw.conv",
        "bn1": "dw.bn",
        "conv_pw": "project.conv",
        "bn2": "project.bn",
    },
    "edge_residual": {
        "conv_exp": "conv.conv",
        "bn1": "conv.bn",
        "conv_pwl": "project.conv",
        "bn2": "project.bn",
    },
    "conv_bn_act": {"conv": "conv.conv", "bn1": "conv.bn"},
}


def _timm_kind(suffixes: set[str]) -> str:
    if "conv_pwl.weight" in suffixes:
        return "edge_residual" if "conv_exp.weight" in suffixes else "inverted_residual"
    if "conv_dw.weight" in suffixes:
        return "depthwise_separable"
    return "conv_bn_act"


def from_timm(state: dict[str, torch.Tensor]) -> Converted:
    b = _Builder("timm")
    top = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn"}
    top["classifier"] = "classifier"
    for key, value in state.items():
        if not key.startswith("blocks."):
            m = _split(key, r"(\w+)\.(\w+)")
            if m[1] not in top:
                raise ValueError(f"unexpected key {key!r} in timm checkpoint")
            b.put(f"{top[m[1]]}.{m[2]}", key, value)
    for (s, j), keys in _group(state, r"blocks\.(\d+)\.(\d+)\.(.+)").items():
        table = {**_TIMM_BLOCKS[_timm_kind(set(keys))], **_TIMM_SE}
        _map_module(b, state, keys, f"stages.{s}.{j}", table)
    return b.done()


# -- torchvision ---------------------------------------------------------------------------------


def from_torchvision(state: dict[str, torch.Tensor]) -> Converted:
    b = _Builder("torchvision")
    stages = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    last = stages[-1]  # features.0 is the stem, the last index the head conv
    for key, value in state.items():
        m = re.fullmatch(r"features\.(\d+)\.([01])\.(\w+)", key)
        if m and int(m[1]) in (0, last):
            part = "stem" if int(m[1]) == 0 else "head"
            b.put(f"{part}.{'conv' if m[2] == '0' else 'bn'}.{m[3]}", key, value)
        elif key.startswith("classifier."):
            b.put("classifier." + _split(key, r"classifier\.1\.(\w+)")[1], key, value)
        elif not re.match(r"features\.\d+\.\d+\.block\.", key):
            raise ValueError(f"unexpected key {key!r} in torchvision checkpoint")
    for (s, j), keys in _group(state, r"features\.(\d+)\.(\d+)\.block\.(.+)").items():
        subs: dict[int, dict[str, str]] = {}
        for suffix, full in keys.items():
            i, _, rest = suffix.partition(".")
            subs.setdefault(int(i), {})[rest] = full
        convs = [i for i, r in sorted(subs.items()) if "0.weight" in r]
        roles = _torchvision_roles(state, [subs[i]["0.weight"] for i in convs])
        table = dict(zip(convs, roles, strict=True))
        for i, rest_keys in subs.items():
            for rest, full in rest_keys.items():
                if rest.startswith("fc"):
                    new = {"fc1": "se.reduce", "fc2": "se.expand"}[rest.split(".")[0]]
                    leaf = rest.split(".", 1)[1]
                else:
                    if i not in table:
                        raise ValueError(f"unexpected key {full!r} in torchvision checkpoint")
                    sub, leaf = rest.split(".", 1)
                    new = f"{table[i]}.{'conv' if sub == '0' else 'bn'}"
                b.put(f"stages.{s - 1}.{j}.{new}.{leaf}", full, state[full])
    return b.done()


def _torchvision_roles(state: dict[str, torch.Tensor], conv_keys: list[str]) -> list[str]:
    """Name the conv layers of one torchvision block in order (MBConv vs Fused-MBConv)."""
    if len(conv_keys) == 3:
        return ["expand", "dw", "project"]
    depthwise = state[conv_keys[0]].shape[1] == 1 and state[conv_keys[0]].shape[-1] > 1
    if len(conv_keys) == 2:
        return ["dw", "project"] if depthwise else ["conv", "project"]
    if len(conv_keys) == 1:
        return ["conv"]
    raise ValueError(f"unexpected block layout at {conv_keys[0]!r} in torchvision checkpoint")


# -- lukemelas/EfficientNet-PyTorch (and the Lite forks that share its names) --------------------

_LUKEMELAS_BLOCK = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_se_reduce": "se.reduce",
    "_se_expand": "se.expand",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_LUKEMELAS_TOP = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}


def from_lukemelas(state: dict[str, torch.Tensor]) -> Converted:
    """lukemelas numbers blocks globally; a new stage starts where the output width changes
    (every EfficientNet stage has its own width, and blocks within a stage share it)."""
    b = _Builder("lukemelas")
    for key, value in state.items():
        if not key.startswith("_blocks."):
            m = _split(key, r"(\w+)\.(\w+)")
            if m[1] not in _LUKEMELAS_TOP:
                raise ValueError(f"unexpected key {key!r} in lukemelas checkpoint")
            b.put(f"{_LUKEMELAS_TOP[m[1]]}.{m[2]}", key, value)
    stage, j, prev_out = -1, 0, None
    for (n,), keys in _group(state, r"_blocks\.(\d+)\.(.+)").items():
        if "_project_conv.weight" not in keys:
            raise ValueError(f"block _blocks.{n} has no _project_conv.weight in checkpoint")
        out = state[keys["_project_conv.weight"]].shape[0]
        stage, j = (stage + 1, 0) if out != prev_out else (stage, j + 1)
        prev_out = out
        _map_module(b, state, keys, f"stages.{stage}.{j}", _LUKEMELAS_BLOCK)
    return b.done()


def to_lukemelas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """effnet names -> lukemelas names (the inverse map; used to test the importer)."""
    inv_top = {v: k for k, v in _LUKEMELAS_TOP.items()}
    inv_block = {v: k for k, v in _LUKEMELAS_BLOCK.items()}
    order = sorted({tuple(map(int, k.split(".")[1:3])) for k in state if k.startswith("stages.")})
    flat = {sj: n for n, sj in enumerate(order)}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if key.startswith("stages."):
            _, s, j, rest = module.split(".", 3)
            out[f"_blocks.{flat[(int(s), int(j))]}.{inv_block[rest]}.{leaf}"] = value
        else:
            out[f"{inv_top[module]}.{leaf}"] = value
    return out


def from_effnet(state: dict[str, torch.Tensor]) -> Converted:
    return Converted(dict(state), {k: k for k in state}, "effnet")


CONVERTERS: dict[str, Callable[[dict[str, torch.Tensor]], Converted]] = {
    "effnet": from_effnet,
    "timm": from_timm,
    "torchvision": from_torchvision,
    "lukemelas": from_lukemelas,
}


def convert_state_dict(state: dict[str, torch.Tensor]) -> Converted:
    """Detect the format of ``state`` and return it in effnet names."""
    return CONVERTERS[detect_format(state)](state)
