"""`effnet export MODEL --format onnx|torchscript|safetensors|pt2 --output PATH`."""

from __future__ import annotations

import argparse
import sys

from effnet.api import choose_pretrained, random_weights_note
from effnet.deploy.export import TOLERANCE, export


def run(args: argparse.Namespace) -> int:
    pretrained = choose_pretrained(args.model, args.pretrained, required=False)
    result = export(
        args.model,
        args.format,
        args.output,
        image_size=args.image_size,
        opset=args.opset,
        verify=args.verify,
        pretrained=pretrained,
        weights_source=args.weights_source,
        dynamic_size=args.dynamic_size,
    )
    if pretrained is False and args.pretrained is None:  # said before the report
        note = random_weights_note(args.model, "the export has random weights")
        print(f"effnet export: warning: {note}", file=sys.stderr)
    size = result.path.stat().st_size / 1e6
    print(
        f"wrote {result.path} ({result.format}, {result.image_size}px input, {size:.1f} MB) "
        f"in {result.seconds:.1f} s"
    )
    if result.max_abs_diff:
        checked = ", ".join(f"batch {b}: {d:.2e}" for b, d in result.max_abs_diff.items())
        runtime = "onnxruntime" if result.format == "onnx" else "the reloaded file"
        checked += "".join(f", size {s} (batch 2): {d:.2e}" for s, d in result.size_diffs.items())
        bound = f"< {TOLERANCE:g} x max(1, largest |logit|)"
        print(f"verified with {runtime}: max abs diff vs PyTorch {checked} ({bound})")
    else:
        print("not verified (--no-verify)")
    return 0
