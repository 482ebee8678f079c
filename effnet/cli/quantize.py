"""`effnet quantize MODEL_OR_RUN --calibrate DATA --output FILE.onnx`: INT8 with ONNX Runtime."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from effnet.api import choose_pretrained, random_weights_note
from effnet.deploy.calibration import agreement_text
from effnet.deploy.onnx_bias import BIAS_IMAGES
from effnet.deploy.onnx_rounding import ROUND_IMAGES
from effnet.deploy.quantize import quantize_onnx


def main(args: argparse.Namespace) -> int:
    pretrained = choose_pretrained(args.model, args.pretrained, required=False)
    if pretrained is False and args.pretrained is None:
        note = random_weights_note(args.model, "the quantized file has random weights")
        print(f"effnet quantize: warning: {note}", file=sys.stderr)
    with warnings.catch_warnings():  # a fallback is printed below as effnet's own warning line
        warnings.filterwarnings("ignore", message="percentile calibration failed")
        r = quantize_onnx(
            args.model,
            calibrate=args.calibrate,
            output=args.output,
            images=args.images,
            method=args.method,  # None: the library's default, percentile (entropy if it cannot)
            per_channel=args.per_channel,
            keep_float=args.keep_float,
            min_agreement=args.min_agreement,
            eval=args.eval,
            image_size=args.image_size,
            threads=args.threads,
            pretrained=pretrained,
            weights_source=args.weights_source,
            bias_correction=args.bias_correction,
            rounding=args.rounding,
        )
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    if r.fallback:
        print(f"effnet quantize: warning: {r.fallback}", file=sys.stderr)
    weights = "per-channel" if r.per_channel else "per-tensor"
    kept = ",".join(r.keep_float) or "none"
    print(
        f"wrote {r.path} (INT8 QDQ, {r.image_size}px input, {r.int8_bytes / 1e6:.1f} MB; fp32 "
        f"{r.fp32_bytes / 1e6:.1f} MB) in {r.seconds:.1f} s: {r.method} calibration on "
        f"{r.calibration_images} images, {weights} weights, float: {kept} ({r.float_nodes} nodes)"
    )
    if r.rounding == "gptq":
        n = min(r.calibration_images, ROUND_IMAGES)
        print(
            f"weights: gptq rounding of {r.rounded_layers} layers, on {n} images (layers with "
            "too few input samples for it round to nearest)"
        )
    elif r.method != "nncf":
        print("weights: nearest rounding")
    if r.method == "nncf":
        print("bias correction: NNCF's own")
    elif r.bias_layers:
        n = min(r.calibration_images, BIAS_IMAGES)
        print(f"bias correction: {r.bias_layers} layers, on {n} images")
    else:
        print("no bias correction")
    if r.skipped_images:
        print(f"skipped {r.skipped_images} unreadable calibration image(s)")
    print(
        f"checked against fp32 on the calibration images: top-1 agreement "
        f"{agreement_text(r.agreement, r.decided_agreement, r.decided_images)}, max logit diff "
        f"{r.max_logit_diff:.3g}; "
        f"{r.qdq_nodes} quantize/dequantize nodes"
    )
    if r.eval:
        e = r.eval
        ips = e["images_per_s"]
        print(f"{e['data']}: {e['images']} labelled images")
        for k in ("fp32", "int8"):
            print(
                f"  {k:<4}  top-1 {e['top1'][k]:6.2f}%  {e['bytes'][k] / 1e6:6.1f} MB  "
                f"{ips[k]:8.1f} img/s (batch {e['batch']}, {e['threads']} threads, interleaved)"
            )
        print(f"  INT8 / fp32 throughput: {ips['int8'] / ips['fp32']:.2f}x")
    return 0
