"""`effnet predict`'s parser (the implementation is ``effnet.cli.predict``)."""

from __future__ import annotations

import argparse
import textwrap

from effnet.cli.parsers import add_progress, device_check, exists_check, images_check
from effnet.cli.weights_flags import PRETRAINED_DEFAULT, add_weights_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images with a model file, run folder, ONNX file or model name",
        description=textwrap.fill(
            "Print the top classes and probabilities for each image, preprocessed exactly as the "
            "model's weights expect (resolution, crop, interpolation, mean/std from the model "
            "file). Folders are searched recursively for images; unreadable files are skipped "
            "with one warning line each. Exit status 0 if any image was classified, else 2."
        ),
        epilog=(
            "examples:\n"
            "  effnet predict runs/exp1 photos/\n"
            "  effnet predict efficientnet_lite0 --pretrained pip cat.jpg --topk 3\n"
            "  effnet predict lite0.onnx cat.jpg --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="CHECKPOINT_OR_NAME",
        help="run folder, .safetensors / .pt model file, exported .onnx file, or model name",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders")
    p.add_argument("--topk", type=int, default=5, metavar="K", help="classes per image (default 5)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON (an unreadable image is an {image, error} entry)",
    )
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="also write a table: image, rank, index, label, prob (or an error)",
    )
    p.add_argument(
        "--pretrained",
        metavar="SRC",
        default=None,
        help="weights for a model name: pip (real Lite0-2), timm, torchvision, a file or none; "
        + PRETRAINED_DEFAULT,
    )
    add_weights_source(p)
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    add_progress(p)
    checks = (exists_check("model", only_files=True), images_check("images"), device_check())
    p.set_defaults(func="effnet.cli.predict:run", checks=checks)
