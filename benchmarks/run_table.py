"""Produce the README performance table: effnet vs timm / torchvision / ONNX Runtime.

    python3 benchmarks/run_table.py                      # B0, Lite0, V2-S on CPU, 2 threads
    python3 benchmarks/run_table.py --models efficientnet_b0 --reps 5 --compile

Writes benchmarks/results/table.json (every measurement, machine info) and table.md. Each model is
one interleaved run of the benchmark engine (effnet.perf.bench) in a fresh process, so ratios
within a row are fair even on a busy machine; absolute numbers only compare within one run. Also
measured: the paper's Table 4 check (batch-1, single-thread latency of B1 against torchvision's
ResNet-152) and the data loader's throughput against training throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# Benchmark the checkout this script lives in, not whichever effnet is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet.benchmark.engine import format_report, machine_info, run_benchmark
from effnet.benchmark.loader import loader_throughput

OUT = Path(__file__).resolve().parent / "results"
MODELS = ("efficientnet_b0", "efficientnet_lite0", "efficientnetv2_s")


def table4(reps: int, log) -> dict:
    """Paper Table 4: B1 vs ResNet-152, batch 1, one thread, 240 px / 224 px, interleaved."""
    import torchvision

    import effnet

    torch.set_num_threads(1)
    b1 = effnet.create_model("efficientnet_b1").eval()
    r152 = torchvision.models.resnet152().eval()
    xb, xr = torch.randn(1, 3, 240, 240), torch.randn(1, 3, 224, 224)
    times: dict[str, list[float]] = {"efficientnet_b1": [], "resnet152": []}
    with torch.inference_mode():
        for m, x in ((b1, xb), (r152, xr)):
            m(x)
        for r in range(reps):
            log(f"table 4: repetition {r + 1}/{reps}")
            for key, m, x in (("efficientnet_b1", b1, xb), ("resnet152", r152, xr)):
                t0 = time.perf_counter()
                m(x)
                times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "latency_ms": {
            k: {"median": med[k], "min": min(v), "max": max(v)} for k, v in times.items()
        },
        "speedup": round(med["resnet152"] / med["efficientnet_b1"], 2),
        "paper_speedup": 5.7,
    }


def _bf16_markdown(res: dict) -> str:
    from train_bf16 import to_markdown as bf16_markdown  # the sibling script in benchmarks/

    return bf16_markdown(res)


def _cell(row: dict, key: str, fmt: str = "{:.1f}") -> str:
    s = row.get(key)
    return (
        "-"
        if not s
        else f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
    )


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        "# effnet performance table",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"{doc['threads']} threads, fp32, load average at start {m.get('load_avg_1m', '?')}. "
        f"Medians of {doc['reps']} interleaved repetitions (min-max).",
        f"Command: `{doc['command']}`",
        "",
    ]
    for res in doc["runs"]:
        lines += [
            f"## {res['model']} at {res['image_size']} px, batch {res['batch_size']}",
            "",
            "| candidate | batch-1 latency ms | inference img/s | training img/s "
            "| train peak MiB |",
            "|---|---|---|---|---|",
        ]
        for name, row in res["results"].items():
            lines.append(
                f"| {name} | {_cell(row, 'latency_ms')} | {_cell(row, 'infer_img_s')} | "
                f"{_cell(row, 'train_img_s')} | {_cell(row, 'train_peak_mib', '{:.0f}')} |"
            )
        lines += [
            "",
            "| ratio | of medians | per repetition: median (min-max) |",
            "|---|---|---|",
        ]
        paired = res.get("paired_ratios", {})
        for metric, pairs in res["ratios"].items():
            for pair, r in pairs.items():
                p = paired.get(metric, {}).get(pair)
                cell = f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})" if p else "-"
                lines.append(f"| {metric}: {pair} | {r:.2f}x | {cell} |")
        lines += [f"- skipped: {s}" for s in res["skipped"]] + [""]
    if doc.get("bf16_train"):
        lines += [_bf16_markdown(doc["bf16_train"]).replace("# Training", "## bf16 training"), ""]
    if doc.get("table4"):
        t = doc["table4"]
        lines += [
            "## Paper Table 4 check (batch 1, one thread)",
            "",
            f"EfficientNet-B1 (240 px) {t['latency_ms']['efficientnet_b1']['median']:.1f} ms vs "
            f"ResNet-152 (224 px) {t['latency_ms']['resnet152']['median']:.1f} ms: "
            f"**{t['speedup']}x** faster (paper: {t['paper_speedup']}x).",
            "",
        ]
    if doc.get("loader"):
        ld = doc["loader"]
        lines += [
            "## Data loader vs training",
            "",
            f"Synthetic JPEGs through torchvision train transforms: {ld['img_s']:.1f} img/s with "
            f"{ld['workers']} worker(s); effnet B0 training {ld['train_img_s']:.1f} img/s: "
            f"loader / training = {ld['ratio']:.2f}x.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--against", default="timm,torchvision,onnxruntime")
    ap.add_argument("--compile", nargs="?", const="max-autotune-no-cudagraphs", default=None)
    ap.add_argument(
        "--bf16-train",
        action="store_true",
        help="add benchmarks/train_bf16.py's rows (fresh process): effnet bf16 autocast + "
        "channels-last + fused against torchvision/timm fp32 eager and their bf16 channels-last",
    )
    ap.add_argument("--skip-table4", action="store_true")
    ap.add_argument("--skip-loader", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one-model", help=argparse.SUPPRESS)  # internal: one model, this process
    ap.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[run_table] {msg}", file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python3 benchmarks/run_table.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "threads": args.threads,
        "reps": args.reps,
        "machine": machine_info(torch.device("cpu")),
        "runs": [],
    }

    def save() -> None:
        (args.out / "table.json").write_text(json.dumps(doc, indent=2))
        (args.out / "table.md").write_text(to_markdown(doc))

    if args.one_model:
        if args.json_out is None:
            ap.error("--one-model needs --json-out")
        res = run_benchmark(
            args.one_model,
            image_size=args.image_size,
            batch_size=args.batch_size,
            threads=args.threads,
            against=tuple(a for a in args.against.split(",") if a),
            reps=args.reps,
            compile_mode=args.compile,
            log=log,
        )
        args.json_out.write_text(json.dumps(res))
        return 0

    for name in [m for m in args.models.split(",") if m]:
        # Each model in a fresh process: what one model's training leaves in the allocator
        # would otherwise speed up the next model's eager inference (see effnet.perf.bench).
        log(f"{name} (fresh process)")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one-model", name]
            cmd += ["--json-out", str(out), "--image-size", str(args.image_size)]
            cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            cmd += ["--reps", str(args.reps), "--against", args.against]
            if args.compile:
                cmd += ["--compile", args.compile]
            subprocess.run(cmd, check=True)
            res = json.loads(out.read_text())
        print(format_report(res), flush=True)
        doc["runs"].append(res)
        save()  # partial results survive an interrupted run
    if args.bf16_train:
        log("bf16 training (fresh process): benchmarks/train_bf16.py")
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "train_bf16.py")]
        cmd += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
        cmd += ["--threads", str(args.threads), "--reps", str(args.reps), "--out", str(args.out)]
        subprocess.run(cmd, check=True)
        doc["bf16_train"] = json.loads((args.out / "train_bf16.json").read_text())
        save()
    if not args.skip_loader:
        runs = {r["model"]: r for r in doc["runs"]}
        train = runs.get("efficientnet_b0", {}).get("results", {}).get("effnet", {})
        train_img_s = (train.get("train_img_s") or {}).get("median")
        ld = loader_throughput(args.image_size, args.batch_size, workers=1, log=log)
        if train_img_s:
            doc["loader"] = {**ld, "train_img_s": train_img_s, "ratio": ld["img_s"] / train_img_s}
        save()
    if not args.skip_table4:
        doc["table4"] = table4(max(args.reps, 3), log)
        save()
    log(f"wrote {args.out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
