"""`effnet search`'s parser (the implementation is ``effnet.cli.search``)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  effnet search --data digits --budget 3 --out runs/search
  effnet search --data digits --budget 2 --step 0.05 --tolerance 0.05 --max-candidates 12
  effnet search --data my_images/ --config my.yaml --budget 5 --workers 2

Every (alpha, beta, gamma) on the grid 1, 1+step, ..., max with |alpha*beta^2*gamma^2 - target| <=
tolerance is trained for --budget epochs at phi = 1: depth x alpha, width x beta, input size x
gamma on top of the base config (default: the built-in digits config). Trials are stored in an
Optuna database (OUT/search.db): run the same command again to resume an interrupted search
without redoing finished trials; start it on several machines with one --storage URL to share
the work. Writes OUT/search.json (ranking), OUT/search.png (top-1 vs MACs)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="grid-search alpha, beta, gamma (the paper's step 1) with small training runs",
        description="Find the compound coefficients: train every grid point at phi = 1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_experiment_args(p, "runs/search")
    p.add_argument("--step", type=float, default=0.1, help="grid step (default 0.1)")
    p.add_argument("--max-coef", type=float, default=2.0, help="largest coefficient (default 2)")
    p.add_argument("--target", type=float, default=2.0, help="alpha*beta^2*gamma^2 target (2)")
    p.add_argument("--tolerance", type=float, default=0.1, help="allowed |constraint - target|")
    p.add_argument(
        "--max-candidates", type=int, help="train only the N points closest to the target"
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/search.db)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.set_defaults(func="effnet.cli.search:run")


def add_experiment_args(p: argparse.ArgumentParser, out: str) -> None:
    """Options shared by `effnet search` and `effnet sweep`: data, base config, budget."""
    p.add_argument("--data", default="digits", help="digits, an ImageFolder or CIFAR folder")
    p.add_argument("--config", help="base training config (YAML or built-in; default digits)")
    p.add_argument("--model", help="base model (default: the config's)")
    p.add_argument("--image-size", type=int, help="base input size in pixels (default: config's)")
    p.add_argument("--budget", type=float, default=3, help="epochs per model (default 3)")
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--max-train-samples", type=int, help="subset of the training data")
    p.add_argument("--threads", type=int, help="torch threads per process")
