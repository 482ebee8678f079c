"""Before/after: effnet's default paths in this checkout against another checkout (an older commit).

    git worktree add /tmp/before cabc358      # the commit to compare with
    python3 benchmarks/before_after.py --before /tmp/before --pairs 3

Each pair runs both checkouts' own ``benchmarks/run_table.py --one-model`` in fresh processes,
one after the other (the order alternates pair by pair), with torchvision's same architecture in
each process as a fixed yardstick. Reported per model and metric: this checkout's effnet against
the other's (median and range over the pairs, each pair measured minutes apart), and each
checkout's ratio to torchvision in its own process (which cancels drift between processes).
With ``--ablation`` it also runs each checkout's ``benchmarks/ablation.py`` once and sets their
rows side by side, each relative to its own plain-eager row.
Writes benchmarks/results/before_after.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results"
METRICS = ("infer_img_s", "train_img_s", "latency_ms", "train_peak_mib")


def one_model(checkout: Path, model: str, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / f"{checkout.name}-{model}.json"
    cmd = [sys.executable, str(checkout / "benchmarks" / "run_table.py"), "--one-model", model]
    cmd += ["--json-out", str(out), "--against", "torchvision", "--reps", str(args.reps)]
    cmd += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    cmd += ["--image-size", str(args.image_size)]
    subprocess.run(cmd, check=True, cwd=checkout)
    return json.loads(out.read_text())


def _median(row: dict, metric: str) -> float | None:
    s = row.get(metric)
    return s["median"] if s else None


def compare(pairs: list[tuple[dict, dict]]) -> dict:
    """this / before for each metric (speed: > 1 is faster now; memory and latency: this /
    before, < 1 is better now), and each side's effnet / torchvision in its own process."""
    out: dict[str, dict] = {}
    for metric in METRICS:
        direct, mine, theirs = [], [], []
        for new, old in pairs:
            a, b = (
                _median(new["results"]["effnet"], metric),
                _median(old["results"]["effnet"], metric),
            )
            ta = _median(new["results"].get("torchvision", {}), metric)
            tb = _median(old["results"].get("torchvision", {}), metric)
            if a and b:
                direct.append(a / b)
            if a and ta:
                mine.append(a / ta if metric.endswith("img_s") else ta / a)
            if b and tb:
                theirs.append(b / tb if metric.endswith("img_s") else tb / b)
        if direct:
            out[metric] = {
                "this_over_before": _spread(direct),
                "this_vs_torchvision": _spread(mine) if mine else None,
                "before_vs_torchvision": _spread(theirs) if theirs else None,
            }
    return out


def _spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "values": [round(v, 3) for v in values],
    }


def ablation(checkout: Path, args: argparse.Namespace, tmp: Path) -> dict:
    out = tmp / checkout.name
    cmd = [sys.executable, str(checkout / "benchmarks" / "ablation.py"), "--out", str(out)]
    cmd += ["--reps", str(args.reps), "--threads", str(args.threads)]
    subprocess.run(cmd, check=True, cwd=checkout)
    return json.loads((out / "ablation.json").read_text())


def to_markdown(doc: dict) -> str:
    lines = [
        "# Before / after",
        "",
        f"This checkout ({doc['this']}) against `{doc['before']}`; {doc['pairs']} pairs of fresh "
        f"processes, {doc['threads']} threads, batch {doc['batch_size']}, "
        f"{doc['image_size']} px, {doc['reps']} repetitions per process.",
        f"Command: `{doc['command']}`",
        "",
        "| model | metric | this / before: median (min-max) | this vs torchvision "
        "| before vs torchvision |",
        "|---|---|---|---|---|",
    ]

    def cell(s: dict | None) -> str:
        return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})" if s else "-"

    for model, rows in doc["models"].items():
        for metric, r in rows.items():
            lines.append(
                f"| {model} | {metric} | {cell(r['this_over_before'])} | "
                f"{cell(r['this_vs_torchvision'])} | {cell(r['before_vs_torchvision'])} |"
            )
    if doc.get("ablation"):
        lines += ["", "## Ablation, each relative to its own first row", ""]
        lines += ["| path (this; before, where its label differs) | this: inference x | before "]
        lines[-1] += "| this: training x | before | this: train MiB | before |"
        lines += ["|---|---|---|---|---|---|---|"]
        new, old = doc["ablation"]["this"], doc["ablation"]["before"]
        # The rows come in the same order in both scripts; labels may have been reworded.
        for (name, a), (bname, b) in zip(
            new["relative"].items(), old["relative"].items(), strict=False
        ):
            label = name if name == bname else f"{name} (before: {bname})"
            mib = [
                (side["results"][n].get("train_peak_mib") or {}).get("median")
                for side, n in ((new, name), (old, bname))
            ]
            lines.append(
                f"| {label} | {a.get('infer_img_s', '-')} | {b.get('infer_img_s', '-')} | "
                f"{a.get('train_img_s', '-')} | {b.get('train_img_s', '-')} | "
                + " | ".join(f"{m:.0f}" if m else "-" for m in mib)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--models", default="efficientnet_b0")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    before = args.before.resolve()
    if not (before / "benchmarks" / "run_table.py").is_file():
        ap.error(f"--before {before} has no benchmarks/run_table.py")
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=before, capture_output=True, text=True
    ).stdout.strip()
    this = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    doc: dict = {
        "command": "python3 benchmarks/before_after.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "this": this,
        "before": rev or str(before),
        **{k: getattr(args, k) for k in ("pairs", "reps", "threads", "batch_size", "image_size")},
        "models": {},
        "raw": {},
    }
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for model in [m for m in args.models.split(",") if m]:
            pairs = []
            for i in range(args.pairs):
                order = (HERE, before) if i % 2 == 0 else (before, HERE)
                got = {c: one_model(c, model, args, tmp) for c in order}
                pairs.append((got[HERE], got[before]))
                print(f"[before_after] {model}: pair {i + 1}/{args.pairs} done", file=sys.stderr)
            doc["models"][model] = compare(pairs)
            doc["raw"][model] = [[new["results"], old["results"]] for new, old in pairs]
        if args.ablation:
            doc["ablation"] = {
                "this": ablation(HERE, args, tmp),
                "before": ablation(before, args, tmp),
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "before_after.json").write_text(json.dumps(doc, indent=2))
    (args.out / "before_after.md").write_text(to_markdown(doc))
    print(to_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
