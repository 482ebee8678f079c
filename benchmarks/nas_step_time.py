"""Is the NAS step-time measurement stable enough to rank candidates? (issue 17, acceptance 3)

    python3 benchmarks/nas_step_time.py --trials runs/nas_v2/trials.json

Times genotypes twice each in one process with the search's own settings (``step_time``:
warm-up, then the fastest of several SGD steps, batch 64 at 32 px, the same threads), in the
order A B C ... A B C ..., and reports each genotype's spread |t1 - t2| / min(t1, t2). The
genotypes: V2-S's own table (the V2 space's backbone) and, with ``--trials``, the fastest, the
median and the slowest finished trial of a search. Run it on a quiet machine; it is a timing
measurement. Writes OUT/nas_step_time.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet import specs
from effnet.lab import nas
from effnet.lab.experiment import base_config
from effnet.registry import variant_from_dict

OUT = Path(__file__).resolve().parent / "results"


def genotypes(trials: Path | None, base) -> dict[str, object]:
    out = {"V2-S (backbone)": nas.candidate_variant(base, specs.EFFICIENTNETV2_S)}
    if trials is None:
        return out
    rows = sorted(json.loads(trials.read_text()), key=lambda r: r["step_time"])
    picks = {"fastest": rows[0], "median": rows[len(rows) // 2], "slowest": rows[-1]}
    for label, row in picks.items():
        spec = json.loads((Path(row["run_dir"]) / nas.SPEC).read_text())
        out[f"{label} trial ({row['trial']})"] = variant_from_dict(spec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=Path, help="a search's trials.json")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timings per genotype")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    base = base_config(None, data="digits", image_size=args.image_size)
    cands = genotypes(args.trials, base)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(args.repeats):
        for label, v in cands.items():
            t = nas.step_time(v, 10, args.image_size, args.batch_size, args.threads)
            times[label].append(t)
            print(f"{label}: {t * 1e3:.1f} ms/step", file=sys.stderr, flush=True)
    rows = {
        k: {"ms": [t * 1e3 for t in ts], "spread": (max(ts) - min(ts)) / min(ts)}
        for k, ts in times.items()
    }
    load = Path("/proc/loadavg").read_text().split()[:3]
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "load_end": load, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nas_step_time.json").write_text(json.dumps(doc, indent=2))
    print("| genotype | step times (ms) | spread |\n|---|---|---|")
    for k, r in rows.items():
        ms = " / ".join(f"{m:.1f}" for m in r["ms"])
        print(f"| {k} | {ms} | {100 * r['spread']:.1f}% |")
    worst = max(r["spread"] for r in rows.values())
    med = statistics.median(r["spread"] for r in rows.values())
    print(f"\nlargest spread {100 * worst:.1f}%, median {100 * med:.1f}% (load {' '.join(load)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
