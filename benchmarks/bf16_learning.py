"""Does bf16 autocast learn as well as fp32? (issue 18, acceptance 2; accuracy only, no timing)

    python3 benchmarks/bf16_learning.py                         # digits + Lite0 fine-tune, 3 seeds
    python3 benchmarks/bf16_learning.py --cases digits --epochs 3 --seeds 0   # a quick smoke run

Each case trains with ``--amp none`` and ``--amp bf16`` for every seed (effnet's default
training path: ``effnet.accelerate``, channels-last on CPU, so bf16 runs the fused BN+SiLU path),
and compares the mean final top-1. The check holds when |mean(bf16) - mean(fp32)| <= --tolerance
(0.5 points). Cases: ``digits`` (the default ``effnet train`` run) and ``lite0`` (the built-in
``finetune_lite0`` config on digits, from the pip Lite0 weights). ``--epochs``,
``--max-train-samples`` and ``--image-size`` shorten every run alike. Writes
results/bf16_learning.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnet

OUT = Path(__file__).resolve().parent / "results"
CASES = {"digits": "digits", "lite0": "finetune_lite0"}


def run_case(case: str, amp: str, seed: int, args, workdir: Path) -> float:
    overrides: dict = {"amp": amp, "seed": seed, "out": str(workdir / f"{case}-{amp}-{seed}")}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.max_train_samples:
        overrides["max_train_samples"] = args.max_train_samples
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.threads:
        overrides["threads"] = args.threads
    summary = effnet.train(CASES[case], **overrides)
    return float(summary["final_top1"])


def to_markdown(doc: dict) -> str:
    lines = [
        "# bf16 autocast against fp32: final top-1 (accuracy only)",
        "",
        f"Command: `{doc['command']}`",
        "",
        "| case | fp32 top-1 per seed | bf16 top-1 per seed | mean fp32 | mean bf16 | diff | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, r in doc["cases"].items():
        lines.append(
            f"| {case} | {', '.join(f'{v:.2f}' for v in r['none'])} | "
            f"{', '.join(f'{v:.2f}' for v in r['bf16'])} | {r['mean_fp32']:.2f} | "
            f"{r['mean_bf16']:.2f} | {r['diff']:+.2f} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="digits,lite0", help=f"from {', '.join(CASES)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=0, help="0: the config's own")
    ap.add_argument("--max-train-samples", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=0, help="0: the config's own")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.5, help="top-1 points")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case {bad[0]!r}; choose from {', '.join(CASES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    doc = {"command": "python3 benchmarks/bf16_learning.py " + " ".join(argv or sys.argv[1:])}
    doc["cases"] = {}
    with tempfile.TemporaryDirectory(prefix="effnet-bf16-") as tmp:
        for case in cases:
            r = {
                amp: [run_case(case, amp, s, args, Path(tmp)) for s in seeds]
                for amp in ("none", "bf16")
            }
            r["mean_fp32"], r["mean_bf16"] = (statistics.mean(r[a]) for a in ("none", "bf16"))
            r["diff"] = r["mean_bf16"] - r["mean_fp32"]
            r["ok"] = abs(r["diff"]) <= args.tolerance
            doc["cases"][case] = r
            print(f"{case}: fp32 {r['none']} bf16 {r['bf16']} diff {r['diff']:+.2f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bf16_learning.json").write_text(json.dumps(doc, indent=2))
    (args.out / "bf16_learning.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0 if all(r["ok"] for r in doc["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
