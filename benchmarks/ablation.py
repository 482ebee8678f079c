"""Before/after figures for each speed and memory technique, in one interleaved run.

    python3 benchmarks/ablation.py                         # B0, 224 px, batch 16, 2 threads
    python3 benchmarks/ablation.py --model efficientnetv2_s --compile

Each row adds or removes one technique against the plain eager model ("before": no BN folding,
no fused BN+SiLU, no in-place ops, NCHW). Writes
benchmarks/results/ablation.json and ablation.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import torch

# Benchmark the checkout this script lives in, not whichever effnet is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet.benchmark.engine import (
    Candidate,
    _onnx_session,
    _sgd_step,
    effnet_variant,
    machine_info,
    measure,
)
from effnet.deploy.optimize import optimize_for_inference
from effnet.fused import plain_ops

OUT = Path(__file__).resolve().parent / "results"

INFER = (  # label, variant kind
    ("before: plain eager (BN, NCHW)", "effnet plain"),
    ("+ channels-last only", "effnet plain cl"),
    ("default (effnet.accelerate): BN folded per call, in-place SiLU, channels-last", "effnet"),
    ("optimize_for_inference (BN folded for good)", "effnet optimized"),
)
TRAIN = (
    ("before: plain eager (NCHW)", "effnet plain"),
    ("+ channels-last only", "effnet plain cl"),
    ("fused BN+SiLU, one-buffer gradients, NCHW", "effnet nchw"),
    ("default: fused BN+SiLU, one-buffer gradients, channels-last", "effnet"),
    ("default + activation recompute", "effnet recompute"),
    ("default + gradient checkpointing per stage", "effnet ckpt"),
)


def _ctx(kind: str) -> contextlib.AbstractContextManager:
    return plain_ops() if "plain" in kind.split() else contextlib.nullcontext()


def candidates(name: str, size: int, threads: int, compile_mode: str | None, tmp: Path):
    cands = []
    for label, kind in INFER:
        model, _ = effnet_variant(name, kind)
        model.eval()

        def infer(x, model=model, kind=kind):
            with _ctx(kind), torch.inference_mode():
                return model(x)

        cands.append(Candidate(f"infer: {label}", infer=infer, probe=kind))
    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401

        fast = optimize_for_inference(effnet_variant(name, "effnet")[0], channels_last=False)
        example = torch.randn(1, 3, size, size)
        run = _onnx_session(fast, example, threads, tmp / "effnet.onnx")
        cands.append(Candidate("infer: ONNX Runtime on the folded export", infer=run))
    if compile_mode:
        model = optimize_for_inference(effnet_variant(name, "effnet")[0], compile=compile_mode)

        def infer_c(x, model=model):
            with torch.inference_mode():
                return model(x)

        cands.append(Candidate(f"infer: torch.compile ({compile_mode})", infer=infer_c))
    for label, kind in TRAIN:
        model, _ = effnet_variant(name, kind)
        step = _sgd_step(model.train())

        def train(x, y, step=step, kind=kind):
            with _ctx(kind):
                step(x, y)

        cands.append(Candidate(f"train: {label}", train_step=train, probe=kind))
    if compile_mode:
        model = torch.compile(effnet_variant(name, "effnet")[0].train(), mode=compile_mode)
        cands.append(
            Candidate(f"train: torch.compile ({compile_mode})", train_step=_sgd_step(model))
        )
    return cands


def relative(rows: dict) -> dict:
    """Each row against the first ("before") row of its kind: speed-up and memory ratio."""
    out = {}
    for prefix, metrics in (
        ("infer", ("latency_ms", "infer_img_s")),
        ("train", ("train_img_s", "train_peak_mib")),
    ):
        names = [n for n in rows if n.startswith(prefix)]
        base = rows[names[0]]
        for n in names:
            for m in metrics:
                a, b = rows[n].get(m), base.get(m)
                if a and b:
                    r = (
                        b["median"] / a["median"]
                        if m == "latency_ms"
                        else a["median"] / b["median"]
                    )
                    out.setdefault(n, {})[m] = round(r, 3)
    return out


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"# Ablation: {doc['model']} at {doc['image_size']} px, batch {doc['batch_size']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {doc['threads']} threads, torch {m['torch']}, "
        f"load average at start {m.get('load_avg_1m', '?')}; {doc['reps']} interleaved "
        "repetitions, medians (x = relative to the first row of each part).",
        f"Command: `{doc['command']}`",
        "",
        "| path | batch-1 latency ms | inference img/s | training img/s | train peak MiB |",
        "|---|---|---|---|---|",
    ]
    for n, row in doc["results"].items():
        rel = doc["relative"].get(n, {})
        cells = []
        for k in ("latency_ms", "infer_img_s", "train_img_s", "train_peak_mib"):
            s = row.get(k)
            cells.append(
                f"{s['median']:.1f} ({rel[k]:.2f}x)"
                if s and k in rel
                else (f"{s['median']:.1f}" if s else "-")
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--compile", nargs="?", const="max-autotune-no-cudagraphs", default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f"[ablation] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cands = candidates(args.model, args.image_size, args.threads, args.compile, Path(tmp))
        rows = measure(
            cands,
            args.model,
            args.image_size,
            args.batch_size,
            ("infer", "train"),
            args.threads,
            torch.device("cpu"),
            args.reps,
            1,
            True,
            log,
        )
    doc = {
        "command": "python3 benchmarks/ablation.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "reps": args.reps,
        "machine": machine_info(torch.device("cpu")),
        "results": rows,
        "relative": relative(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(doc, indent=2))
    (args.out / "ablation.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
