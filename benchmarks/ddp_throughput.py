"""DDP training throughput under torchrun: CPU processes on gloo, one thread each.

    python3 benchmarks/ddp_throughput.py                      # this checkout alone
    git worktree add /tmp/before 12b0566                      # a commit that warned
    python3 benchmarks/ddp_throughput.py --before /tmp/before --pairs 3
    python3 benchmarks/ddp_throughput.py --layouts --pairs 3  # the layout fix alone

Checkouts (default, and ``--before``): each measurement is one fresh
``torchrun --nproc_per_node 2 -m effnet train`` of the checkout's own code (its model preparation
and DDP wrapping) on scikit-learn's digits at ``--image-size`` px, the model as published:
``--epochs`` epochs of ``--steps`` steps; the first epoch is the warm-up and is dropped, the rest
give the training images per second (all ranks' images over rank 0's training time, from the
run's metrics.jsonl; evaluation is not in it). The two checkouts alternate pair by pair.

``--layouts``: this checkout only, one DDP training loop (SGD, random images) in two layouts, a
fresh torchrun each, alternating: ``matched`` (the weights in the channels-last layout the
network runs in, as the trainer prepares them) and ``mismatched`` (the same network with
contiguous weights, the layout before the fix), ``--steps`` timed steps after two warm-up steps.

Both report whether any rank printed DDP's "Grad strides do not match bucket view strides"
warning. Writes ddp_throughput.json and .md under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results"
WARNING = "Grad strides do not match bucket view strides"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The `effnet train` flags, the same for both checkouts (older ones accept them too)."""
    batch = args.batch_size
    return [
        *("-m", "effnet", "train", "--out", str(out), "--data", "digits", "--model", args.model),
        *("--set", "model_kwargs={}"),  # the model as published, whatever the config says
        *("--image-size", str(args.image_size), "--batch-size", str(batch)),
        *("--epochs", str(args.epochs), "--max-train-samples", str(batch * args.steps)),
        *("--val-fraction", "0.02", "--threads", "1", "--workers", "0"),
        *("--augment", "none", "--ema-decay", "0", "--progress", "none"),
    ]


def worker_argv(args: argparse.Namespace, out: Path, layout: str) -> list[str]:
    return [
        *(str(Path(__file__).resolve()), "--worker", layout, "--worker-out", str(out)),
        *("--model", args.model, "--image-size", str(args.image_size)),
        *("--batch-size", str(args.batch_size), "--steps", str(args.steps)),
    ]


def _torchrun(checkout: Path, argv: list[str], procs: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
    cmd += ["--master_port", str(_free_port()), *argv]
    r = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{checkout}: torchrun failed:\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def measure(side: tuple[Path, str], args: argparse.Namespace, out: Path) -> dict:
    """One fresh torchrun: a checkout's `effnet train` (layout "") or the layout worker."""
    checkout, layout = side
    if layout:
        text = _torchrun(checkout, worker_argv(args, out, layout), args.procs)
        res = json.loads(out.read_text())
    else:
        text = _torchrun(checkout, train_argv(args, out), args.procs)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        res = {"epochs_img_s": [row["train_images_per_s"] for row in rows[1:]]}  # 1: warm-up
        res["state_numel"] = _state_numel(out / "model_last.safetensors")
        res["img_s"] = statistics.median(res["epochs_img_s"])
    res["stride_warnings"] = text.count(WARNING)
    return res


def _state_numel(path: Path) -> int:
    """Elements in a saved state dict: equal on both sides when they trained the same model."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def worker(args: argparse.Namespace) -> None:
    """The --layouts measurement, in each torchrun process: DDP steps on random images."""
    import time

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from effnet import accelerate, create_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = accelerate(create_model(args.model, num_classes=10), channels_last=True)
    if args.worker == "mismatched":  # the network still runs NHWC inside
        model.to(memory_format=torch.contiguous_format)
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = args.batch_size // dist.get_world_size()
    x, y = torch.randn(n, 3, args.image_size, args.image_size), torch.randint(0, 10, (n,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dist.barrier()
    seconds = time.perf_counter() - t0
    if dist.get_rank() == 0:
        img_s = args.steps * n * dist.get_world_size() / seconds
        args.worker_out.write_text(json.dumps({"img_s": img_s}))
    dist.destroy_process_group()


def summarise(runs: list[dict]) -> dict:
    values = [r["img_s"] for r in runs]
    return {
        "median_img_s": round(statistics.median(values), 2),
        "min_img_s": round(min(values), 2),
        "max_img_s": round(max(values), 2),
        "runs": runs,
        "stride_warnings": sum(r["stride_warnings"] for r in runs),
    }


def to_markdown(doc: dict) -> str:
    what = (
        "a DDP loop on random images, two warm-up steps, then"
        if doc["layouts"]
        else f"`effnet train`, one warm-up epoch, then {doc['epochs'] - 1} epochs of"
    )
    lines = [
        "# DDP training throughput",
        "",
        f"{doc['procs']} CPU processes (gloo) x 1 thread, {doc['model']} at {doc['image_size']} "
        f"px, global batch {doc['batch_size']}: {what} {doc['steps']} steps; "
        f"{doc['pairs']} fresh torchrun per side, the sides alternating.",
        f"Command: `{doc['command']}`",
        "",
        "| side | images/s: median (min-max) | grad-stride warnings |",
        "|---|---|---|",
    ]
    for name, s in doc["results"].items():
        lines.append(
            f"| {name} | {s['median_img_s']:.1f} ({s['min_img_s']:.1f}-{s['max_img_s']:.1f}) "
            f"| {s['stride_warnings']} |"
        )
    results = doc["results"].items()
    numel = {n: {r.get("state_numel") for r in s["runs"]} - {None} for n, s in results}
    if all(numel.values()) and not doc["layouts"]:
        same = "the same model" if len(set().union(*numel.values())) == 1 else "DIFFERENT models"
        lines += ["", f"State-dict elements per side: {numel} ({same})."]
    if "ratio" in doc:
        lines += ["", f"{doc['ratio_of']} (median over the pairs): {doc['ratio']:.3f}"]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="another checkout to compare with")
    ap.add_argument("--layouts", action="store_true", help="matched vs mismatched weights")
    ap.add_argument("--pairs", type=int, default=3, help="fresh torchrun per side")
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32, help="global (split over processes)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (per epoch)")
    ap.add_argument("--epochs", type=int, default=3, help="the first one is the warm-up")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--worker", choices=("matched", "mismatched"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.epochs < 2 or args.pairs < 1 or args.steps < 1:
        ap.error("--epochs must be >= 2 (one warm-up), --pairs and --steps >= 1")
    if args.layouts and args.before is not None:
        ap.error("--layouts measures this checkout alone: leave out --before")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        worker(args)
        return 0
    if args.layouts:
        sides = {"matched": (HERE, "matched"), "mismatched": (HERE, "mismatched")}
    else:
        sides = {"this": (HERE, "")}
        if args.before is not None:
            sides["before"] = (args.before.resolve(), "")
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for name in list(sides) if i % 2 == 0 else list(reversed(sides)):
                runs[name].append(measure(sides[name], args, Path(tmp) / f"{name}{i}"))
                print(f"pair {i + 1} {name}: {runs[name][-1]}", flush=True)
    doc = {k: v for k, v in vars(args).items() if k not in ("before", "out", "worker_out")}
    doc["command"] = " ".join(["python3", *sys.argv])
    doc["sides"] = {k: [str(v[0]), v[1]] for k, v in sides.items()}
    doc["results"] = {name: summarise(r) for name, r in runs.items()}
    if len(runs) == 2:
        a, b = runs.values()
        doc["ratio_of"] = " / ".join(runs)
        ratios = [x["img_s"] / y["img_s"] for x, y in zip(a, b, strict=True)]
        doc["ratio"] = round(statistics.median(ratios), 3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ddp_throughput.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "ddp_throughput.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
