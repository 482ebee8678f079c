"""`effnet export`'s parser (the implementation is ``effnet.cli.export``)."""

from __future__ import annotations

import argparse
import textwrap

from effnet.cli import CLIError
from effnet.cli.parsers import exists_check
from effnet.cli.weights_flags import add_pretrained

# effnet.deploy.export's FORMATS, DEFAULT_OPSET, TOLERANCE, DEFAULT_IMAGES, FLOAT_GROUPS and
# DEFAULT_KEEP_FLOAT (a test checks that they agree).
FORMATS = (
    "onnx", "torchscript", "safetensors", "pt2", "executorch", "tflite", "timm", "torchvision",
)  # fmt: skip
DEFAULT_OPSET = 17
TOLERANCE = 1e-4
DEFAULT_IMAGES = 128
EDGE_FORMATS = ("executorch", "tflite")
FLOAT_GROUPS = ("stem", "head")
DEFAULT_KEEP_FLOAT = "stem,head"


def _edge_check(args: argparse.Namespace) -> None:
    """--int8 and --calibrate belong to the edge formats; a folder given must exist."""
    used = [f for f, on in (("--int8", args.int8), ("--calibrate", args.calibrate)) if on]
    if used and args.format not in EDGE_FORMATS:
        hint = "; INT8 ONNX is `effnet quantize`" if args.format == "onnx" else ""
        raise CLIError(
            f"{used[0]} applies to --format executorch or tflite, not {args.format}{hint}"
        )
    if not args.bias_correction and not args.int8:
        raise CLIError("--no-bias-correction applies to --int8")
    if args.int8 and args.calibrate is None:
        raise CLIError("--int8 needs --calibrate DATA (a folder of images or digits)")
    if args.calibrate not in (None, "digits"):
        exists_check("calibrate")(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, TorchScript, safetensors, torch.export, ExecuTorch or "
        "LiteRT, verified",
        description=textwrap.fill(
            "Export a model and check the exported file against PyTorch at batch 1 and 3 "
            f"(max abs diff < {TOLERANCE:g} x max(1, largest |logit|)). The file is written "
            "atomically: a failed export or verification leaves nothing behind. ONNX files have "
            "a dynamic batch axis and carry the model name, preprocessing and class names in "
            "their metadata. ExecuTorch (.pte, XNNPACK) and LiteRT (.tflite) files run in their "
            "own runtimes for the check, and with --int8 are quantized on --calibrate images and "
            "checked by top-1 agreement with PyTorch on them."
        ),
        epilog=(
            "examples:\n"
            "  effnet export efficientnet_lite0 --pretrained pip --format onnx -o lite0.onnx\n"
            "  effnet export runs/exp1 --format torchscript -o exp1.pt\n"
            "  effnet export model.safetensors --format onnx -o model.onnx --image-size 320\n"
            "  effnet export efficientnet_lite0 --pretrained pip --format executorch --int8 "
            "--calibrate photos/ -o lite0-int8.pte"
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
    _add_edge_options(p)
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the comparison of the exported file with PyTorch",
    )
    p.set_defaults(
        func="effnet.cli.export:run",
        checks=(exists_check("model", only_files=True), _edge_check),
    )


def _add_edge_options(p: argparse.ArgumentParser) -> None:
    """INT8 and calibration images for the edge formats (executorch, tflite)."""
    p.add_argument(
        "--int8",
        action="store_true",
        help="executorch / tflite: INT8 (PT2E, per-channel weights) calibrated on --calibrate",
    )
    p.add_argument(
        "--calibrate",
        default=None,
        metavar="DATA",
        help="executorch / tflite: calibration images (a folder, any size or mode, or digits); "
        "without --int8 the fp32 file is also checked on them",
    )
    p.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        metavar="N",
        help="calibration images to use (default: %(default)s)",
    )
    p.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="--int8: skip the bias correction on the calibration images (see docs/deploy.md)",
    )
    p.add_argument(
        "--keep-float",
        default=DEFAULT_KEEP_FLOAT,
        metavar="GROUPS",
        help=f"--int8: layers left in float, from {', '.join(FLOAT_GROUPS)} (the first conv and "
        "the classifier), or none (default: %(default)s)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.0,
        metavar="F",
        help="--int8: refuse the file if its top-1 agreement with PyTorch on the calibration "
        "images is below F, in [0, 1] (default: %(default)s, report only)",
    )
