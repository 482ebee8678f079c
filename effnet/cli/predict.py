"""`effnet predict MODEL IMAGE_OR_DIR...`: top-k classes with the model's own preprocessing.

The parser is ``effnet.cli.parsers.predict``; progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from effnet.api import choose_pretrained
from effnet.cli import CLIError
from effnet.deploy.inference import collect_images, predict
from effnet.env.device import check_device
from effnet.training.report import Progress, progress_mode
from effnet.weights.serialize import atomic_write


def run(args: argparse.Namespace) -> int:
    if args.topk < 1:
        raise CLIError(f"--topk must be at least 1, got {args.topk}")
    check_device(args.device, label="--device")
    pretrained = choose_pretrained(args.model, args.pretrained, what="predictions")
    files = [path for _, path in collect_images(args.images)]  # folders walked once, here
    bar = Progress(len(files), "predict", progress_mode(args.progress))
    try:
        results = predict(
            args.model,
            files,
            topk=args.topk,
            device=args.device,
            batch_size=args.batch_size,
            pretrained=pretrained,
            weights_source=args.weights_source,
            on_error="skip",
            progress=lambda n: bar.update(images=n, steps=n),
        )
    finally:
        bar.close()
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
    if args.csv:
        write_csv(args.csv, results)
    if args.json:
        print(json.dumps(results, indent=2))  # failed images stay, as {"image", "error"}
    else:
        for r in done:
            print(r["image"])
            for t in r["top"]:
                print(f"  {t['prob'] * 100:6.2f}%  {t['label']} ({t['index']})")
    return 0


def write_csv(path: str, results: list[dict]) -> None:
    """One row per (image, rank); an unreadable image gets one row with its error."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append({"image": r["image"], "error": r["error"]})
        for rank, t in enumerate(r.get("top", ()), 1):
            rows.append({"image": r["image"], "rank": rank, **t})
    fields = ["image", "rank", "index", "label", "prob", "error"]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(Path(path), write)
