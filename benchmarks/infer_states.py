"""Default eager inference in several process states: effnet against torchvision and timm.

    python3 benchmarks/infer_states.py --threads 2 --reps 3        # B0 at 224, batch 16

Inference speed on CPU depends on what the process did before: a training step's frees leave
glibc's heap grown, other models and an ONNX Runtime session leave their own allocations and
oneDNN caches. A serving process may be in any of these states, so each is measured:

  fresh     a new process that builds only the timed model
  trained   a new process that first runs two training steps of the same architecture
  busy      a new process that first does the same other work whatever it times: builds the
            three libraries' models and effnet-B3, runs one training step of each B0, and
            opens and runs an ONNX Runtime session
  shared    one process does the busy work, then times all three libraries in it, interleaved
            (A B C, C B A, ...), as an in-process benchmark would

Each fresh-process state runs every library in its own process; the libraries alternate and
the order reverses every repetition. Reported: images/s (median of the timed calls, then the
median over repetitions), the ratio of medians and the median (min-max) of the per-repetition
ratios effnet / peer, and each process's peak RSS (VmHWM). Writes results/infer_states.{json,md}.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet.benchmark import engine

OUT = Path(__file__).resolve().parent / "results"
LIBS = ("effnet", "torchvision", "timm")
STATES = ("fresh", "trained", "busy", "shared")


def build(lib: str, name: str) -> torch.nn.Module:
    """The model a user of ``lib`` gets by default, in eval mode."""
    if lib == "effnet":
        model, _ = engine.effnet_variant(name, "effnet")
    elif lib == "timm":
        model = engine._build_timm(name, 1000)
    else:
        model = engine._build_torchvision(name, 1000)
    return model.eval()


def train_steps(lib: str, name: str, batch: int, size: int, steps: int) -> None:
    model = build(lib, name).train()
    step = engine._sgd_step(model)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    for _ in range(steps):
        step(x, y)


def busy_work(name: str, batch: int, size: int) -> None:
    """The same other work before any timing, whichever library is timed next."""
    keep = [build(lib, name) for lib in LIBS] + [build("effnet", "efficientnet_b3")]
    for lib in LIBS:
        train_steps(lib, name, batch, size, 1)
    with tempfile.TemporaryDirectory() as tmp:
        example = torch.randn(1, 3, size, size)
        run = engine._onnx_session(keep[0], example, torch.get_num_threads(), Path(tmp) / "m.onnx")
        run(torch.randn(batch, 3, size, size))
    del keep


def time_infer(model: torch.nn.Module, x: torch.Tensor, warmup: int, calls: int) -> float:
    """Median images/s of ``calls`` batches after ``warmup``."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + calls):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return x.shape[0] / statistics.median(times)


def child(args) -> dict:
    """One process: reach ``args.state``, then time ``args.lib`` (or all, for "shared")."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.state == "trained":
        train_steps(args.lib, args.model, args.batch_size, args.image_size, 2)
    elif args.state in ("busy", "shared"):
        busy_work(args.model, args.batch_size, args.image_size)
    libs = list(LIBS) if args.state == "shared" else [args.lib]
    models = {lib: build(lib, args.model) for lib in libs}
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    speeds: dict[str, list[float]] = {lib: [] for lib in libs}
    rounds = args.shared_rounds if args.state == "shared" else 1
    for r in range(rounds):
        for lib in libs if r % 2 == 0 else libs[::-1]:
            speeds[lib].append(time_infer(models[lib], x, args.warmup, args.calls))
    rss = engine._status_kib("VmHWM")
    return {
        "speeds": speeds,
        "process_peak_rss_mib": rss / 1024 if rss else None,
    }


def spawn(args, state: str, lib: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--state", state]
    cmd += ["--lib", lib, "--model", args.model, "--image-size", str(args.image_size)]
    cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    cmd += ["--warmup", str(args.warmup), "--calls", str(args.calls)]
    cmd += ["--shared-rounds", str(args.shared_rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{state}/{lib} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def collect(args, log) -> dict[str, dict[str, list]]:
    """state -> lib -> {"speeds": [one per repetition], "rss": [...]}."""
    res = {s: {lib: {"speeds": [], "rss": []} for lib in LIBS} for s in args.states}
    for rep in range(args.reps):
        for state in args.states:
            libs = ["shared"] if state == "shared" else list(LIBS)
            for lib in libs if rep % 2 == 0 else libs[::-1]:
                out = spawn(args, state, lib if lib != "shared" else "effnet")
                for k, v in out["speeds"].items():
                    # shared: the median over its rounds is this repetition's figure
                    res[state][k]["speeds"].append(statistics.median(v))
                    res[state][k]["rss"].append(out["process_peak_rss_mib"])
                shown = ", ".join(
                    f"{k} {statistics.median(v):.1f}" for k, v in out["speeds"].items()
                )
                log(f"rep {rep + 1}/{args.reps} {state:8s} {shown} img/s")
    return res


def summarise(res: dict) -> dict:
    out = {}
    for state, libs in res.items():
        med = {lib: statistics.median(d["speeds"]) for lib, d in libs.items() if d["speeds"]}
        row = {"img_s": med, "rss_mib": {}}
        for lib, d in libs.items():
            if d["rss"]:
                row["rss_mib"][lib] = statistics.median(d["rss"])
        for peer in ("torchvision", "timm"):
            mine, theirs = libs["effnet"]["speeds"], libs[peer]["speeds"]
            pairs = [a / b for a, b in zip(mine, theirs, strict=True)]
            row[f"vs_{peer}"] = {
                "ratio_of_medians": med["effnet"] / med[peer],
                "per_rep_median": statistics.median(pairs),
                "per_rep_min": min(pairs),
                "per_rep_max": max(pairs),
            }
        out[state] = row
    return out


def to_markdown(doc: dict) -> str:
    a = doc["args"]
    lines = [
        f"# Default eager inference by process state ({a['model']}, {a['image_size']} px, "
        f"batch {a['batch_size']}, {a['threads']} threads, {a['reps']} repetitions)",
        "",
        f"Machine: {doc['machine'].get('cpu', '?')}; torch {doc['machine'].get('torch', '?')}; "
        f"load average at start {doc['load_start']}, at end {doc['load_end']}.",
        "",
        "| state | effnet img/s | torchvision | timm | effnet / torchvision | effnet / timm |"
        " peak RSS MiB (effnet / tv / timm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for state, row in doc["summary"].items():
        s, r = row["img_s"], row["rss_mib"]
        ratio = [
            f"{row[k]['ratio_of_medians']:.2f}x (per rep {row[k]['per_rep_median']:.2f}x, "
            f"{row[k]['per_rep_min']:.2f}-{row[k]['per_rep_max']:.2f})"
            for k in ("vs_torchvision", "vs_timm")
        ]
        rss = " / ".join(f"{r[lib]:.0f}" if lib in r else "-" for lib in LIBS)
        lines.append(
            f"| {state} | {s['effnet']:.1f} | {s['torchvision']:.1f} | {s['timm']:.1f} | "
            f"{ratio[0]} | {ratio[1]} | {rss} |"
        )
    lines += ["", "In the shared state all three run in one process, so its RSS is one figure."]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--shared-rounds", type=int, default=3)
    ap.add_argument("--states", default=",".join(STATES))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--state", default="fresh", help=argparse.SUPPRESS)
    ap.add_argument("--lib", default="effnet", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.states = [s for s in args.states.split(",") if s]
    bad = set(args.states) - set(STATES)
    if bad:
        ap.error(f"unknown state(s) {sorted(bad)}; choose from {', '.join(STATES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_start = Path("/proc/loadavg").read_text().split()[:3]
    res = collect(args, log)
    doc = {
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "child", "lib", "state")},
        "machine": engine.machine_info(torch.device("cpu")),
        "load_start": " ".join(load_start),
        "load_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "raw": res,
        "summary": summarise(res),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "infer_states.json").write_text(json.dumps(doc, indent=2, default=str))
    text = to_markdown(doc)
    (args.out / "infer_states.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
