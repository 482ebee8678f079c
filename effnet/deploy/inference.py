"""Classify images with a model's own preprocessing: ``effnet.predict``.

A model comes from a registered name (random init, or ``pretrained=``), an effnet model file, a
training run folder (``effnet.api.resolve_model``), an ONNX file written by ``effnet export``, or
an ``nn.Module``. Each image is
decoded by ``open_rgb`` and preprocessed with the weights' own data config (resolution, crop,
interpolation, mean/std), so predictions match the accuracy the weights were published with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from effnet import api
from effnet.data.images import is_image_file, open_rgb
from effnet.data.transforms import eval_transform
from effnet.deploy.export.common import input_channels
from effnet.deploy.export.onnx import OnnxClassifier
from effnet.deploy.optimize import optimize_for_inference
from effnet.registry import data_config

ON_ERROR = ("raise", "skip")


def resolve_model(
    model_or_path: Any, *, pretrained: Any = None, weights_source: str = "auto"
) -> nn.Module:
    """``effnet.api.resolve_model``, plus ``.onnx`` files written by ``effnet export``."""
    path = Path(model_or_path) if isinstance(model_or_path, str | os.PathLike) else None
    if path is not None and path.suffix == ".onnx" and path.exists():
        if pretrained is not None and pretrained is not False:
            raise ValueError(f"--pretrained applies to model names, not to the file {path}")
        return OnnxClassifier(path)
    return api.resolve_model(model_or_path, pretrained=pretrained, weights_source=weights_source)


def class_names(model: nn.Module) -> list[str]:
    """The model's class names, or ``class 0``, ``class 1``, ... when it carries none."""
    n = _num_classes(model)
    names = list(getattr(model, "class_names", None) or [])
    if len(names) == n:
        return names
    return [f"class {i}" for i in range(n)]


def _num_classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", 0)  # effnet models and OnnxClassifier carry it
    if not n:
        raise ValueError("this model has no classifier (num_classes=0); nothing to predict")
    return int(n)


def collect_images(items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """(name, source) pairs: files as given, folders walked (image suffixes, sorted), arrays."""
    for i, item in enumerate(items):
        if isinstance(item, Image.Image | np.ndarray | torch.Tensor):
            yield f"<image {i}>", item
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            for p in files:
                yield str(p), p
        else:
            yield str(path), path


def _to_pil(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
            raise ValueError(f"an image array must be HxW or HxWx3, got shape {source.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(np.asarray(arr, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    return open_rgb(source)


def check_model_input(model: nn.Module, batch: torch.Tensor) -> None:
    """Refuse a batch whose layout does not match the model's input, with a one-line error."""
    in_chans = input_channels(model)
    if batch.ndim != 4 or batch.shape[1] != in_chans:
        raise ValueError(
            f"input of shape {tuple(batch.shape)} does not fit the model, which takes "
            f"(batch, {in_chans}, height, width)"
        )


def _check_options(topk: Any, device: Any, batch_size: Any, on_error: Any) -> torch.device:
    """``predict``'s options checked (one-line ValueErrors); the device as a torch.device."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def predict(
    model_or_path: Any,
    images: Any,
    *,
    topk: int = 5,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    pretrained: Any = None,
    weights_source: str = "auto",
    on_error: str = "raise",
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Classify images; one dict per image: ``{"image", "top": [{"index", "label", "prob"}]}``.

    Args:
        model_or_path: a model, a registered name, an effnet model file / run folder, or ``.onnx``.
        images: a path, a folder (walked), a PIL image or HxWx3 array, or a list of those.
        topk: how many classes to report per image (capped at the number of classes).
        pretrained, weights_source: weights for a model *name*, as in ``create_model``.
        on_error: ``"raise"`` stops at the first unreadable image; ``"skip"`` records it as
            ``{"image", "error"}`` and goes on.
        progress: called with the number of images done (read or skipped) after each batch.
    """
    dev = _check_options(topk, device, batch_size, on_error)
    model = resolve_model(model_or_path, pretrained=pretrained, weights_source=weights_source)
    in_chans = input_channels(model)
    if in_chans != 3:
        raise ValueError(f"predict feeds RGB images; this model takes {in_chans} input channels")
    transform = eval_transform(data_config(model))
    names = class_names(model)
    k = min(topk, len(names))
    was_training = model.training
    model.eval().to(dev)
    # effnet's fast inference paths, on a copy: the caller's model is left as it was.
    plain = isinstance(model, OnnxClassifier) or not isinstance(model, nn.Module)
    net = model if plain else optimize_for_inference(model)
    if isinstance(images, str | os.PathLike | Image.Image | np.ndarray | torch.Tensor):
        images = [images]
    results: list[dict[str, Any]] = []
    pending: list[tuple[int, torch.Tensor]] = []
    reported = [0]  # images (classified or skipped) passed on to ``progress``

    def report() -> None:
        if progress is not None and len(results) > reported[0]:
            progress(len(results) - reported[0])
            reported[0] = len(results)

    def flush() -> None:
        if not pending:
            return
        batch = torch.stack([t for _, t in pending]).to(dev)
        check_model_input(model, batch)
        with torch.inference_mode():
            probs = net(batch).float().softmax(dim=1).cpu()
        top_p, top_i = probs.topk(k, dim=1)
        for (slot, _), ps, ix in zip(pending, top_p.tolist(), top_i.tolist(), strict=True):
            results[slot]["top"] = [
                {"index": i, "label": names[i], "prob": p} for p, i in zip(ps, ix, strict=True)
            ]
        pending.clear()
        report()

    try:
        for name, source in collect_images(images):
            try:
                tensor = transform(_to_pil(source))
            except (ValueError, OSError) as e:
                if on_error == "raise":
                    raise
                results.append({"image": name, "error": str(e).splitlines()[0]})
                continue
            results.append({"image": name})
            pending.append((len(results) - 1, tensor))
            if len(pending) >= batch_size:
                flush()
        flush()
        report()
    finally:
        model.train(was_training)
    return results
