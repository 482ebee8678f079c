"""`effnet benchmark MODEL`: effnet against timm / torchvision / ONNX Runtime, interleaved."""

from __future__ import annotations

import argparse
import json
import sys

from effnet.benchmark.engine import PEERS, format_report, run_benchmark
from effnet.cli import CLIError
from effnet.env.device import check_device


def run(args: argparse.Namespace) -> int:
    against = tuple(a.strip() for a in args.against.split(",") if a.strip())
    for a in against:
        if a not in PEERS:
            raise CLIError(f"--against: unknown peer {a!r}; choose from {', '.join(PEERS)}")
    if args.image_size is not None and args.image_size < 32:
        raise CLIError(f"--image-size must be >= 32, got {args.image_size}")
    check_device(args.device, label="--device")

    def log(msg: str) -> None:
        print(f"[benchmark] {msg}", file=sys.stderr, flush=True)

    res = run_benchmark(
        args.model,
        image_size=args.image_size,
        batch_size=args.batch_size,
        mode=args.mode,
        threads=args.threads,
        against=against,
        reps=args.reps,
        warmup=args.warmup,
        compile_mode=args.compile,
        device=args.device,
        memory=not args.no_memory,
        log=log,
    )
    print(json.dumps(res, indent=2) if args.json else format_report(res))
    return 0
