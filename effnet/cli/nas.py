"""`effnet nas`: training-aware architecture search over the V2 or B0 space."""

from __future__ import annotations

import argparse

from effnet.cli import CLIError
from effnet.cli.search import check_storage, study_errors
from effnet.env import require
from effnet.lab import nas_space
from effnet.lab.nas import SAMPLERS, Reward, nas


def main(args: argparse.Namespace) -> int:
    if args.space not in nas_space.SPACES:
        raise CLIError(f"--space {args.space}: unknown space; choose from v2, b0")
    if args.sampler not in SAMPLERS:
        raise CLIError(f"--sampler {args.sampler}: unknown sampler; choose from random, tpe, nsga2")
    if args.trials < 1:
        raise CLIError(f"--trials must be >= 1, got {args.trials}")
    if args.epochs < 1:
        raise CLIError(f"--epochs must be >= 1, got {args.epochs}")
    Reward(args.space, args.reward)  # a bad expression fails before anything is written
    require("optuna")
    if args.storage is not None:
        check_storage(args.storage)
    where = args.storage or f"sqlite:///{args.out}/nas.db"
    with study_errors("nas", where) as stopped:
        res = nas(
            args.data,
            space=args.space,
            trials=args.trials,
            epochs=args.epochs,
            image_size=args.image_size,
            sampler=args.sampler,
            reward=args.reward,
            storage=args.storage,
            out=args.out,
            config=args.config,
            seed=args.seed,
            max_train_samples=args.max_train_samples,
            batch_size=args.batch_size,
            lr=args.lr,
            threads=args.threads,
        )
    if stopped:
        return stopped[0]
    print(
        f"{'trial':<7}{'top-1 %':>8}{'ms/step':>9}{'params':>11}{'MACs (M)':>10}{'reward':>9}"
        "  genotype"
    )
    for r in res["trials"]:
        print(
            f"{r['trial']:<7}{100 * r['acc']:>8.2f}{1e3 * r['step_time']:>9.1f}{r['params']:>11,}"
            f"{r['macs'] / 1e6:>10.2f}{r['reward']:>9.4f}  {r['genotype']}"
        )
    b = res["best"]
    if b:
        print(
            f"best: trial {b['trial']} reward {b['reward']:.4f} (median {res['median_reward']:.4f})"
            f"; spec file {res['spec']} (effnet train --model / info / scale take it)"
        )
    print(f"tables: {args.out}/trials.csv, trials.json  plot: {res['plot']}")
    return 0
