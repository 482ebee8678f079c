"""One scaled candidate = one training run; shared by ``search`` and ``sweep``.

A candidate is the base training config with its model scaled by (depth, width) and its input
resized. Each run lives in its own folder: a finished one (``summary.json``) is read back instead
of retrained and an interrupted one (``checkpoint_last.pt``) is resumed, so re-running a search or
sweep never redoes finished work.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.analysis.info import model_info
from effnet.api import create_model
from effnet.registry import get_variant
from effnet.scaling import scale_resolution
from effnet.training import resolve_config, train
from effnet.training.trainer import load_split

SUMMARY = "summary.json"
CHECKPOINT = "checkpoint_last.pt"


@dataclass(frozen=True)
class Base:
    """The unscaled experiment: a training config and its model's own width/depth/resolution."""

    config: Any  # effnet.training.TrainConfig
    width: float
    depth: float
    image_size: int


def base_config(config: str | None = None, **overrides: Any) -> Base:
    """Resolve a training config (YAML file or built-in name, default ``digits``) + overrides."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    epochs = overrides.get("epochs")
    if epochs is not None and "warmup_epochs" not in overrides:
        # Budgets of 1-3 epochs: warm up for at most a quarter of the run (the config's own
        # warmup may be as long as the whole budget).
        first = resolve_config(
            config or "digits", {k: v for k, v in overrides.items() if k != "epochs"}
        )
        overrides["warmup_epochs"] = min(first.warmup_epochs, epochs / 4)
    cfg = resolve_config(config or "digits", overrides)
    if "bn_momentum" not in (cfg.model_kwargs or {}):
        # A few hundred steps are too few for TF's 0.99 decay: BN statistics would still be
        # near their initial values at evaluation, and every candidate would score chance.
        cfg = resolve_config(
            config or "digits",
            {**overrides, "model_kwargs": {**(cfg.model_kwargs or {}), "bn_momentum": 0.1}},
        )
    v = get_variant(cfg.model)
    kw = cfg.model_kwargs or {}
    return Base(cfg, kw.get("width_mult", v.width), kw.get("depth_mult", v.depth), cfg.image_size)


def fingerprint(base: Base) -> str:
    """A short hash of everything that changes a run's result except the scaling and the seed:
    runs of different settings never share a folder, so reuse is always safe."""
    skip = {"seed", "out", "threads", "progress", "workers", "device"}
    cfg = {k: v for k, v in base.config.to_dict().items() if k not in skip}
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]


def scaled_size(base: int, r: float) -> int:
    """Pixels for resolution multiplier ``r``; nearest integer, since at the 32-64 px of quick
    experiments a multiple-of-8 rule would merge neighbouring grid points."""
    return scale_resolution(base, r, divisor=1)


def candidate_macs(base: Base, depth: float, width: float, size: int, classes: int) -> dict:
    kw = {**(base.config.model_kwargs or {}), "width_mult": base.width * width}
    kw["depth_mult"] = base.depth * depth
    model = create_model(base.config.model, num_classes=classes, device="meta", **kw)
    info = model_info(model, size)
    return {"macs": info["macs"], "params": info["params"]}


def train_once(config: Any, run_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """Train ``config`` + ``overrides`` in ``run_dir`` once: a finished run is read back
    (``reused``), an interrupted one resumed from its checkpoint (``resumed``)."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY).is_file():
        return {**json.loads((run_dir / SUMMARY).read_text()), "reused": True}
    if (run_dir / CHECKPOINT).is_file():
        return {**train(resume=run_dir, progress="none"), "resumed": True}
    return train(config, out=str(run_dir), progress="none", **overrides)


def train_candidate(
    base: Base, depth: float, width: float, resolution: float, run_dir: Path, **overrides: Any
) -> dict[str, Any]:
    """Train (or read back, or resume) one candidate; returns its summary plus MACs and params."""
    size = scaled_size(base.image_size, resolution)
    kw = {**(base.config.model_kwargs or {}), "width_mult": base.width * width}
    kw["depth_mult"] = base.depth * depth
    summary = train_once(base.config, run_dir, model_kwargs=kw, image_size=size, **overrides)
    cost = candidate_macs(base, depth, width, size, int(summary.get("classes") or 10))
    return {
        **summary,
        **cost,
        "image_size": size,
        "depth": depth,
        "width": width,
        "resolution": resolution,
    }


def chance_level(base: Base, top1s: list[float]) -> dict[str, Any]:
    """Whether the best of ``top1s`` (percent, one per run) is within noise of chance: uniform
    guessing over the base setting's classes, on its validation images, plus three binomial
    standard deviations (a run that learned nothing scores chance give or take that much)."""
    data = load_split(base.config)
    classes, images = data.num_classes, len(data.val)
    p = 1.0 / classes
    noise = 300.0 * math.sqrt(p * (1.0 - p) / max(1, images))
    best = max(top1s) if top1s else None
    return {
        "classes": classes,
        "val_images": images,
        "chance_top1": round(100.0 * p, 3),
        "noise_top1": round(noise, 3),
        "best_top1": best,
        "learned_nothing": best is not None and best <= 100.0 * p + noise,
    }


_NOISE = {  # what: (its runs, what is noise then, its epochs flag)
    "search": ("trial", "its ranking and its 'best' point are noise", "--budget"),
    "sweep": ("run", "its curves are noise", "--budget"),
    "nas": ("trial", "its rewards and its best genotype are noise", "--epochs"),
}


def chance_warning(level: dict[str, Any], what: str) -> str | None:
    """The warning for a ``what`` ("search", "sweep" or "nas") whose every run sat at chance
    (None if one did not)."""
    if not level["learned_nothing"]:
        return None
    run, noise, epochs = _NOISE[what]
    return (
        f"warning: this {what} learned nothing: every {run} scored at chance (best top-1 "
        f"{level['best_top1']:.2f}%; chance is {level['chance_top1']:.2f}% for "
        f"{level['classes']} classes, give or take {level['noise_top1']:.1f} points on "
        f"{level['val_images']} validation images), so {noise}. "
        f"To get a signal: train longer ({epochs}), at a larger --image-size, with a higher "
        "learning rate (lr in the --config YAML), on more data (a larger --max-train-samples "
        "or dataset), and check that the labels match the images."
    )
