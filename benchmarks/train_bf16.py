"""effnet's fastest training path (bf16 autocast + channels-last + fused BN+SiLU) against the peers'
fp32 eager and their own bf16 autocast channels-last training, in one interleaved run.

    python3 benchmarks/train_bf16.py --threads 2 --reps 6               # CPU, B0 at 224, batch 16
    python3 benchmarks/train_bf16.py --device cuda --compile --reps 6    # GPU rows (gpu_table.sh)

Candidates (names starting with "effnet" are effnet's; ratios are effnet / peer):
  effnet bf16        effnet.accelerate (fused BN+SiLU, channels-last) under bf16 autocast
  effnet             the fp32 default (effnet.accelerate)
  torchvision        fp32 eager, default memory format (the issue's baseline)
  torchvision bf16   channels-last model and input, bf16 autocast
  timm bf16          the same for timm (with --against timm)
  ... compile        torch.compile of the bf16 candidates (--compile)
Timing runs in this process (the engine's interleaved rounds, effnet.benchmark.engine.measure).
Memory runs each candidate in a fresh process: whole-process peak RSS (VmHWM, what an OOM killer
sees) and the peak above the starting RSS, after 3 training steps; on CUDA the allocator's peak.
Writes results/train_bf16.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effnet
from effnet.benchmark import engine
from effnet.fast import accelerate

OUT = Path(__file__).resolve().parent / "results"
# candidate -> (library, bf16 autocast, channels-last, compiled)
KINDS = {
    "effnet bf16": ("effnet", True, True, False),
    "effnet": ("effnet", False, True, False),
    "torchvision": ("torchvision", False, False, False),
    "torchvision bf16": ("torchvision", True, True, False),
    "timm": ("timm", False, False, False),
    "timm bf16": ("timm", True, True, False),
}


def _kinds(against: list[str], compile_: bool) -> dict[str, tuple]:
    kinds = {k: v for k, v in KINDS.items() if v[0] == "effnet" or v[0] in against}
    if compile_:
        kinds |= {f"{k} compile": (*v[:3], True) for k, v in kinds.items() if v[1]}
    return kinds


def build(kind: tuple, name: str, device: torch.device, mode: str | None):
    """The training step of one candidate: ``step(x, y)`` (forward, backward, SGD step)."""
    lib, bf16, channels_last, compiled = kind
    if lib == "effnet":
        model = accelerate(effnet.create_model(name, device=device), channels_last=channels_last)
    elif lib == "timm":
        model = engine._build_timm(name, 1000).to(device)
    else:
        model = engine._build_torchvision(name, 1000).to(device)
    if channels_last and lib != "effnet":
        model = model.to(memory_format=torch.channels_last)
    model.train()
    fwd = torch.compile(model, mode=mode) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(fwd(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def probe(cand: str, args) -> dict:
    """Peak memory of 3 training steps of ``cand`` in this (fresh) process."""
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    start = engine._status_kib("VmRSS")
    step = build(_kinds(["timm", "torchvision"], True)[cand], args.model, dev, args.compile)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=dev)
    y = torch.randint(0, 1000, (args.batch_size,), device=dev)
    for _ in range(3):
        step(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return {"train_peak_mib": torch.cuda.max_memory_allocated(dev) / 2**20}
    hwm = engine._status_kib("VmHWM")
    return {"process_peak_rss_mib": hwm / 1024, "train_peak_mib": (hwm - start) / 1024}


def _memory(cands: list[str], args, log) -> dict[str, dict]:
    out = {}
    for c in cands:
        log(f"memory: {c} (fresh process)")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", c]
        cmd += ["--model", args.model, "--image-size", str(args.image_size)]
        cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        cmd += ["--device", args.device] + (["--compile", args.compile] if args.compile else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            out[c] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            log(f"memory probe for {c} failed: {proc.stderr.strip()[-300:]}")
    return out


def run(args, log) -> dict:
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    against = [a for a in args.against.split(",") if a]
    kinds = _kinds(against, bool(args.compile))
    mem = _memory(list(kinds), args, log) if args.memory else {}
    torch.manual_seed(0)
    cands = [
        engine.Candidate(c, train_step=build(k, args.model, dev, args.compile))
        for c, k in kinds.items()
    ]
    rows = engine.measure(
        cands,
        args.model,
        args.image_size,
        args.batch_size,
        ("train",),
        args.threads,
        dev,
        args.reps,
        args.warmup,
        False,
        log,
    )
    for c, m in mem.items():
        for key, v in m.items():
            rows[c][key] = {"median": v, "min": v, "max": v, "n": 1, "values": [round(v, 1)]}
    info = engine.machine_info(dev)
    info["isa"] = cpu_isa()
    return {
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "reps": args.reps,
        "device": str(dev),
        "machine": info,
        "command": "python3 benchmarks/train_bf16.py " + " ".join(sys.argv[1:]),
        "results": rows,
        "ratios": engine.ratios(rows),
        "paired_ratios": engine.paired_ratios(rows),
    }


def cpu_isa() -> str:
    """The vector instruction sets /proc/cpuinfo advertises that matter for these kernels."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    want = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in want if f in flags) or "none of " + ", ".join(want)


def to_markdown(doc: dict) -> str:
    m = doc["machine"]
    where = m.get("gpu") or m["cpu"]
    lines = [
        f"# Training: {doc['model']} at {doc['image_size']} px, batch {doc['batch_size']}",
        "",
        f"Device: {where} ({doc['device']}); CPU ISA: {m['isa']}; torch {m['torch']}, "
        f"{doc['threads']} threads, load average at start {m.get('load_avg_1m', '?')}. "
        f"Medians of {doc['reps']} interleaved repetitions (min-max).",
        f"Command: `{doc['command']}`",
        "",
        "| candidate | training img/s | whole-process peak RSS MiB | peak above start MiB |",
        "|---|---|---|---|",
    ]
    for c, row in doc["results"].items():
        t, rss, above = (
            row.get(k) for k in ("train_img_s", "process_peak_rss_mib", "train_peak_mib")
        )
        cell = f"{t['median']:.1f} ({t['min']:.1f}-{t['max']:.1f})" if t else "-"
        lines.append(f"| {c} | {cell} | {rss['median']:.0f} |" if rss else f"| {c} | {cell} | - |")
        lines[-1] += f" {above['median']:.0f} |" if above else " - |"
    lines += [
        "",
        "| ratio (effnet / peer; > 1 faster, memory < 1 less) | of medians | per repetition |",
        "|---|---|---|",
    ]
    for metric, pairs in doc["ratios"].items():
        for pair, r in pairs.items():
            p = doc["paired_ratios"].get(metric, {}).get(pair)
            cell = f"{p['median']:.2f}x ({p['min']:.2f}-{p['max']:.2f})" if p else "-"
            lines.append(f"| {metric}: {pair} | {r:.2f}x | {cell} |")
    rss = {
        c: r["process_peak_rss_mib"]["median"]
        for c, r in doc["results"].items()
        if r.get("process_peak_rss_mib")
    }
    if "torchvision" in rss:
        lines += [""] + [
            f"- whole-process peak RSS {c} / torchvision fp32: {v / rss['torchvision']:.2f}x"
            for c, v in rss.items()
            if c.startswith("effnet")
        ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--against", default="torchvision,timm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        help="add torch.compile rows of the bf16 candidates (mode, default 'default')",
    )
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. _gpu)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one memory probe
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args)))
        return 0

    def log(msg: str) -> None:
        print(f"[train_bf16] {msg}", file=sys.stderr, flush=True)

    doc = run(args, log)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"train_bf16{args.tag}.json").write_text(json.dumps(doc, indent=2))
    md = to_markdown(doc)
    (args.out / f"train_bf16{args.tag}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
