"""`effnet eval`: accuracy of a trained model on a dataset, per class, with a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

from effnet.training import evaluate_checkpoint
from effnet.training.evaluation import run_split


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model file or run folder (top-1/top-5, per class, confusion matrix)",
        description="Evaluate CHECKPOINT (a .safetensors model file, checkpoint_last.pt, or a run "
        "folder). For a run, --data, --val-fraction and --seed default to the run's own, so the "
        "validation split is exactly the one the run held out. Writes confusion.json (with the "
        "list of evaluated files) and confusion.png to --out (default: the run folder or the "
        "model file's folder).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN")
    p.add_argument("--data", help="dataset (default: the run's; digits outside a run)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--seed", type=int, help="seed of the train/val split (default: the run's, 0)")
    p.add_argument(
        "--val-fraction", type=float, help="held-out share, in (0, 1) (default: the run's, 0.2)"
    )
    p.add_argument(
        "--max-samples",
        type=int,
        default=0,
        metavar="N",
        help="a seeded subset of N images (the run's max_val_samples gives its per-epoch subset)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, help="default: the model's own")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", metavar="DIR", help="where confusion.json/png go")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="auto (a bar on a terminal), bar, log (lines with throughput and ETA), none",
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func=main)


def main(args) -> int:
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
