"""`effnet nas`'s parser (the implementation is ``effnet.cli.nas``)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  effnet nas --data digits --space v2 --trials 40 --epochs 2 --image-size 32 --out runs/nas
  effnet nas --data digits --space b0 --sampler tpe --reward "acc * (macs / 1e8) ** -0.07"
  effnet nas --data my_images/ --space v2 --sampler nsga2 --storage postgresql://u@host/db

Each trial samples a genotype of the space (v2: per stage conv type, layers, kernel, expansion
on V2-S's channels; b0: MnasNet's block type, kernel, SE, expansion, layers, filters around B0),
times its training step on this machine, counts its params and MACs, and trains it for --epochs
on top of the base config (default: the built-in digits config, with its width/depth). Rewards:
v2 A * S^-0.07 * P^-0.05 (S: step time over the backbone's), b0 ACC * (MACs/T)^-0.07 with
T = 400M * (size/224)^2; --reward EXPR over acc (0..1), step_time (s), params, macs, image_size.
Trials are stored in OUT/nas.db (or --storage): the same command again skips finished trials.
Writes OUT/trials.csv, OUT/trials.json, OUT/pareto.png, OUT/nas.json and OUT/best_spec.json,
a spec file for `effnet train --model`, `effnet info` and `effnet scale`."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nas",
        help="training-aware architecture search (EfficientNetV2 / MnasNet-B0 spaces)",
        description="Search a baseline architecture with short training runs on this machine.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="digits", help="digits, an ImageFolder or CIFAR folder")
    p.add_argument("--space", default="v2", choices=("v2", "b0"), help="search space (default v2)")
    p.add_argument("--trials", type=int, default=20, help="finished trials wanted (default 20)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per candidate (default 1)")
    p.add_argument("--image-size", type=int, help="search image size (default: the config's)")
    p.add_argument(
        "--sampler",
        default="random",
        choices=("random", "tpe", "nsga2"),
        help="random (default, the paper's baseline), tpe, or nsga2 (multi-objective)",
    )
    p.add_argument("--reward", help="reward expression (default: the space's paper reward)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/nas.db)")
    p.add_argument("--out", default="runs/nas", help="output folder (default runs/nas)")
    p.add_argument("--config", help="base training config (YAML or built-in; default digits)")
    p.add_argument("--max-train-samples", type=int, help="subset of the training data")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the config's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    p.set_defaults(func="effnet.cli.nas:main")
