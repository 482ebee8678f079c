"""`effnet quantize`'s parser (the implementation is ``effnet.cli.quantize``)."""

from __future__ import annotations

import argparse
import textwrap

from effnet.cli.parsers import exists_check
from effnet.cli.weights_flags import add_pretrained

# effnet.deploy.quantize's METHODS, DEFAULT_METHOD, KEEP_FLOAT, DEFAULT_KEEP_FLOAT,
# DEFAULT_IMAGES, ROUNDINGS and DEFAULT_ROUNDING (a test checks that they agree).
METHODS = ("entropy", "percentile", "minmax", "nncf")
DEFAULT_METHOD = "percentile"
KEEP_FLOAT = ("se_pool", "se_gate", "se_conv", "head", "stem")
DEFAULT_KEEP_FLOAT = "se_pool,se_gate"
DEFAULT_IMAGES = 128
ROUNDINGS = ("gptq", "nearest")
DEFAULT_ROUNDING = "gptq"


def _calibration_check(args: argparse.Namespace) -> None:
    if args.calibrate != "digits":  # the built-in dataset, not a folder
        exists_check("calibrate")(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="INT8 ONNX (ONNX Runtime static quantization, QDQ), checked against fp32",
        description=textwrap.fill(
            "Export the model to ONNX, calibrate activation ranges on a folder of images (through "
            "the model's own preprocessing), and write an INT8 QDQ graph with per-channel "
            "weights. The file is written atomically, and only if it holds quantize nodes and "
            "agrees with fp32 on the calibration images (top-1 agreement and largest logit "
            "difference are printed). --eval adds top-1, file size and throughput of both."
        ),
        epilog=(
            "examples:\n"
            "  effnet quantize efficientnet_lite0 --calibrate photos/ -o lite0-int8.onnx\n"
            "  effnet quantize runs/exp1 --calibrate digits --eval digits -o exp1-int8.onnx"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL_OR_RUN",
        help="registered model name, effnet .safetensors model file, or training run folder",
    )
    p.add_argument(
        "--calibrate",
        required=True,
        metavar="DATA",
        help="folder of calibration images (any size or mode; searched recursively) or digits",
    )
    p.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        metavar="N",
        help="calibration images to use (default: %(default)s)",
    )
    _add_calibration_options(p)
    p.add_argument("--output", "-o", required=True, metavar="FILE.onnx", help="file to write")
    add_pretrained(p)
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="input resolution of the graph (default: the model's own)",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="ONNX Runtime threads for --eval"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(
        func="effnet.cli.quantize:main",
        checks=(exists_check("model", only_files=True), _calibration_check),
    )


def _add_calibration_options(p: argparse.ArgumentParser) -> None:
    """How ranges are calibrated, what stays float, and what the result is checked against."""
    p.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="activation range calibration: ONNX Runtime's entropy, percentile or minmax, or "
        'nncf (NNCF with bias correction; pip install "effnet[nncf]") (default: '
        f"{DEFAULT_METHOD}, or entropy with a warning where percentile cannot bin a tensor)",
    )
    p.add_argument(
        "--per-tensor",
        dest="per_channel",
        action="store_false",
        help="one weight scale per tensor instead of per output channel (worse; for comparison)",
    )
    p.add_argument(
        "--keep-float",
        default=DEFAULT_KEEP_FLOAT,
        metavar="GROUPS",
        help=f"comma-separated op groups left in float, from {', '.join(KEEP_FLOAT)}, or none "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--rounding",
        choices=ROUNDINGS,
        default=None,
        help="INT8 weight rounding: gptq chooses each layer's rounding to keep its output "
        "closest to fp32 on the calibration images (error-compensating, as GPTQ/OBQ); nearest "
        f"is ONNX Runtime's (default: {DEFAULT_ROUNDING}; --method nncf rounds its own way)",
    )
    p.add_argument(
        "--no-bias-correction",
        dest="bias_correction",
        action="store_false",
        help="skip the bias correction on the calibration images (not with --method nncf, "
        "which always corrects biases its own way)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.0,
        metavar="F",
        help="refuse the file if its top-1 agreement with fp32 on the calibration images is "
        "below F, in [0, 1] (default: %(default)s, report only)",
    )
    p.add_argument(
        "--eval",
        metavar="DATA",
        default=None,
        help="labelled data (digits or a class-folder tree; a run's own split for a run): "
        "top-1, file size and throughput of fp32 and INT8",
    )
