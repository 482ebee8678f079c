"""`effnet info`'s parser (the implementation is ``effnet.cli.info``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="per-stage table of one model: channels, repeats, params, MACs")
    p.add_argument("name", help="model name (see `effnet models`)")
    p.add_argument(
        "--image-size", type=int, default=None, help="input resolution (default: native)"
    )
    p.add_argument("--json", action="store_true", help="print the model_info dict as JSON")
    p.set_defaults(func="effnet.cli.info:run")
