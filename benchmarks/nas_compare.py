"""Is a searched baseline any good? Train it beside effnet's default B0, V2-B0 and a random
genotype of similar size, with one budget and several seeds; then all of them at phi = 1.

    python3 benchmarks/nas_compare.py --spec runs/nas_v2/best_spec.json --epochs 10

Candidates (all on the digits config's recipe, the same epochs, image size and seeds):
  found      the spec file of the search (``effnet nas`` writes OUT/best_spec.json)
  b0         effnet's default model: B0 at the digits config's width and depth (0.5, 0.5)
  v2_b0      EfficientNetV2-B0 at the same width and depth
  random     a genotype drawn at random from the same space, params within 20% of ``found``
With ``--phi 1`` (default) ``found`` and ``b0`` are also compound-scaled (d = 1.2, w = 1.1,
r = 1.15, the paper's coefficients) and trained. Accuracy only: run it on any machine state.
Writes OUT/compare.json and OUT/compare.md (mean, sample standard deviation, min-max).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from effnet.lab import nas, nas_space
from effnet.lab.experiment import base_config, scaled_size, train_once
from effnet.registry import variant_from_dict

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def similar_random(spec, space_name: str, size: int, tolerance: float = 0.2, seed: int = 1000):
    """The first seeded random genotype (from ``seed`` on) whose params are within
    ``tolerance`` of ``spec``'s, on the same width, depth and preprocessing."""
    space = nas_space.get_space(space_name)
    target = nas.cost(spec, 10, size)["params"]
    found = nas_space.genotype_of(spec.family)
    for s in range(seed, seed + 5000):
        g = nas_space.sample(space, s)
        if g == found:
            continue
        fam = nas_space.to_family(space, g, name=f"random_{s}")
        v = dataclasses.replace(spec, family=fam)
        p = nas.cost(v, 10, size)["params"]
        if abs(p / target - 1) <= tolerance:
            return v, s, p
    raise SystemExit(f"no random genotype within {tolerance:.0%} of {target} params")


def candidates(args) -> dict[str, dict]:
    """name -> train_once overrides (model, model_kwargs, image_size)."""
    found = variant_from_dict(json.loads(Path(args.spec).read_text()))
    rnd, rseed, _ = similar_random(found, args.space, args.image_size)
    out_dir = Path(args.out)
    rspec = nas.write_spec(rnd, out_dir / f"random_{rseed}.json")
    half = {"width_mult": 0.5, "depth_mult": 0.5, "bn_momentum": 0.1}
    size = args.image_size
    c = {
        "found": {"model": str(args.spec), "model_kwargs": {"bn_momentum": 0.1}},
        "b0": {"model": "efficientnet_b0", "model_kwargs": half},
        "v2_b0": {"model": "efficientnetv2_b0", "model_kwargs": half},
        "random": {"model": str(rspec), "model_kwargs": {"bn_momentum": 0.1}},
    }
    for v in c.values():
        v["image_size"] = size
    if args.phi:
        d, w, r = ALPHA**args.phi, BETA**args.phi, GAMMA**args.phi
        px = scaled_size(size, r)
        c["found phi1"] = {
            "model": str(args.spec),
            "model_kwargs": {
                "width_mult": found.width * w,
                "depth_mult": found.depth * d,
                "bn_momentum": 0.1,
            },
            "image_size": px,
        }
        c["b0 phi1"] = {
            "model": "efficientnet_b0",
            "model_kwargs": {"width_mult": 0.5 * w, "depth_mult": 0.5 * d, "bn_momentum": 0.1},
            "image_size": px,
        }
    return c


def stats(xs: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--space", default="v2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--phi", type=float, default=1.0)
    ap.add_argument("--out", default="runs/nas_compare")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, dict] = {}
    for name, over in candidates(args).items():
        finals, bests, params = [], [], None
        for seed in seeds:
            base = base_config("digits", epochs=args.epochs, seed=seed)
            run = Path(args.out) / name.replace(" ", "_") / f"seed{seed}"
            s = train_once(base.config, run, **over)
            finals.append(float(s["final_top1"]))
            bests.append(float(s["best_top1"]))
            params = s.get("params")
            print(f"{name} seed {seed}: final {finals[-1]:.2f}% best {bests[-1]:.2f}%", flush=True)
        rows[name] = {
            **over,
            "params": params,
            "final": stats(finals),
            "best": stats(bests),
            "finals": finals,
        }
    doc = {"args": vars(args), "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "compare.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"| candidate | params | px | final top-1, mean +- std (min-max) over seeds {args.seeds} |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        f = r["final"]
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['image_size']} | {f['mean']:.2f} +- "
            f"{f['std']:.2f} ({f['min']:.2f}-{f['max']:.2f}) |"
        )
    text = "\n".join(lines) + "\n"
    (Path(args.out) / "compare.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
