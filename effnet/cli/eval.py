"""`effnet eval`: accuracy of a trained model on a dataset, per class, with a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

from effnet.training import evaluate_checkpoint


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model file or run folder (top-1/top-5, per class, confusion matrix)",
        description="Evaluate CHECKPOINT (a .safetensors model file, checkpoint_last.pt, or a run "
        "folder) on --data. With the run's data and seed, the validation split is the one the "
        "run held out. Writes confusion.json and confusion.png to --out (default: the run folder "
        "or the model file's folder).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN")
    p.add_argument("--data", default="digits", help="dataset (default: digits)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, help="default: the model's own")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", metavar="DIR", help="where confusion.json/png go")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=main)


def main(args) -> int:
    src = Path(args.checkpoint)
    out = args.out or (src if src.is_dir() else src.parent)
    res = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        seed=args.seed,
        val_fraction=args.val_fraction,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        out=out,
    )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    top = f"top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%"
    print(f"{res['images']} {args.split} images: {top}")
    width = max(len(n) for n in res["class_names"])
    for name, acc in res["per_class"].items():
        shown = "   n/a" if acc is None else f"{acc:6.2f}%"
        print(f"  {name:<{width}}  {shown}")
    print(f"confusion matrix: {Path(out) / 'confusion.png'} and confusion.json")
    return 0
