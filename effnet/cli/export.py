"""`effnet export MODEL --format FORMAT --output PATH` (onnx, torchscript, safetensors, pt2,
timm, torchvision)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from effnet.deploy.export import DEFAULT_OPSET, FORMATS, TOLERANCE, export


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, TorchScript, safetensors, torch.export, or timm / "
        "torchvision weights, verified",
        description=textwrap.fill(
            "Export a model and check the exported file against PyTorch at batch 1 and 3 "
            f"(max abs diff < {TOLERANCE:g}). The file is written atomically: a failed export or "
            "verification leaves nothing behind. ONNX files have a dynamic batch axis and carry "
            "the model name, preprocessing and class names in their metadata."
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
    p.add_argument(
        "--pretrained",
        metavar="SRC",
        default=None,
        help="weights for a model name: pip, timm, torchvision or a weight file",
    )
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = export(
        args.model,
        args.format,
        args.output,
        image_size=args.image_size,
        opset=args.opset,
        verify=args.verify,
        pretrained=args.pretrained,
        dynamic_size=args.dynamic_size,
    )
    size = result.path.stat().st_size / 1e6
    print(
        f"wrote {result.path} ({result.format}, {result.image_size}px input, {size:.1f} MB) "
        f"in {result.seconds:.1f} s"
    )
    if result.max_abs_diff:
        checked = ", ".join(f"batch {b}: {d:.2e}" for b, d in result.max_abs_diff.items())
        runtime = "onnxruntime" if result.format == "onnx" else "the reloaded file"
        checked += "".join(f", size {s} (batch 2): {d:.2e}" for s, d in result.size_diffs.items())
        print(f"verified with {runtime}: max abs diff vs PyTorch {checked} (< {TOLERANCE:g})")
    else:
        print("not verified (--no-verify)")
    if args.pretrained is None and not Path(args.model).exists():
        print(f"note: {args.model} was exported with random weights (no --pretrained)")
    return 0
