"""`effnet scale`'s parser (the implementation is ``effnet.cli.scale``)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  effnet scale mobilenetv2 --depth 4             # Table 3: MobileNetV2 scaled by depth
  effnet scale mobilenetv1 --depth 1.4 --width 1.2 --resolution 1.3
  effnet scale efficientnet_b0 --phi 2           # alpha/beta/gamma default 1.2/1.1/1.15
  effnet scale resnet50 --alpha 1.4 --beta 1.1 --gamma 1.1 --json

BASE is mobilenetv1, mobilenetv2, resnet50 or any model from `effnet models` (its own depth
and width are multiplied). Resolutions are rounded to a multiple of 8 pixels, repeats up
per stage (ceil)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scale",
        help="scale a baseline by phi or by depth/width/resolution; print params and MACs",
        description="Compound-scale a staged baseline (paper eq. 3) and show what it costs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "base", metavar="BASE", help="mobilenetv1, mobilenetv2, resnet50 or a model name"
    )
    g = p.add_argument_group("compound scaling (d = alpha^phi, w = beta^phi, r = gamma^phi)")
    g.add_argument("--phi", type=float, help="compound coefficient (default 1 with --alpha etc.)")
    g.add_argument("--alpha", type=float, help="depth base, >= 1 (default 1.2)")
    g.add_argument("--beta", type=float, help="width base, >= 1 (default 1.1)")
    g.add_argument("--gamma", type=float, help="resolution base, >= 1 (default 1.15)")
    e = p.add_argument_group("explicit multipliers (instead of compound scaling)")
    e.add_argument("--depth", type=float, help="depth multiplier d (repeats per stage x d, ceil)")
    e.add_argument("--width", type=float, help="width multiplier w (channels x w, rounded)")
    e.add_argument("--resolution", type=float, help="resolution multiplier r (pixels x r)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(func="effnet.cli.scale:run")
