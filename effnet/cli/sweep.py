"""`effnet sweep`: scale width, depth, resolution or all three; top-1 against MACs on one chart."""

from __future__ import annotations

import argparse
import sys

from effnet.cli.search import experiment_kwargs
from effnet.lab.sweep import parse_values, sweep
from effnet.training.trainer import Interrupted


def run(args: argparse.Namespace) -> int:
    try:
        res = sweep(
            args.data,
            dimensions=args.dimension,
            values=parse_values(args.values, args.dimension),
            seeds=args.seeds,
            budget=args.budget,
            out=args.out,
            config=args.config,
            alpha=args.alpha,
            beta=args.beta,
            gamma=args.gamma,
            **experiment_kwargs(args),
        )
    except Interrupted as e:
        signal_name = str(e).split(" ")[0]
        print(
            f"effnet sweep: {signal_name} received; finished runs are kept, run the same "
            "command again to continue",
            file=sys.stderr,
        )
        return e.exit_code
    print(
        f"{'dimension':<12}{'value':>7}{'d':>7}{'w':>7}{'px':>5}{'MACs (M)':>10}"
        f"{'top-1 %':>9}{'+-':>6}"
    )
    for dim, pts in res["curves"].items():
        for p in pts:
            print(
                f"{dim:<12}{p['value']:>7.3g}{p['depth']:>7.3g}{p['width']:>7.3g}"
                f"{p['image_size']:>5}{p['macs'] / 1e6:>10.2f}{p['top1_mean']:>9.2f}"
                f"{p['top1_std']:>6.2f}"
            )
    print(f"results: {args.out}/sweep.json  plot: {res['plot']}")
    return 0
