"""`effnet scale BASE`: the scaled architecture per stage, params, MACs and the MACs ratio."""

from __future__ import annotations

import argparse
import json

from effnet.lab.scale import scale

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = scale(
        args.base,
        phi=args.phi,
        alpha=args.alpha,
        beta=args.beta,
        gamma=args.gamma,
        depth=args.depth,
        width=args.width,
        resolution=args.resolution,
    )
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(
        f"{res['base']}  depth x{res['depth']:.3g}  width x{res['width']:.3g}  "
        f"resolution x{res['resolution']:.3g} -> {res['image_size']}px"
    )
    if (res["total_depth"], res["total_width"]) != (res["depth"], res["width"]):
        print(
            f"  against the unscaled spec: depth x{res['total_depth']:.3g}, "
            f"width x{res['total_width']:.3g} (the base's own coefficients included)"
        )
    print(
        f"{'stage':<7}{'block':<12}{'k':>3}{'s':>3}{'in':>7}{'mid':>7}{'out':>7}{'reps':>6}"
        f"{'params':>13}{'MACs':>16}"
    )
    for s in res["stages"]:
        print(
            f"{s['stage']:<7}{s['block']:<12}{s['kernel']:>3}{s['stride']:>3}{s['in_ch']:>7}"
            f"{s['mid_ch']:>7}{s['out_ch']:>7}{s['repeats']:>6}{s['params']:>13,}{s['macs']:>16,}"
        )
    print(f"stem {res['stem_ch']} ch, head {res['head_ch'] or '-'} ch")
    print(
        f"params {res['params']:,} (baseline {res['base_params']:,})   "
        f"MACs {res['macs'] / 1e9:.3f} B (baseline {res['base_macs'] / 1e9:.3f} B at "
        f"{res['base_image_size']}px)"
    )
    line = (
        f"MACs ratio {res['macs_ratio']:.3f} measured, "
        f"{res['theory_ratio']:.3f} theoretical (d*w^2*r^2)"
    )
    if "phi_ratio" in res:
        line += f", {res['phi_ratio']:.3f} target (2^phi)"
    print(line)
    return 0
