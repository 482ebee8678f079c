"""`effnet predict MODEL IMAGE_OR_DIR...`: top-k classes with the model's own preprocessing."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from effnet.api import choose_pretrained
from effnet.cli import CLIError
from effnet.cli.weights_flags import PRETRAINED_DEFAULT, add_weights_source
from effnet.deploy.inference import predict


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
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--pretrained",
        metavar="SRC",
        default=None,
        help="weights for a model name: pip (real Lite0-2), timm, torchvision, a file or none; "
        + PRETRAINED_DEFAULT,
    )
    add_weights_source(p)
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    results = predict(
        args.model,
        args.images,
        topk=args.topk,
        device=args.device,
        batch_size=args.batch_size,
        pretrained=choose_pretrained(args.model, args.pretrained, what="predictions"),
        weights_source=args.weights_source,
        on_error="skip",
    )
    done = [r for r in results if "top" in r]
    failed = [r for r in results if "error" in r]
    if not results:
        raise CLIError(f"no images found in {' '.join(args.images)}")
    if not done:
        if len(failed) == 1:
            raise CLIError(failed[0]["error"])
        raise CLIError(
            f"none of the {len(failed)} images could be read (first: {failed[0]['error']})"
        )
    for r in failed:
        print(f"effnet predict: warning: skipped {r['error']}", file=sys.stderr)
    if failed:
        print(
            f"effnet predict: skipped {len(failed)} unreadable of {len(results)} images",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(done, indent=2))
    else:
        for r in done:
            print(r["image"])
            for t in r["top"]:
                print(f"  {t['prob'] * 100:6.2f}%  {t['label']} ({t['index']})")
    return 0
