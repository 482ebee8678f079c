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

from effnet.lab.experiment import (
    Base,
    base_config,
    chance_level,
    chance_warning,
    fingerprint,
    scaled_size,
    train_candidate,
)
from effnet.lab.plots import plot_sweep
from effnet.scaling import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, resolve_scaling
from effnet.weights.serialize import atomic_write

DIMENSIONS = ("width", "depth", "resolution", "compound")


def multipliers(
    dimension: str,
    value: float,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
) -> tuple[float, float, float]:
    """(depth, width, resolution) for one sweep value (``effnet.scaling.resolve_scaling``)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
        raise ValueError(f"sweep values must be finite numbers, got {value!r}")
    if dimension == "compound":
        s = resolve_scaling(phi=value, alpha=alpha, beta=beta, gamma=gamma)
    else:
        s = resolve_scaling(**{dimension: value})
    return s.depth, s.width, s.resolution


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
    """Train every (dimension, value, seed); write ``OUT/sweep.json`` and ``OUT/sweep.png``.

    The result's ``chance`` entry says whether any run beat chance accuracy beyond noise; if none
    did, ``warning`` says so and what to change (it is also logged)."""
    if not (isinstance(budget, int | float) and budget >= 1 and float(budget).is_integer()):
        raise ValueError(f"budget must be a whole number of epochs >= 1, got {budget}")
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be an integer >= 1, got {seeds}")
    dims = list(dict.fromkeys(dimensions))
    values = values or {d: [0.0, 1.0, 2.0] if d == "compound" else [1.0, 2.0] for d in dims}
    points = {d: [(v, multipliers(d, v, alpha, beta, gamma)) for v in values[d]] for d in dims}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = [
        base_config(config, data=data, seed=s, epochs=int(budget), **train_overrides)
        for s in range(seeds)
    ]
    total = len({k for pts in points.values() for _, m in pts for k in _run_keys(base, m)})
    log(f"effnet sweep: {', '.join(dims)}; {total} training runs of {int(budget)} epoch(s)")
    runs: dict[str, dict[str, Any]] = {}
    curves = {
        dim: [_point(v, m, _train(base, m, out, runs, log, f"{dim} {v:g}")) for v, m in points[dim]]
        for dim in dims
    }
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
    # Every run at chance: the curves are noise (say so, and what to change).
    res["chance"] = chance_level(base[0], [r["best_top1"] for r in runs.values()])
    res["warning"] = chance_warning(res["chance"], "sweep")
    if res["warning"]:
        log(res["warning"])
    text = json.dumps(res, indent=2)
    atomic_write(out / "sweep.json", lambda tmp: Path(tmp).write_text(text))
    res["plot"] = str(plot_sweep(res, out / "sweep.png"))
    return res


def _run_keys(base: list[Base], m: tuple[float, float, float]) -> list[str]:
    """One run key per seed for multipliers ``m`` = (depth, width, resolution)."""
    d, w, r = m
    return [run_key(d, w, scaled_size(b.image_size, r), s) for s, b in enumerate(base)]


def _train(base: list[Base], m: tuple, out: Path, runs: dict, log, label: str) -> list[dict]:
    """Each seed's run for multipliers ``m``; runs already in ``runs`` are shared, not redone."""
    rows = []
    for s, k in enumerate(_run_keys(base, m)):
        if k not in runs:
            r = runs[k] = train_candidate(base[s], *m, out / "runs" / fingerprint(base[0]) / k)
            log(
                f"{label} seed {s}: top-1 {r['best_top1']:.2f}%  {r['macs'] / 1e6:.1f}M MACs  "
                f"{r['image_size']}px"
            )
        rows.append(runs[k])
    return rows


def _point(value: float, m: tuple[float, float, float], rows: list[dict]) -> dict[str, Any]:
    """One point of a curve: the multipliers, cost, and top-1 over the seeds."""
    top1 = [x["best_top1"] for x in rows]
    return {
        "value": value,
        "depth": m[0],
        "width": m[1],
        "resolution": m[2],
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
