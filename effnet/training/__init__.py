"""Training and evaluation of EfficientNets: ``train(...)`` and ``evaluate_checkpoint(...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.training import trainer
from effnet.training.config import TrainConfig, from_dict, resolve_config, validate
from effnet.training.evaluation import evaluate_checkpoint as _eval

__all__ = ["TrainConfig", "evaluate_checkpoint", "resolve_config", "train", "validate"]


def train(
    config: TrainConfig | str | Path | None = None,
    *,
    resume: str | Path | None = None,
    **overrides: Any,
) -> dict:
    """Train a model and return the run summary (best/final top-1 and top-5, wall time, ...).

    ``config`` is a ``TrainConfig``, a YAML file (or a built-in config name such as ``digits``),
    or None for the built-in default (digits). Keyword ``overrides`` replace config options, e.g.
    ``train(epochs=5, out="runs/x")``; ``resume=RUN_DIR`` continues a run exactly.
    """
    if resume is not None:
        return trainer.run(None, resume=resume, resume_overrides=overrides)
    if isinstance(config, TrainConfig):
        base = {**config.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        cfg = from_dict(base)
    else:
        cfg = resolve_config(config if config is not None else "digits", overrides)
    return trainer.run(cfg, resume=resume)


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None, **kwargs: Any) -> dict:
    """Top-1/top-5, per-class accuracy and confusion matrix of a model file or run folder (on
    the run's own validation split unless ``data``/``seed``/``val_fraction`` say otherwise)."""
    return _eval(checkpoint, data, **kwargs)
