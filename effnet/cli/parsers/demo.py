"""`effnet demo`'s parser (the implementation is ``effnet.cli.demo``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="show the model table and classify real photos with real Lite0 weights",
        description=(
            "Print a summary of the model zoo, then classify six real photos shipped with "
            "scikit-image and scikit-learn (a cat, a cup of coffee, a rocket, an astronaut, a "
            "temple, a flower) with the real EfficientNet-Lite ImageNet weights. Offline."
        ),
    )
    p.add_argument(
        "--model",
        default="efficientnet_lite0",
        choices=("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
        help="Lite model whose pip-packaged weights to use (default: %(default)s)",
    )
    p.add_argument("--topk", type=int, default=1, metavar="K", help="classes per photo (default 1)")
    p.set_defaults(func="effnet.cli.demo:run")
