"""`effnet scale BASE`: the scaled architecture per stage, params, MACs and the MACs ratio."""

from __future__ import annotations

import argparse
import json

from effnet.lab.scale import scale


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
