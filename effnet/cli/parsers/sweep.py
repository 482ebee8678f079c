"""`effnet sweep`'s parser (the implementation is ``effnet.cli.sweep``)."""

from __future__ import annotations

import argparse

from effnet.cli.parsers.search import add_experiment_args

EPILOG = """\
examples:
  effnet sweep --data digits --dimension width --values 1 1.5 2
  effnet sweep --data digits --dimension width depth resolution compound \\
      --values width=1,1.41,2 depth=1,2,4 resolution=1,1.41,2 compound=0,1,2 --seeds 3

Values are multipliers of the dimension (width w, depth d, resolution r) or, for compound, phi
(d = alpha^phi, w = beta^phi, r = gamma^phi; set --alpha/--beta/--gamma, e.g. from a search).
Plain numbers apply to every dimension; DIM=v1,v2 sets one dimension's list. Roughly matched
MACs: depth x4 ~ width x2 ~ resolution x2 ~ compound phi 2. Writes OUT/sweep.json and
OUT/sweep.png; finished runs are reused when the command is run again."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train models scaled along one dimension (or compound) and plot top-1 vs MACs",
        description="Single-dimension vs compound scaling, as in the paper's Figures 3 and 8.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_experiment_args(p, "runs/sweep")
    p.add_argument(
        "--dimension",
        nargs="+",
        default=["compound"],
        choices=("width", "depth", "resolution", "compound"),
        metavar="DIM",
        help="width, depth, resolution and/or compound (default compound)",
    )
    p.add_argument("--values", nargs="+", required=True, help="multipliers (phi for compound)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per point (default 1)")
    p.add_argument("--alpha", type=float, default=1.2, help="compound depth base (default 1.2)")
    p.add_argument("--beta", type=float, default=1.1, help="compound width base (default 1.1)")
    p.add_argument("--gamma", type=float, default=1.15, help="compound resolution base (1.15)")
    p.set_defaults(func="effnet.cli.sweep:run")
