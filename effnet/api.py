"""The public model API: ``create_model``, ``list_models``, ``load_model`` / ``save_model``,
``resolve_model`` and ``choose_pretrained``.

``create_model`` builds a registered architecture (``effnet.registry``, which knows nothing of
weights) and loads weights into it (``effnet.weights``). ``resolve_model`` is the one rule for what
a user may pass as MODEL: a model, a registered name, an effnet model file or a training run folder.
``choose_pretrained`` is the one rule for which weights a command gives a model *name*.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet import registry
from effnet.data.transforms import eval_transform, train_transform
from effnet.model import EfficientNetFeatures
from effnet.registry import build_model, get_variant
from effnet.weights.catalog import default_weights, how_to_get, weight_sources
from effnet.weights.pretrained import (
    PretrainedWeights,
    WeightsSourceWarning,
    apply_pretrained,
    check_weights_source,
    read_pretrained,
)
from effnet.weights.serialize import load_model, save_model

__all__ = [
    "choose_pretrained",
    "create_model",
    "create_transform",
    "list_models",
    "load_model",
    "random_weights_note",
    "resolve_model",
    "save_model",
]
Pretrained = bool | str | os.PathLike | Mapping | None


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered model names matching the shell-style ``pattern`` (e.g. ``"*lite*"``).

    ``pretrained=True``: only the models with published weights. Where each set comes from
    (installed locally or to download) is ``effnet.weights.weight_sources(name)``; the CLI shows
    it with ``effnet models --pretrained``.
    """
    names = registry.list_models(pattern)
    return [n for n in names if weight_sources(n)] if pretrained else names


def _pretrained_weights(
    name: str, pretrained: Pretrained, weights_source: str, scaled: dict[str, Any]
) -> PretrainedWeights | None:
    """What ``create_model``'s ``pretrained`` means: True = the default weights, False = none."""
    check_weights_source(weights_source)
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        changed = {k: v for k, v in scaled.items() if v is not None}
        if changed:
            raise ValueError(
                f"pretrained=True loads {name}'s published weights, which do not fit a model "
                f"built with {changed}; pass pretrained= weights made for it"
            )
        default = default_weights(name)
        if default is None:
            raise ValueError(f"{name} has no default weights; pass pretrained= {how_to_get(name)}")
        pretrained = default.source
    return read_pretrained(pretrained, name, weights_source=weights_source)


def _weights_numerics(weights, padding, bn_eps, num_classes) -> tuple:
    """Padding and BN eps the weights were trained with (unless overridden; a one-line warning
    where the source was assumed), and their classifier's size when ``num_classes`` is None."""
    if weights is not None:
        if weights.assumed and (padding is None or bn_eps is None):
            warnings.warn(weights.assumed, WeightsSourceWarning, stacklevel=3)
        padding = padding or weights.padding
        bn_eps = weights.bn_eps if bn_eps is None else bn_eps
    if num_classes is None:
        head = weights.state_dict.get("classifier.weight") if weights is not None else None
        num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    return padding, bn_eps, num_classes


def create_model(
    name: str | None = None,
    *,
    spec: Any = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    pretrained: Pretrained = None,
    weights_source: str = "auto",
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
    features_only: bool = False,
    out_indices: tuple[int, ...] = (0, 1, 2, 3, 4),
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build a registered EfficientNet, optionally scaled, modified and loaded with weights.

    Args:
        name: a name from ``list_models()``, or a baseline alias (``efficientnet``,
            ``efficientnet_lite``, ``efficientnetv2``) to scale with ``phi``.
        phi, alpha, beta, gamma: compound scaling on top of the variant: depth x alpha^phi,
            width x beta^phi, resolution x gamma^phi (defaults 1.2, 1.1, 1.15; phi defaults to 1
            when only alpha/beta/gamma are given; ``effnet.scaling.resolve_scaling``).
        width_mult, depth_mult: explicit multipliers that replace the variant's own (not together
            with compound scaling). ``image_size``: the evaluation resolution.
        pretrained: ``True``: the model's default weights (``effnet.weights.default_weights``:
            the pip package for Lite0-2 when installed, else Google's checkpoint via timm,
            downloaded once); ``False`` / ``None``: none. Or a weight file (effnet, timm,
            torchvision or lukemelas format; detected), a state dict, ``"pip"``, or ``"timm"`` /
            ``"torchvision"`` / ``"timm:NAME[.TAG]"`` to download upstream weights.
        weights_source: how the weights were trained (sets padding, BN eps, mean/std): ``"tf"``
            (TF-ported: SAME padding, BN eps 1e-3), ``"torch"`` (symmetric padding) or ``"auto"``:
            detected where the file tells (``effnet.weights.pretrained``); otherwise PyTorch is
            assumed and a one-line ``WeightsSourceWarning`` says so.
        num_classes: ``None``: the weights' own classifier (a fine-tuned file keeps its classes
            and names), else 1000; a number unlike the weights' gives a new head (fine-tuning).
        padding: ``"symmetric"`` (PyTorch) or ``"same"`` (TensorFlow, for TF-trained weights);
            ``None`` picks what the weights need.
        shortcut: ``"projection"`` gives every block without an identity path a 1x1 conv shortcut.
        global_pool: the head's pooling, by timm's names: ``"avg"``, ``"max"``, ``"avgmax"``,
            ``"catavgmax"`` (twice the features) or ``""`` (none: with ``num_classes=0``,
            ``forward`` returns the feature map).
        spec: instead of ``name``, a stage table: a ``FamilySpec``, a registry ``Variant`` or a
            spec file (``*.json``, as ``effnet nas`` writes; ``name`` may also be that path).
    """
    name = _name_or_spec(name, spec)
    get_variant(name)  # an unknown name fails before any weights are read
    scaled = dict(phi=phi, alpha=alpha, beta=beta, gamma=gamma)
    scaled.update(width_mult=width_mult, depth_mult=depth_mult)
    weights = _pretrained_weights(registry.model_label(name), pretrained, weights_source, scaled)
    padding, bn_eps, num_classes = _weights_numerics(weights, padding, bn_eps, num_classes)
    model = build_model(
        name, num_classes=num_classes, in_chans=in_chans, **scaled, image_size=image_size,
        drop_rate=drop_rate, drop_path_rate=drop_path_rate, act=act, se=se, bn_eps=bn_eps,
        bn_momentum=bn_momentum, padding=padding, shortcut=shortcut, global_pool=global_pool,
        device=device,
    )
    if weights is not None:
        apply_pretrained(model, weights)
    return EfficientNetFeatures(model, tuple(out_indices)) if features_only else model


def _name_or_spec(name: str | None, spec: Any) -> Any:
    if (name is None) == (spec is None):
        raise ValueError(f"give create_model a model name or spec=, not both or neither: {name!r}")
    return spec if spec is not None else name


def resolve_model(
    model_or_path: Any, *, pretrained: Pretrained = None, weights_source: str = "auto"
) -> nn.Module:
    """An ``nn.Module`` as is; an existing path through ``load_model``; otherwise a model name.

    A missing path (something with a folder separator or a file suffix) is a
    ``FileNotFoundError``; an unknown name is a ``ValueError`` suggesting close names; files that
    hold programs rather than effnet weights (TorchScript, torch.export, ONNX) are refused.
    ``pretrained`` / ``weights_source`` go to ``create_model`` for a name.
    """
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    if not isinstance(model_or_path, str | os.PathLike):
        raise ValueError(f"expected a model, a model name or a path, got {model_or_path!r}")
    text = os.fspath(model_or_path)
    path = Path(text)
    if path.exists():
        if pretrained is not None and pretrained is not False:
            raise ValueError(f"--pretrained applies to model names, not to the file {text!r}")
        if check_weights_source(weights_source) != "auto":
            raise ValueError(f"--weights-source applies to --pretrained weights, not to {text!r}")
        refuse_programs(path)
        return load_model(path)
    if _looks_like_path(text):
        raise FileNotFoundError(f"{text}: no such file or folder")
    return create_model(text, pretrained=pretrained, weights_source=weights_source)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or bool(os.altsep and os.altsep in text) or bool(Path(text).suffix)


def choose_pretrained(
    model: Any, pretrained: Any = None, *, what: str = "its output", required: bool = True
) -> Any:
    """The one rule for the weights a command gives MODEL (``effnet predict``, ``cam``, ``export``).

    A model, file or run folder keeps its own weights (``pretrained`` passes through, so a
    ``--pretrained`` given with a file is refused later). For a model *name*: ``"none"`` (the
    CLI's word) means random weights on purpose (returns ``False``); any other ``pretrained`` is a
    source or file, returned as is. Without one, the model's default weights are used when they
    are on this machine (``default_weights(name, local_only=True)``: an installed Lite0-2 pip
    package or an earlier download); nothing is downloaded unless asked for. Otherwise, when
    random weights would make ``what`` meaningless (``required``: predictions, CAMs), this raises
    a one-line ``ValueError`` saying how to get weights; else it returns ``False`` and the caller
    says so with ``random_weights_note`` before its report.
    """
    if isinstance(model, nn.Module) or not isinstance(model, str | os.PathLike):
        return pretrained
    text = os.fspath(model)
    if Path(text).exists() or _looks_like_path(text):
        return pretrained
    if pretrained is not None:
        return False if pretrained in ("none", False) else pretrained
    default = default_weights(text, local_only=True)  # unknown names fail here, with suggestions
    if default is not None:
        return default.source
    if required:
        raise ValueError(random_weights_note(text, f"random weights make {what} meaningless"))
    return False


def random_weights_note(name: str, consequence: str) -> str:
    """One line: ``name`` has no default weights here, ``consequence``, and how to get some."""
    return (
        f"{name}: no default weights on this machine, and {consequence}; pass --pretrained "
        f"{how_to_get(name)}, a weight file, or none (random weights on purpose)"
    )


def refuse_programs(path: Path) -> None:
    """TorchScript / torch.export / ONNX files hold programs, not effnet weights: say so."""
    kind = None
    if path.suffix == ".onnx":
        kind = "an ONNX file (effnet.predict and `effnet predict` run it)"
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") for n in names):
            kind = "a TorchScript file (run it with torch.jit.load)"
        elif path.suffix == ".pt2" or any(n.endswith("archive_format") for n in names):
            kind = "a torch.export program (run it with torch.export.load)"
    if kind is not None:
        raise ValueError(
            f"{path} is {kind}; effnet reads effnet model files, run folders and .onnx files"
        )


def create_transform(model_or_cfg: Any, train: bool = False, image_size: int | None = None, **aug):
    """The preprocessing a model ships with, as a torchvision ``transforms.v2`` pipeline.

    ``model_or_cfg``: a model (its ``pretrained_cfg``: the weights' own mean/std, crop and
    interpolation), a data config dict (``effnet.data_config(name)``), or a model name.
    ``train=False`` gives the evaluation transform (resize, centre crop, normalise) that
    ``effnet predict`` and ``eval`` use; ``train=True`` the training one (random resized crop,
    flip; ``aug`` takes ``augment``, ``hflip``, ``scale_min``, ``magnitude`` as in training).
    ``image_size`` defaults to the config's input size.
    """
    if isinstance(model_or_cfg, nn.Module):
        cfg = dict(getattr(model_or_cfg, "pretrained_cfg", None) or {})
    elif isinstance(model_or_cfg, Mapping):
        cfg = dict(model_or_cfg)
    elif isinstance(model_or_cfg, str):
        cfg = registry.data_config(model_or_cfg)
    else:
        raise ValueError(f"expected a model, a data config or a model name, got {model_or_cfg!r}")
    missing = [k for k in ("input_size", "mean", "std") if k not in cfg]
    if missing:
        raise ValueError(f"data config lacks {', '.join(missing)}")
    if not train:
        if aug:
            raise ValueError(f"augmentation options apply to train=True, got {sorted(aug)}")
        return eval_transform(cfg, image_size)
    return train_transform(cfg, image_size or cfg["input_size"][-1], **aug)
