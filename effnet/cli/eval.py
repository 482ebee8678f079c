"""`effnet eval`: accuracy of a trained model on a dataset, per class, with a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

from effnet.api import choose_pretrained
from effnet.env.device import check_device
from effnet.training import evaluate_checkpoint
from effnet.training.evaluation import run_split


def main(args) -> int:
    check_device(args.device, label="--device")
    src = Path(args.checkpoint)
    out = args.out or (src if src.is_dir() else src.parent if src.exists() else Path("."))
    outside_run = not run_split(args.checkpoint)
    data = args.data or ("digits" if outside_run else None)
    split = args.split or default_split(args.checkpoint, data)
    res = evaluate_checkpoint(
        args.checkpoint,
        data,
        split=split,
        seed=args.seed,
        val_fraction=args.val_fraction,
        max_samples=args.max_samples,
        progress=args.progress,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        workers=args.workers,
        pretrained=choose_pretrained(args.checkpoint, args.pretrained, what="an evaluation"),
        weights_source=args.weights_source,
        out=out,
    )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    top = f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%"
    print(f"{res['images']} {split} images, {used(res)}: {top}")
    width = max(len(n) for n in res["class_names"])
    for name, acc in res["per_class"].items():
        shown = "   n/a" if acc is None else f"{acc:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    print(f"confusion matrix: {res['confusion_png']} and {Path(res['confusion_json']).name}")
    return 0


def default_split(checkpoint: str, data: str | None) -> str:
    """A named model (timm's validate.py habit) scores the whole folder, or its val/ folder;
    runs and model files score the validation split."""
    if Path(checkpoint).exists() or data is None:
        return "val"
    folder = Path(data).expanduser()
    has_val = any((folder / v).is_dir() for v in ("val", "validation"))
    return "val" if has_val else "all"


def used(res: dict) -> str:
    """Which images were evaluated, in words."""
    ours = res["split_from_run"]
    whose = "the run's split" if ours else "split"
    where = f"{res['data']} ({whose}: val_fraction {res['val_fraction']}, seed {res['seed']})"
    if res["split"] == "all":
        where = f"{res['data']} (every image)"
    if res["files"] is None:
        return f"{where}, in memory"
    return f"{where}, files listed in {Path(res['confusion_json']).name}"
