"""The public model API: ``create_model``, ``load_model`` / ``save_model`` and ``resolve_model``.

``create_model`` builds a registered architecture (``effnet.registry``, which knows nothing of
weights) and loads weights into it (``effnet.weights``). ``resolve_model`` is the one rule for what
a user may pass as MODEL: a model, a registered name, an effnet model file or a training run folder.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.model import EfficientNetFeatures
from effnet.registry import build_model, get_variant
from effnet.weights.pretrained import apply_pretrained, read_pretrained
from effnet.weights.serialize import load_model, save_model

__all__ = ["create_model", "load_model", "resolve_model", "save_model"]


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
        pretrained: a weight file (effnet, timm, torchvision or lukemelas format; detected), or
            ``"timm"`` / ``"torchvision"`` / ``"timm:NAME"`` to download upstream weights.
        padding: ``"symmetric"`` (PyTorch) or ``"same"`` (TensorFlow, for TF-trained weights);
            ``None`` picks what the weights need.
        shortcut: ``"projection"`` gives every block without an identity path a 1x1 conv shortcut.
        global_pool: the head's pooling, by timm's names: ``"avg"``, ``"max"``, ``"avgmax"``,
            ``"catavgmax"`` (twice the features) or ``""`` (none: with ``num_classes=0``,
            ``forward`` returns the feature map).
    """
    get_variant(name)  # an unknown name fails before any weights are read
    weights = None if pretrained is None else read_pretrained(pretrained, name)
    if weights is not None:  # the numerics the weights were trained with, unless overridden
        padding = padding or weights.padding
        bn_eps = weights.bn_eps if bn_eps is None else bn_eps
    model = build_model(
        name,
        num_classes=num_classes,
        in_chans=in_chans,
        phi=phi,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        width_mult=width_mult,
        depth_mult=depth_mult,
        image_size=image_size,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        act=act,
        se=se,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
        padding=padding,
        shortcut=shortcut,
        global_pool=global_pool,
        device=device,
    )
    if weights is not None:
        apply_pretrained(model, weights)
    return EfficientNetFeatures(model, tuple(out_indices)) if features_only else model


def resolve_model(model_or_path: Any, *, pretrained: str | None = None) -> nn.Module:
    """An ``nn.Module`` as is; an existing path through ``load_model``; otherwise a model name.

    A missing path (something with a folder separator or a file suffix) is a
    ``FileNotFoundError``; an unknown name is a ``ValueError`` suggesting close names; files that
    hold programs rather than effnet weights (TorchScript, torch.export, ONNX) are refused.
    """
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    if not isinstance(model_or_path, str | os.PathLike):
        raise ValueError(f"expected a model, a model name or a path, got {model_or_path!r}")
    text = os.fspath(model_or_path)
    path = Path(text)
    if path.exists():
        if pretrained is not None:
            raise ValueError(f"--pretrained applies to model names, not to the file {text!r}")
        refuse_programs(path)
        return load_model(path)
    if os.sep in text or (os.altsep and os.altsep in text) or path.suffix:
        raise FileNotFoundError(f"{text}: no such file or folder")
    return create_model(text, pretrained=pretrained)


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
