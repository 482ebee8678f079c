"""Ablation of one inference technique: the high-resolution prefix run a few images at a time.

    python3 benchmarks/prefix_chunks.py --threads 2 --reps 20     # about 3 min on 2 cores
    python3 benchmarks/prefix_chunks.py --threads 2 --reps 20 --trained-first

``effnet.accelerate``'s CPU inference runs the stem and the stages at stride <= 4 in chunks of
the batch (``effnet/fast.py``, ``_prefix_split``), then the rest of the network at the full
batch. This times each model's accelerated default (and a features_only B0 backbone at
512 px, as a detector would run it) with the chunks and without them (the same
model, the technique switched off), interleaved in one process, the order reversed every other
repetition, and checks the outputs agree. Reported: images/s (median of the timed calls), the
ratio chunked / unchunked and the chunk count used. Writes results/prefix_chunks.{json,md}.

The gain depends on the process state (benchmarks/README.md, "Inference by process state"): in
a process that has only served, every large map is a fresh mmap whose pages fault on first
touch, and slices under glibc's 32 MiB mmap threshold avoid that. ``--trained-first`` runs two
training steps of B0 first (glibc's heap then keeps large blocks) and writes
results/prefix_chunks_trained.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnet.fast
from effnet.benchmark import engine

OUT = Path(__file__).resolve().parent / "results"
CASES = (
    ("efficientnet_b0", 224, 16),
    ("efficientnet_b0", 224, 32),
    ("efficientnet_lite0", 224, 16),
    ("efficientnetv2_b0", 224, 16),
    ("efficientnet_b3", 300, 8),
    ("efficientnet_b0 features_only", 512, 4),  # a detection backbone's five maps
)


def run(model: torch.nn.Module, x: torch.Tensor, chunked: bool) -> float:
    effnet.fast._PREFIX_STRIDE = 4 if chunked else 0  # 0: no stage qualifies, no chunks
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def build(name: str) -> torch.nn.Module:
    if name.endswith(" features_only"):
        arch = name.split()[0]
        return effnet.accelerate(effnet.create_model(arch, features_only=True)).eval()
    model, _ = engine.effnet_variant(name, "effnet")
    return model.eval()


def max_diff(a, b) -> float:
    pairs = zip(a, b, strict=True) if isinstance(a, list) else [(a, b)]
    return max((x - y).abs().max().item() for x, y in pairs)


def measure(name: str, size: int, batch: int, reps: int) -> dict:
    model = build(name)
    x = torch.randn(batch, 3, size, size)
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        effnet.fast._PREFIX_STRIDE = 4
        split = effnet.fast._prefix_split(model, x)
        a = model(x)
        effnet.fast._PREFIX_STRIDE = 0
        b = model(x)
        diff = max_diff(a, b)
        for i in range(reps + 2):
            for chunked in (True, False) if i % 2 else (False, True):
                t = run(model, x, chunked)
                if i >= 2:
                    times[chunked].append(t)
    effnet.fast._PREFIX_STRIDE = 4
    on, off = (batch / statistics.median(times[k]) for k in (True, False))
    return {
        "model": name,
        "image_size": size,
        "batch": batch,
        "chunks": split[1] if split else 1,
        "prefix_stages": split[0] if split else 0,
        "chunked_img_s": round(on, 1),
        "unchunked_img_s": round(off, 1),
        "ratio": round(on / off, 3),
        "max_abs_diff": diff,
    }


def to_markdown(doc: dict) -> str:
    lines = [
        f"# High-resolution prefix in chunks: CPU inference, {doc['threads']} threads, "
        f"{doc['reps']} interleaved repetitions, {doc['state']}",
        "",
        f"Machine: {doc['cpu']}; torch {doc['torch']}; load average at start {doc['load']}.",
        "",
        "| model | px | batch | chunks | prefix stages | chunked img/s | unchunked img/s "
        "| chunked / unchunked | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['model']} | {r['image_size']} | {r['batch']} | {r['chunks']} "
            f"| {r['prefix_stages']} | {r['chunked_img_s']} | {r['unchunked_img_s']} "
            f"| {r['ratio']:.2f}x | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--trained-first", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.trained_first:
        model, _ = engine.effnet_variant("efficientnet_b0", "effnet")
        step = engine._sgd_step(model.train())
        for _ in range(2):
            step(torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,)))
        del model, step
    doc = {
        "threads": args.threads,
        "reps": args.reps,
        "cpu": engine._cpu_name(),
        "torch": torch.__version__,
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "state": "after two B0 training steps" if args.trained_first else "fresh process",
        "rows": [],
    }
    for name, size, batch in CASES:
        doc["rows"].append(measure(name, size, batch, args.reps))
        print(doc["rows"][-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "prefix_chunks_trained" if args.trained_first else "prefix_chunks"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    (args.out / f"{stem}.md").write_text(to_markdown(doc))
    print(to_markdown(doc))


if __name__ == "__main__":
    main()
