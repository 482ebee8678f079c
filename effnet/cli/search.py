"""`effnet search`: grid search of the compound coefficients (alpha, beta, gamma) at phi = 1."""

from __future__ import annotations

import argparse
import sys

from effnet.lab.search import search
from effnet.training.trainer import Interrupted


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
    if b:
        print(
            f"best: alpha {b['alpha']:g}, beta {b['beta']:g}, gamma {b['gamma']:g} "
            f"(top-1 {b['top1']:.2f}%)"
        )
    print(f"ranking: {args.out}/search.json  plot: {res['plot']}")
    return 0
