"""`effnet search`: grid search of the compound coefficients (alpha, beta, gamma) at phi = 1."""

from __future__ import annotations

import argparse
import sys

from effnet.lab.search import search
from effnet.training.trainer import Interrupted

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
    p.set_defaults(func=run)


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


def experiment_kwargs(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "image_size": args.image_size,
        "max_train_samples": args.max_train_samples,
        "threads": args.threads,
    }


def run(args: argparse.Namespace) -> int:
    try:
        res = search(
            args.data,
            out=args.out,
            budget=args.budget,
            config=args.config,
            step=args.step,
            max_coef=args.max_coef,
            target=args.target,
            tolerance=args.tolerance,
            max_candidates=args.max_candidates,
            workers=args.workers,
            storage=args.storage,
            seed=args.seed,
            **experiment_kwargs(args),
        )
    except (Interrupted, KeyboardInterrupt) as e:
        signal_name = str(e).split(" ")[0] if str(e) else "interrupt"
        print(
            f"effnet search: {signal_name} received; finished trials are kept, run the same "
            "command again to continue",
            file=sys.stderr,
        )
        return getattr(e, "exit_code", 130)
    print(
        f"{'rank':<6}{'alpha':>7}{'beta':>7}{'gamma':>7}{'a*b^2*g^2':>11}{'px':>5}"
        f"{'MACs (M)':>10}{'top-1 %':>9}"
    )
    for i, r in enumerate(res["ranking"], 1):
        print(
            f"{i:<6}{r['alpha']:>7.3g}{r['beta']:>7.3g}{r['gamma']:>7.3g}{r['constraint']:>11.3f}"
            f"{r['image_size'] or 0:>5}{(r['macs'] or 0) / 1e6:>10.2f}{r['top1']:>9.2f}"
        )
    b = res["best"]
    if b and (res.get("chance") or {}).get("learned_nothing"):
        print("best: none (every trial at chance, see the warning above); the top row is luck")
    elif b:
        print(
            f"best: alpha {b['alpha']:g}, beta {b['beta']:g}, gamma {b['gamma']:g} "
            f"(top-1 {b['top1']:.2f}%)"
        )
    print(f"ranking: {args.out}/search.json  plot: {res['plot']}")
    return 0
