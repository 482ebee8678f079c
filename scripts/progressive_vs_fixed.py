"""Progressive learning vs a fixed image size on digits, same epochs: accuracy and time.

Regenerates docs/figures/progressive_vs_fixed.png and .json:
    python3 scripts/progressive_vs_fixed.py [--epochs 20] [--seeds 0]
CPU time of the training process is reported next to wall time (wall time on a shared machine
measures the neighbours as much as the run).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's effnet, not an installed one
OUT = ROOT / "docs" / "figures"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(name: str, epochs: int, seed: int, tmp: Path, **over) -> dict:
    import effnet

    t0, c0 = time.perf_counter(), cpu_seconds()
    s = effnet.train(
        epochs=epochs,
        seed=seed,
        threads=1,
        progress="none",
        out=str(tmp / f"{name}-{seed}"),
        **over,
    )
    lines = (tmp / f"{name}-{seed}" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    return {
        "name": name,
        "seed": seed,
        "final_top1": s["final_top1"],
        "best_top1": s["best_top1"],
        "wall_s": time.perf_counter() - t0,
        "cpu_s": cpu_seconds() - c0,
        "curve": [r["val_top1"] for r in rows],
        "sizes": [r["image_size"] for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        for seed in args.seeds:
            results.append(one("fixed 48 px", args.epochs, seed, Path(d)))
            results.append(
                one(
                    "progressive 32->48 px",
                    args.epochs,
                    seed,
                    Path(d),
                    progressive=True,
                    stages=4,
                    prog_image_size=[32, 48],
                    prog_magnitude=[0, 0],
                    prog_mixup=[0, 0],
                    prog_dropout=[0.1, 0.2],
                )
            )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "progressive_vs_fixed.json").write_text(json.dumps(results, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        a.plot(range(1, len(r["curve"]) + 1), r["curve"], label=f"{r['name']} (seed {r['seed']})")
    a.set_xlabel("epoch")
    a.set_ylabel("val top-1 (%)")
    a.set_ylim(80, 100)
    a.legend()
    names = sorted({r["name"] for r in results})
    cpu = [sum(r["cpu_s"] for r in results if r["name"] == n) / len(args.seeds) for n in names]
    acc = [sum(r["final_top1"] for r in results if r["name"] == n) / len(args.seeds) for n in names]
    bars = b.bar(names, cpu, color=["tab:blue", "tab:orange"])
    for bar, v in zip(bars, acc, strict=True):
        b.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"final {v:.2f}%",
            ha="center",
            va="bottom",
        )
    b.set_ylabel("training CPU time (s)")
    fig.suptitle(f"digits, B0 x0.5/x0.5, {args.epochs} epochs")
    fig.tight_layout()
    fig.savefig(OUT / "progressive_vs_fixed.png", dpi=90)
    for r in results:
        print(
            f"{r['name']:>24} seed {r['seed']}: final {r['final_top1']:.2f}%  best "
            f"{r['best_top1']:.2f}%  cpu {r['cpu_s']:.0f} s  wall {r['wall_s']:.0f} s"
        )


if __name__ == "__main__":
    main()
