"""`effnet export`'s parser (the implementation is ``effnet.cli.export``)."""

from __future__ import annotations

import argparse
import textwrap

from effnet.cli.parsers import exists_check
from effnet.cli.weights_flags import add_pretrained

# effnet.deploy.export's FORMATS, DEFAULT_OPSET and TOLERANCE (a test checks that they agree).
FORMATS = ("onnx", "torchscript", "safetensors", "pt2", "timm", "torchvision")
DEFAULT_OPSET = 17
TOLERANCE = 1e-4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, TorchScript, safetensors or torch.export, verified",
        description=textwrap.fill(
            "Export a model and check the exported file against PyTorch at batch 1 and 3 "
            f"(max abs diff < {TOLERANCE:g} x max(1, largest |logit|)). The file is written "
            "atomically: a failed export or verification leaves nothing behind. ONNX files have "
            "a dynamic batch axis and carry the model name, preprocessing and class names in "
            "their metadata."
        ),
        epilog=(
            "examples:\n"
            "  effnet export efficientnet_lite0 --pretrained pip --format onnx -o lite0.onnx\n"
            "  effnet export runs/exp1 --format torchscript -o exp1.pt\n"
            "  effnet export model.safetensors --format onnx -o model.onnx --image-size 320"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL_OR_CHECKPOINT",
        help="registered model name, effnet .safetensors model file, or training run folder",
    )
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="output format")
    p.add_argument("--output", "-o", required=True, metavar="PATH", help="file to write")
    add_pretrained(p)
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="input resolution of the exported graph (default: the model's own)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        metavar="N",
        help="ONNX opset (default: %(default)s)",
    )
    p.add_argument(
        "--dynamic-size",
        action="store_true",
        help="ONNX: make height and width dynamic too (multiples of 32 for TF-padded models)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the comparison of the exported file with PyTorch",
    )
    p.set_defaults(func="effnet.cli.export:run", checks=(exists_check("model", only_files=True),))
