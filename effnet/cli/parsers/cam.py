"""`effnet cam`'s parser (the implementation is ``effnet.cli.cam``)."""

from __future__ import annotations

import argparse

from effnet.cli.weights_flags import PRETRAINED_DEFAULT, add_weights_source

EPILOG = """\
examples:
  effnet cam efficientnet_lite0 cat.jpg --out cams           # real Lite0 weights (pip)
  effnet cam efficientnet_lite0 efficientnet_lite2 cat.jpg coffee.jpg --pretrained pip --out cams
  effnet cam runs/exp1 photo.png --method gradcam --layer stages.5 --target 3 --out cams

Arguments that are model names, weight files (.safetensors/.pt/.pth) or training run folders are
models; the rest are images. Each model x image gives one overlay PNG; cam_grid.png puts all
models side by side (rows = images), like Figure 7 of the EfficientNet paper. Exact CAM uses the
classifier weights on forward_features; Grad-CAM works on any layer (see `effnet info NAME`:
stem, stages.0 .. stages.N, head; default head)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam",
        help="class activation maps (CAM / Grad-CAM) of one or more models on images",
        description="Heatmap overlays of where models look; several models make one grid.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="MODEL_OR_IMAGE", help="models, then images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNGs")
    p.add_argument("--method", choices=("cam", "gradcam"), default="cam", help="default: cam")
    p.add_argument("--layer", default="head", help="Grad-CAM layer name (default: head)")
    p.add_argument("--target", help="class index or name (default: each model's top class)")
    p.add_argument(
        "--pretrained",
        help="weights for model *names*: pip, timm, torchvision, a file or none; "
        + PRETRAINED_DEFAULT,
    )
    add_weights_source(p)
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    p.set_defaults(func="effnet.cli.cam:run")
