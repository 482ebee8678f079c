"""`effnet eval`'s parser (the implementation is ``effnet.cli.eval``)."""

from __future__ import annotations

from effnet.cli.parsers import add_progress, device_check, exists_check
from effnet.cli.weights_flags import add_weights_source


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run, a model file or a named model (top-1/top-5, per class, confusion)",
        description="Evaluate MODEL: a run folder, a .safetensors model file, checkpoint_last.pt, "
        "or a model name with --pretrained SOURCE (as timm's validate.py). For a run, --data, "
        "--val-fraction and --seed default to the run's own, so the validation split is exactly "
        "the one the run held out. Each evaluation writes a new confusion-DATE-TIME.json (with "
        "the list of evaluated files) and .png to --out (default: the run folder, the model "
        "file's folder, or the current folder for a name).",
    )
    p.add_argument("checkpoint", metavar="MODEL_OR_RUN")
    p.add_argument(
        "--pretrained",
        metavar="SOURCE",
        help="weights for a model name: pip, timm, torchvision or a file (default: its default "
        "weights when installed; none = random)",
    )
    add_weights_source(p)
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    p.add_argument("--data", help="dataset (default: the run's; digits outside a run)")
    p.add_argument(
        "--split",
        choices=("val", "train", "all"),
        help="which images: the validation split (default for runs and files, and for names when "
        "the data has a val/ folder), train, or all (default for a model name otherwise)",
    )
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
    p.set_defaults(
        func="effnet.cli.eval:main",
        checks=(exists_check("checkpoint", only_files=True), device_check()),
    )
