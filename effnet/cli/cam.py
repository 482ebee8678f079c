"""`effnet cam MODEL... IMAGE... --out DIR`: class activation map overlays and a Figure-7 grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.analysis.cam import cam_grid
from effnet.cli import CLIError
from effnet.cli.weights_flags import PRETRAINED_DEFAULT, add_weights_source
from effnet.data.images import is_image_file

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")

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
    p.set_defaults(func=run)


def _is_model(arg: str) -> bool:
    p = Path(arg)
    if p.is_dir() or p.suffix.lower() in MODEL_SUFFIXES:
        return True
    return not p.exists() and not is_image_file(p)  # a name (typos get the registry's hint)


def run(args: argparse.Namespace) -> int:
    model_args = [a for a in args.inputs if _is_model(a)]
    image_args = [a for a in args.inputs if a not in model_args]
    if not model_args:
        raise CLIError("no model given (a model name, weight file or run folder comes first)")
    if not image_args:
        raise CLIError("no image given")
    if not 0 <= args.alpha <= 1:
        raise CLIError(f"--alpha must be in [0, 1], got {args.alpha}")
    out = Path(args.out)
    results, grid = cam_grid(
        model_args,
        image_args,
        method=args.method,
        layer=args.layer,
        target=args.target,
        pretrained=args.pretrained,
        weights_source=args.weights_source,
        alpha=args.alpha,
        out_dir=out,
    )
    for r in results:
        print(f"{r.model:<28} {Path(r.image).name:<20} {r.class_name} ({r.prob:.1%}) -> {r.path}")
    print(f"grid: {out / 'cam_grid.png'} ({grid.width}x{grid.height})")
    return 0
