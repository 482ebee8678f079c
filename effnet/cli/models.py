"""`effnet models`: the model table (params, MACs at native resolution, resolution), or with
``--pretrained`` the weights each model can load and whether they are on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import json

from effnet.analysis.info import model_info
from effnet.api import list_models
from effnet.weights.catalog import weight_sources


def run_pretrained(names: list[str], as_json: bool) -> int:
    """One row per weight set: the --pretrained value, how it was trained, where it is."""
    rows = [
        {"name": n, "sources": [{**dataclasses.asdict(s), "status": s.status} for s in found]}
        for n in names
        if (found := weight_sources(n))
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<20} {'--pretrained (weights)':<56}{'trained':<9}status")
    for row in rows:
        for i, s in enumerate(row["sources"]):
            short = s["weights"].split(":", 1)[1]
            label = s["source"] if s["source"] == s["weights"] else f"{s['source']} ({short})"
            mark = "*" if s["default"] else " "
            name = row["name"] if i == 0 else ""
            print(f"{name:<20}{mark}{label:<56}{s['trained']:<9}{s['status']}")
    print("* default weights (pretrained=True); installed/downloaded: on this machine already")
    return 0


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `effnet models`")
    if args.pretrained:
        return run_pretrained(names, args.json)
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
