"""Training and evaluation of EfficientNets: ``train(...)`` and ``evaluate_checkpoint(...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.training import trainer
from effnet.training.callbacks import Callback
from effnet.training.config import TrainConfig, from_dict, resolve_config, validate
from effnet.training.evaluation import evaluate_checkpoint as _eval

__all__ = ["Callback", "TrainConfig", "evaluate_checkpoint", "resolve_config", "train", "validate"]


def train(
    config: TrainConfig | str | Path | None = None,
    *,
    resume: str | Path | None = None,
    dataset=None,
    class_names: list[str] | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    **overrides: Any,
) -> dict:
    """Train a model and return the run summary (best/final top-1 and top-5, wall time, ...).

    ``config`` is a ``TrainConfig``, a YAML file (or a built-in config name such as ``digits``),
    or None for the built-in default (digits). Keyword ``overrides`` replace config options, e.g.
    ``train(epochs=5, out="runs/x", loggers=["tensorboard"])``; ``resume=RUN_DIR`` continues a
    run exactly.

    ``dataset`` trains on your own torch ``Dataset`` of ``(image, label)`` items instead of
    ``data``: one Dataset (split train/val by ``val_fraction`` and ``seed``, stratified) or a
    ``(train, val)`` pair. Images may be PIL images, uint8 arrays or CxHxW tensors; effnet applies
    the model's own preprocessing and augmentation. ``class_names`` default to the dataset's
    ``classes`` attribute, else ``"0" .. "N-1"``. To resume such a run, pass the dataset again.
    ``callbacks`` are :class:`effnet.training.Callback` instances (on_step, on_epoch_end, ...).
    """
    hooks = {"dataset": dataset, "class_names": class_names, "callbacks": tuple(callbacks)}
    if dataset is not None and "data" not in overrides and resume is None:
        first = dataset[0] if isinstance(dataset, tuple | list) else dataset
        overrides["data"] = f"python:{type(first).__name__}"
    if resume is not None:
        return trainer.run(None, resume=resume, resume_overrides=overrides, **hooks)
    if isinstance(config, TrainConfig):
        base = {**config.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        cfg = from_dict(base)
    else:
        cfg = resolve_config(config if config is not None else "digits", overrides)
    return trainer.run(cfg, resume=resume, **hooks)


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None, **kwargs: Any) -> dict:
    """Top-1/top-5, per-class accuracy and confusion matrix of a model file or run folder (on
    the run's own validation split unless ``data``/``seed``/``val_fraction`` say otherwise)."""
    return _eval(checkpoint, data, **kwargs)
