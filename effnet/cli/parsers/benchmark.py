"""`effnet benchmark`'s parser (the implementation is ``effnet.cli.benchmark``)."""

from __future__ import annotations

import argparse

from effnet.cli.parsers import device_check

EPILOG = """\
examples:
  effnet benchmark efficientnet_b0 --against timm,torchvision,onnxruntime
  effnet benchmark efficientnet_b1 --mode infer --batch-size 1 --threads 1 --against torchvision
  effnet benchmark efficientnetv2_s --image-size 224 --mode train --json > v2s.json

All candidates run in one process; after warm-up the repetitions alternate between them, so
ratios stay meaningful on a busy machine. Compare ratios, not absolute numbers, across runs.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="speed and memory of a model against timm / torchvision / ONNX Runtime",
        description="Inference latency (batch 1), throughput (batch N), training throughput "
        "(forward + backward + SGD step) and peak memory; medians with min-max spread and "
        "effnet's ratio to each peer built for the same architecture.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model name (see `effnet models`)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="N",
        help="input resolution (default: the model's native one)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        metavar="N",
        help="batch for throughput and training (default: 16)",
    )
    p.add_argument(
        "--mode",
        choices=("infer", "train", "both"),
        default="both",
        help="what to measure (default: both)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="intra-op threads for torch and ONNX Runtime (default: torch's)",
    )
    p.add_argument("--verbose", action="store_true", help="every pair's ratios and their spread")
    p.add_argument(
        "--against",
        default="",
        metavar="PEERS",
        help="comma-separated peers: timm, torchvision, onnxruntime; effnet's own files in other "
        "runtimes: onnxruntime-int8, executorch, executorch-int8, litert, litert-int8",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=6,
        metavar="N",
        help="interleaved repetitions after warm-up, the order reversed every other one "
        "(default: 6)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="warm-up rounds per candidate (default: 2)",
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="max-autotune-no-cudagraphs",
        default=None,
        metavar="MODE",
        help="add torch.compile candidates (default mode: max-autotune-no-cudagraphs;"
        " compiling takes minutes on a CPU)",
    )
    p.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the peak-memory pass (it runs each candidate once in a fresh process)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func="effnet.cli.benchmark:run", checks=(device_check(),))
