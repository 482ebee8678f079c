"""Calibration images for post-training quantization, shared by every INT8 path (ONNX Runtime,
ExecuTorch, LiteRT): a folder of images or ``digits``, through the model's own preprocessing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from effnet.data.datasets import load_data
from effnet.data.images import UnreadableImageError, is_image_file, open_rgb
from effnet.data.transforms import eval_transform

# fp32's top-2 softmax probabilities at least this far apart: the image is not a near-tie, and an
# INT8 file that keeps fp32's accuracy must give it the same top-1 (docs/deploy.md)
DECIDED_GAP = 0.05


def agreement_figures(want, got) -> tuple[float, float | None, int]:
    """Top-1 agreement of logits ``got`` with reference logits ``want`` (arrays or tensors,
    N x classes): over all images, over the images where the reference is decided (top-2
    probabilities at least DECIDED_GAP apart; None if there are none), and how many those are.
    A miss on a near-tie is a coin flip of rounding; a miss on a decided image is an error."""
    w = torch.as_tensor(np.asarray(want), dtype=torch.float32)
    g = torch.as_tensor(np.asarray(got), dtype=torch.float32)
    same = w.argmax(1) == g.argmax(1)
    if w.shape[1] > 1:
        top2 = w.softmax(1).topk(2, dim=1).values
        decided = top2[:, 0] - top2[:, 1] >= DECIDED_GAP
    else:
        decided = torch.ones_like(same)
    n = int(decided.sum())
    on_decided = float(same[decided].float().mean()) if n else None
    return float(same.float().mean()), on_decided, n


def agreement_text(agreement: float, on_decided: float | None, decided: int) -> str:
    """How a banner says it: "90.9% (100.0% on the 13 where fp32 is not a near-tie)"."""
    tail = (f" ({on_decided:.1%} on the {decided} where fp32 is not a near-tie)"
            if on_decided is not None else " (fp32 is a near-tie on every image)")  # fmt: skip
    return f"{agreement:.1%}{tail}"


def preprocessing(model, size: int):
    """The model's own eval transform at ``size``; a one-line error for a module without a
    ``pretrained_cfg`` (an FX-traced copy, say: set ``pretrained_cfg`` from the original)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        raise ValueError(
            f"{type(model).__name__} has no pretrained_cfg to preprocess calibration images with "
            "(copy it from the model it came from: traced.pretrained_cfg = model.pretrained_cfg)"
        )
    return eval_transform(cfg, size)


def calibration_arrays(source: str | os.PathLike, limit: int, transform) -> tuple[np.ndarray, int]:
    """(float32 array (N, C, H, W) of up to ``limit`` preprocessed images, unreadable count).

    ``source`` is ``digits`` (its training split) or a folder searched recursively in sorted
    order; any size or mode is fine (the preprocessing resizes and converts to RGB).
    """
    if os.fspath(source) == "digits":
        train = load_data("digits").train
        picked = [transform(train.images[i]) for i in range(min(limit, len(train)))]
        return torch.stack(picked).numpy(), 0
    root = Path(os.path.expanduser(os.fspath(source)))
    if not root.exists():
        raise FileNotFoundError(f"calibration folder {root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"calibration data {root} is not a folder (give a folder of images)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    picked, skipped = [], 0
    for f in files:
        if len(picked) == limit:
            break
        try:
            picked.append(transform(open_rgb(f)))
        except (UnreadableImageError, OSError):
            skipped += int(is_image_file(f))
    if not picked:
        what = f"{skipped} unreadable image(s)" if skipped else "no image files"
        raise ValueError(f"calibration folder {root}: no readable images ({what})")
    return torch.stack(picked).numpy(), skipped
