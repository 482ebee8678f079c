"""`effnet eval`: accuracy of a trained model on a dataset, per class, with a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

from effnet.env.device import check_device
from effnet.training import evaluate_checkpoint
from effnet.training.evaluation import run_split


def main(args) -> int:
    check_device(args.device, label="--device")
    src = Path(args.checkpoint)
    out = args.out or (src if src.is_dir() else src.parent)
    outside_run = not run_split(args.checkpoint)
    res = evaluate_checkpoint(
        args.checkpoint,
        args.data or ("digits" if outside_run else None),
        split=args.split,
        seed=args.seed,
        val_fraction=args.val_fraction,
        max_samples=args.max_samples,
        progress=args.progress,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        out=out,
    )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    top = f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%"
    print(f"{res['images']} {args.split} images, {used(res)}: {top}")
    width = max(len(n) for n in res["class_names"])
    for name, acc in res["per_class"].items():
        shown = "   n/a" if acc is None else f"{acc:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    print(f"confusion matrix: {Path(out) / 'confusion.png'} and confusion.json")
    return 0


def used(res: dict) -> str:
    """Which images were evaluated, in words."""
    ours = res["split_from_run"]
    whose = "the run's split" if ours else "split"
    where = f"{res['data']} ({whose}: val_fraction {res['val_fraction']}, seed {res['seed']})"
    if res["files"] is None:
        return f"{where}, in memory"
    return f"{where}, files listed in confusion.json"
