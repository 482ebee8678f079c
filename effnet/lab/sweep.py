"""Scale one dimension at a time, or all three together (the paper's Figures 3, 4 and 8).

Each value of each dimension trains one model per seed. Values are the dimension's multiplier
(width w, depth d, resolution r) or, for ``compound``, phi (d = alpha^phi, w = beta^phi,
r = gamma^phi). Runs with identical architecture and input size (the unscaled baseline appears in
every curve) are trained once and shared; finished runs are read back on a re-run.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from effnet.lab.experiment import base_config, fingerprint, scaled_size, train_candidate
from effnet.scaling import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, compound_coefficients

DIMENSIONS = ("width", "depth", "resolution", "compound")


def multipliers(
    dimension: str,
    value: float,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[float, float, float]:
    """(depth, width, resolution) for one sweep value."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"sweep values must be finite numbers, got {value!r}")
    if dimension == "compound":
        return compound_coefficients(value, alpha, beta, gamma)
    if value <= 0:
        raise ValueError(f"a {dimension} multiplier must be > 0, got {value}")
    return (
        value if dimension == "depth" else 1.0,
        value if dimension == "width" else 1.0,
        value if dimension == "resolution" else 1.0,
    )


def parse_values(items: list[str], dimensions: list[str]) -> dict[str, list[float]]:
    """``["1", "2"]`` applies to every dimension; ``["depth=1,2,4", "width=1,1.4,2"]`` per one."""
    shared: list[float] = []
    per: dict[str, list[float]] = {}
    for item in items:
        dim, sep, rest = item.partition("=")
        try:
            nums = [float(x) for x in (rest if sep else item).split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"sweep values must be numbers, got {item!r}") from None
        if sep:
            if dim not in DIMENSIONS:
                raise ValueError(f"unknown dimension {dim!r} in {item!r}")
            per[dim] = nums
        else:
            shared += nums
    out = {d: per.get(d, shared) for d in dimensions}
    empty = [d for d, v in out.items() if not v]
    if empty:
        raise ValueError(f"no sweep values for {empty[0]}; give --values")
    return out


def run_key(depth: float, width: float, size: int, seed: int) -> str:
    return f"d{depth:.4g}_w{width:.4g}_{size}px_seed{seed}"


def sweep(
    data: str = "digits",
    *,
    dimensions: tuple[str, ...] | list[str] = DIMENSIONS,
    values: dict[str, list[float]] | None = None,
    seeds: int = 1,
    budget: float = 3,
    out: str | Path = "runs/sweep",
    config: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    log=print,
    **train_overrides: Any,
) -> dict[str, Any]:
    """Train every (dimension, value, seed); write ``OUT/sweep.json`` and ``OUT/sweep.png``."""
    if not (isinstance(budget, int | float) and budget >= 1 and float(budget).is_integer()):
        raise ValueError(f"budget must be a whole number of epochs >= 1, got {budget}")
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be an integer >= 1, got {seeds}")
    dims = list(dict.fromkeys(dimensions))
    values = values or {d: [0.0, 1.0, 2.0] if d == "compound" else [1.0, 2.0] for d in dims}
    plan = {d: [(v, multipliers(d, v, alpha, beta, gamma)) for v in values[d]] for d in dims}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {
        s: base_config(config, data=data, seed=s, epochs=int(budget), **train_overrides)
        for s in range(seeds)
    }
    runs: dict[str, dict[str, Any]] = {}
    total = len(
        {
            run_key(d, w, scaled_size(base[0].image_size, r), s)
            for pts in plan.values()
            for _, (d, w, r) in pts
            for s in range(seeds)
        }
    )
    log(f"effnet sweep: {', '.join(dims)}; {total} training runs of {int(budget)} epoch(s)")
    curves: dict[str, list[dict[str, Any]]] = {}
    for dim in dims:
        curve = []
        for v, (d, w, r) in plan[dim]:
            rows = []
            for s in range(seeds):
                k = run_key(d, w, scaled_size(base[s].image_size, r), s)
                if k not in runs:
                    run_dir = out / "runs" / fingerprint(base[0]) / k
                    runs[k] = train_candidate(base[s], d, w, r, run_dir)
                    log(
                        f"{dim} {v:g} seed {s}: top-1 {runs[k]['best_top1']:.2f}%  "
                        f"{runs[k]['macs'] / 1e6:.1f}M MACs  {runs[k]['image_size']}px"
                    )
                rows.append(runs[k])
            top1 = [x["best_top1"] for x in rows]
            curve.append(
                {
                    "value": v,
                    "depth": d,
                    "width": w,
                    "resolution": r,
                    "image_size": rows[0]["image_size"],
                    "macs": rows[0]["macs"],
                    "params": rows[0]["params"],
                    "top1": top1,
                    "top1_mean": statistics.fmean(top1),
                    "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
                    "wall_time_s": sum(x.get("wall_time_s") or 0 for x in rows),
                    "run_dirs": [x.get("run_dir") for x in rows],
                    "run_wall_s": [x.get("wall_time_s") for x in rows],
                    "reused": [bool(x.get("reused")) for x in rows],
                }
            )
        curves[dim] = curve
    res = {
        "data": data,
        "epochs": int(budget),
        "seeds": seeds,
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "base_image_size": base[0].image_size,
        "curves": curves,
    }
    from effnet.lab.plots import plot_sweep
    from effnet.weights.serialize import atomic_write

    text = json.dumps(res, indent=2)
    atomic_write(out / "sweep.json", lambda tmp: Path(tmp).write_text(text))
    res["plot"] = str(plot_sweep(res, out / "sweep.png"))
    return res
