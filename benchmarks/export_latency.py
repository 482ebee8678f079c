"""Latency of eager PyTorch, TorchScript and ONNX Runtime for exported effnet models.

Rerun: ``python3 benchmarks/export_latency.py`` (writes benchmarks/results/export.md).
Runtimes are measured interleaved (eager, TorchScript, ORT, eager, ...) after warm-up, so a noisy
machine slows all of them alike; the table reports medians and min-max of the repetitions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import effnet  # noqa: E402
from effnet.deploy.export import export_model, load_onnx  # noqa: E402
from effnet.deploy.export.torchscript import load_torchscript  # noqa: E402


def timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def bench(name: str, batches: list[int], repeats: int, folder: Path) -> list[dict]:
    model = effnet.create_model(name).eval()
    size = model.pretrained_cfg["input_size"][-1]
    onnx_path = export_model(model, "onnx", folder / f"{name}.onnx")
    ts_path = export_model(model, "torchscript", folder / f"{name}.pt")
    session = load_onnx(onnx_path)
    scripted, _ = load_torchscript(ts_path)

    def eager(x):
        with torch.inference_mode():
            return model(x)

    def script(x):
        with torch.inference_mode():
            return scripted(x)

    def ort(x):
        return session.run(None, {"input": x.numpy()})[0]

    runtimes = {"eager": eager, "torchscript": script, "onnxruntime": ort}
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        for fn in runtimes.values():  # warm-up: allocations, ORT arena, TorchScript profiling
            fn(x)
            fn(x)
        times: dict[str, list[float]] = {k: [] for k in runtimes}
        for _ in range(repeats):
            for k, fn in runtimes.items():
                times[k].append(timed(fn, x))
        base = statistics.median(times["eager"])
        for k, ts in times.items():
            med = statistics.median(ts)
            rows.append(
                {
                    "model": name,
                    "size": size,
                    "batch": batch,
                    "runtime": k,
                    "ms": med * 1e3,
                    "min": min(ts) * 1e3,
                    "max": max(ts) * 1e3,
                    "img_s": batch / med,
                    "speedup": base / med,
                }
            )
        print(
            f"{name} batch {batch}: "
            + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()),
            flush=True,
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="efficientnet_b0,efficientnet_lite0")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, batches, args.repeats, Path(tmp))
    import onnxruntime

    lines = [
        "# Export latency: eager PyTorch vs TorchScript vs ONNX Runtime",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{args.threads} threads; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}. "
        f"{args.repeats} interleaved repetitions after warm-up; median "
        "(min-max). Random weights (speed does not depend on them), fp32, native resolution.",
        f"Load average when it started: {load[0]:.1f} on {os.cpu_count()} cores (other work on the "
        "machine inflates eager PyTorch, whose threads spin, more than ONNX Runtime).",
        f"Regenerate: `python3 benchmarks/export_latency.py` ({time.strftime('%Y-%m-%d %H:%M')}).",
        "",
        "| model | res | batch | runtime | latency ms (min-max) | img/s | vs eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['runtime']} | "
            f"{r['ms']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | {r['img_s']:.1f} | "
            f"{r['speedup']:.2f}x |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
