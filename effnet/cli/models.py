"""`effnet models`: the model table (params, MACs at native resolution, resolution)."""

from __future__ import annotations

import argparse
import json

from effnet.analysis.info import model_info
from effnet.registry import list_models


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `effnet models`")
    rows = []
    for n in names:
        info = model_info(n)
        rows.append(
            {
                "name": n,
                "params": info["params"],
                "macs": info["macs"],
                "image_size": info["image_size"],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<22}{'params (M)':>12}{'MACs (B)':>12}{'resolution':>12}")
    for r in rows:
        print(
            f"{r['name']:<22}{r['params'] / 1e6:>12.2f}"
            f"{r['macs'] / 1e9:>12.3f}{r['image_size']:>12}"
        )
    return 0
