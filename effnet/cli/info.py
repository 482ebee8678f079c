"""`effnet info NAME`: per-stage architecture table with params and MACs."""

from __future__ import annotations

import argparse
import json

from effnet.analysis.info import model_info


def run(args: argparse.Namespace) -> int:
    info = model_info(args.name, args.image_size)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{info['name']}  {info['image_size']}px  params {info['params']:,}  "
        f"MACs {info['macs']:,} ({info['macs'] / 1e9:.3f} B)  act {info['act']}"
    )
    hdr = f"{'stage':<7}{'block':<8}{'k':>3}{'s':>3}{'e':>3}{'in':>6}{'out':>6}{'reps':>6}{'SE':>4}"
    print(hdr + f"{'params':>13}{'MACs':>16}")
    stem = info["stem"]
    print(
        f"{'stem':<7}{'conv':<8}{3:>3}{2:>3}{'-':>3}{info['in_chans']:>6}{stem['out_ch']:>6}"
        f"{1:>6}{'-':>4}{stem['params']:>13,}{stem['macs']:>16,}"
    )
    prev = stem["out_ch"]
    for s in info["stages"]:
        print(
            f"{s['stage']:<7}{s['block']:<8}{s['kernel']:>3}{s['stride']:>3}{s['expand']:>3}"
            f"{s['in_ch']:>6}{s['out_ch']:>6}{s['repeats']:>6}{'y' if s['se'] else 'n':>4}"
            f"{s['params']:>13,}{s['macs']:>16,}"
        )
        prev = s["out_ch"]
    head = info["head"]
    print(
        f"{'head':<7}{'conv':<8}{1:>3}{1:>3}{'-':>3}{prev:>6}{head['out_ch']:>6}{1:>6}{'-':>4}"
        f"{head['params']:>13,}{head['macs']:>16,}"
    )
    cls = info["classifier"]
    print(
        f"{'fc':<7}{'linear':<8}{'':>3}{'':>3}{'':>3}{head['out_ch']:>6}{info['num_classes']:>6}"
        f"{'':>6}{'':>4}{cls['params']:>13,}{cls['macs']:>16,}"
    )
    return 0
