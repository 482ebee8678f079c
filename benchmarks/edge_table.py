"""Edge deployment speed table (issue 16): Lite0 and B0 at batch 1 and batch N on 2 threads.

Every row runs in one ``effnet benchmark`` run per model (``effnet.benchmark.engine.
run_benchmark``, inference only), so the repetitions interleave: timm eager, effnet eager,
ONNX Runtime fp32 and INT8, ExecuTorch fp32 and INT8 (XNNPACK), LiteRT fp32 and INT8. Ratios are
taken against one named baseline row (default timm) within the same run. Random weights: speed
does not depend on them; INT8 files are calibrated on digits images.

Rerun on a quiet machine: ``python3 benchmarks/edge_table.py`` (writes
benchmarks/results/edge.{json,md}). A quick end-to-end check of the script itself:
``python3 benchmarks/edge_table.py --models efficientnet_lite0 --image-size 64 --reps 1
--warmup 1 --out /tmp/edge`` (the numbers mean nothing at that setting).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from effnet.benchmark.engine import EDGE, run_benchmark  # noqa: E402

AGAINST = ("timm", "onnxruntime", *EDGE)
ROWS = {  # candidate in the benchmark -> row label in the table
    "timm": "timm eager",
    "effnet": "effnet eager",
    "effnet onnxruntime": "ONNX Runtime fp32",
    "effnet onnxruntime int8": "ONNX Runtime INT8",
    "effnet executorch": "ExecuTorch fp32 (XNNPACK)",
    "effnet executorch int8": "ExecuTorch INT8 (XNNPACK)",
    "effnet litert": "LiteRT fp32",
    "effnet litert int8": "LiteRT INT8",
}


def table_rows(res: dict, baseline: str) -> list[dict]:
    """One row per candidate in ROWS order: median batch-1 latency and batch-N throughput, and
    their ratios to ``baseline`` (> 1: faster than the baseline)."""
    results = res["results"]
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the candidates {sorted(results)}")
    base = results[baseline]
    rows = []
    for name, label in ROWS.items():
        if name not in results:
            continue
        lat, ips = results[name]["latency_ms"]["median"], results[name]["infer_img_s"]["median"]
        rows.append({
            "model": res["model"], "candidate": label, "latency_ms": lat, "img_s": ips,
            "latency_x": base["latency_ms"]["median"] / lat,
            "img_s_x": ips / base["infer_img_s"]["median"],
        })  # fmt: skip
    return rows


def markdown(doc: dict) -> str:
    b, base = doc["batch"], ROWS.get(doc["baseline"], doc["baseline"])
    lines = [
        f"# Edge runtimes (`{doc['command']}`)",
        "",
        f"{doc['threads']} threads, {doc['reps']} interleaved reps, {doc['machine']}. Ratios "
        f"against {base} in the same run (> 1: faster).",
        "",
        f"| model | runtime | batch-1 latency (ms) | vs {base} | batch-{b} img/s | vs {base} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['model']} | {r['candidate']} | {r['latency_ms']:.1f} | {r['latency_x']:.2f}x "
            f"| {r['img_s']:.1f} | {r['img_s_x']:.2f}x |"
        )
    lines += [f"\nskipped: {s}" for s in doc.get("skipped", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet_lite0,efficientnet_b0")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--image-size", type=int, default=None, help="default: each model's own")
    p.add_argument("--baseline", default="timm", help="candidate the ratios divide by")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edge")
    args = p.parse_args(argv)
    doc = {"command": "python3 benchmarks/edge_table.py " + " ".join(argv or sys.argv[1:]),
           "threads": args.threads, "batch": args.batch, "reps": args.reps,
           "baseline": args.baseline, "rows": [], "skipped": [], "runs": []}  # fmt: skip
    for name in args.models.split(","):
        res = run_benchmark(
            name, image_size=args.image_size, batch_size=args.batch, mode="infer",
            threads=args.threads, against=AGAINST, reps=args.reps, warmup=args.warmup,
            memory=False, log=lambda s, n=name: print(f"[{n}] {s}", file=sys.stderr, flush=True),
        )  # fmt: skip
        m = res["machine"]
        doc["machine"] = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}"
        doc["rows"] += table_rows(res, args.baseline)
        doc["skipped"] += [f"{name}: {s}" for s in res["skipped"]]
        doc["runs"].append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
