"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds only tensors and plain containers, so it loads with
``torch.load(weights_only=True)``: model, optimizer, EMA, GradScaler, RNG states (python, numpy,
torch), epoch / step position, progressive stage, metric history and the resolved config.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.training.faults import fault_point
from effnet.weights.integrity import seal_checkpoint
from effnet.weights.loading import torch_load
from effnet.weights.serialize import _unwrap, atomic_write, model_metadata

CHECKPOINT = "checkpoint_last.pt"
FORMAT = 1


def rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(state), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    version, s, gauss = state["python"]
    random.setstate((version, tuple(s), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model, optimizer, ema, scaler, extra: dict) -> Path:
    """Write a checkpoint atomically; fault point ``checkpoint_write`` sits before the rename."""
    meta = model_metadata(model)
    state = {
        "format": FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_state(),
        "build_args": meta["build_args"],
        "data_config": meta["data_config"],
        **extra,
    }
    state = seal_checkpoint(state)  # checked by torch_load: a corrupt checkpoint is refused

    def write(tmp: str) -> None:
        torch.save(state, tmp)
        fault_point("checkpoint_write")

    return atomic_write(path, write)


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/checkpoint_last.pt`` (or a checkpoint file) with weights_only=True."""
    p = Path(run_dir)
    path = p / CHECKPOINT if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {path} not found (--resume takes a run folder written by effnet train)"
        )
    ckpt = torch_load(path)
    needed = ("format", "model", "optimizer", "config", "epoch", "rng")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in needed):
        raise ValueError(f"cannot resume from {path}: not an effnet training checkpoint")
    return ckpt
