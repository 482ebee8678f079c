"""`effnet models`'s parser (the implementation is ``effnet.cli.models``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models with params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*lite*'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="list the weights of each model: source, how trained, installed or to download",
    )
    p.set_defaults(func="effnet.cli.models:run")
