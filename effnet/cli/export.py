"""`effnet export MODEL --format FORMAT --output PATH`: every format, executorch and tflite too."""

from __future__ import annotations

import argparse
import sys

from effnet.api import choose_pretrained, random_weights_note
from effnet.deploy.calibration import agreement_text
from effnet.deploy.export import TOLERANCE, export
from effnet.deploy.export.executorch import MAX_BATCH

RUNTIMES = {
    "onnx": "onnxruntime",
    "executorch": "ExecuTorch's runtime",
    "tflite": "LiteRT's interpreter",
}


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
        int8=args.int8,
        calibrate=args.calibrate,
        images=args.images,
        min_agreement=args.min_agreement,
        bias_correction=args.bias_correction,
        keep_float=args.keep_float,
    )
    if pretrained is False and args.pretrained is None:  # said before the report
        note = random_weights_note(args.model, "the export has random weights")
        print(f"effnet export: warning: {note}", file=sys.stderr)
    size = result.path.stat().st_size / 1e6
    kind = f"{result.format}{' INT8' if result.int8 else ''}"
    print(
        f"wrote {result.path} ({kind}, {result.image_size}px input, {size:.1f} MB) "
        f"in {result.seconds:.1f} s"
    )
    runtime = RUNTIMES.get(result.format, "the reloaded file")
    if result.int8:
        corrected = (f"biases of {result.bias_layers} layers corrected on {result.bias_images} "
                     "images" if result.bias_layers else "no bias correction")  # fmt: skip
        floats = (f"{len(result.float_layers)} layers left in float "
                  f"({args.keep_float})" if result.float_layers
                  else "every conv and linear quantized")  # fmt: skip
        print(f"INT8: PT2E with per-channel weights, {corrected}, {floats}")
    if result.agreement is not None:
        skipped = f", {result.skipped_images} unreadable skipped" if result.skipped_images else ""
        print(
            f"checked with {runtime} on {result.calibration_images} calibration images"
            f"{skipped}: top-1 agreement with PyTorch "
            f"{agreement_text(result.agreement, result.decided_agreement, result.decided_images)}"
            ", max logit diff "
            f"{result.max_logit_diff:.3g}"
        )
    if result.max_abs_diff:
        checked = ", ".join(f"batch {b}: {d:.2e}" for b, d in result.max_abs_diff.items())
        checked += "".join(f", size {s} (batch 2): {d:.2e}" for s, d in result.size_diffs.items())
        bound = f"< {TOLERANCE:g} x max(1, largest |logit|)"
        print(f"verified with {runtime}: max abs diff vs PyTorch {checked} ({bound})")
    elif result.agreement is None:
        print("not verified (--no-verify)")
    if result.max_batch is not None and result.max_batch < MAX_BATCH:
        print(
            f"note: the file takes at most {result.max_batch} images per call in {runtime}; "
            f"larger batches (up to {MAX_BATCH}) run in chunks through effnet's runner"
        )
    return 0
