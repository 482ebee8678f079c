"""`effnet cam MODEL... IMAGE... --out DIR`: class activation map overlays and a Figure-7 grid.

The parser is ``effnet.cli.parsers.cam``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.analysis.cam import cam_grid
from effnet.cli import CLIError
from effnet.cli.parsers import MODEL_SUFFIXES
from effnet.data.images import is_image_file


def _is_model(arg: str) -> bool:
    p = Path(arg)
    if p.is_dir() or p.suffix.lower() in MODEL_SUFFIXES:
        return True
    return not p.exists() and not is_image_file(p)  # a name (typos get the registry's hint)


def run(args: argparse.Namespace) -> int:
    model_args = [a for a in args.inputs if _is_model(a)]
    image_args = [a for a in args.inputs if a not in model_args]
    if not model_args:
        raise CLIError("no model given (a model name, weight file or run folder comes first)")
    if not image_args:
        raise CLIError("no image given")
    if not 0 <= args.alpha <= 1:
        raise CLIError(f"--alpha must be in [0, 1], got {args.alpha}")
    out = Path(args.out)
    results, grid = cam_grid(
        model_args,
        image_args,
        method=args.method,
        layer=args.layer,
        target=args.target,
        pretrained=args.pretrained,
        weights_source=args.weights_source,
        alpha=args.alpha,
        out_dir=out,
    )
    for r in results:
        print(f"{r.model:<28} {Path(r.image).name:<20} {r.class_name} ({r.prob:.1%}) -> {r.path}")
    print(f"grid: {out / 'cam_grid.png'} ({grid.width}x{grid.height})")
    return 0
