"""`effnet eval`'s parser (the implementation is ``effnet.cli.eval``)."""

from __future__ import annotations

from effnet.cli.parsers import add_progress, device_check, exists_check


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
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--out", metavar="DIR", help="where confusion.json/png go")
    add_progress(p)
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func="effnet.cli.eval:main", checks=(exists_check("checkpoint"), device_check()))
