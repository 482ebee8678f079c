"""effnet's own model files: safetensors weights plus the metadata needed to rebuild the model.

A model file holds the state dict and, in the safetensors header, a JSON blob with the
``build_args`` that ``create_model`` needs, the data config (preprocessing) and optional class
names. Nothing in it is executable. Training checkpoints (``.pt``) are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.weights.loading import METADATA_KEY, read_safetensors, torch_load

FORMAT_VERSION = 1
# Files a run folder may hold, in the order load_model prefers them.
RUN_FILES = ("model_best.safetensors", "model_last.safetensors", "checkpoint_last.pt")


def _unwrap(model: nn.Module) -> nn.Module:
    for attr in ("module", "_orig_mod"):  # DDP / torch.compile wrappers
        while hasattr(model, attr) and isinstance(getattr(model, attr), nn.Module):
            model = getattr(model, attr)
    return model


def model_metadata(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """The JSON-serialisable description stored next to a model's weights."""
    model = _unwrap(model)
    build_args = getattr(model, "build_args", None)
    if not build_args:
        raise ValueError("this model has no build_args; build it with effnet.create_model")
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "build_args": dict(build_args),
        "data_config": dict(getattr(model, "pretrained_cfg", None) or {}),
    }
    names = getattr(model, "class_names", None)
    if names:
        meta["class_names"] = list(names)
    meta.update(extra)
    return meta


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)``, fsync, rename over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save weights and rebuild metadata as ``.safetensors`` (atomically)."""
    from safetensors.torch import save_file

    meta = model_metadata(model, **extra)
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }
    header = {METADATA_KEY: json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))


def run_file(path: str | os.PathLike) -> Path:
    """A run folder's preferred model file (see ``RUN_FILES``); other paths pass through."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in RUN_FILES:
        if (path / name).is_file():
            return path / name
    names = ", ".join(RUN_FILES)
    raise FileNotFoundError(f"{path}: no model file ({names}) in this folder")


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (state_dict, metadata) from an effnet ``.safetensors`` file or training checkpoint."""
    path = run_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        state, header = read_safetensors(path)
        if METADATA_KEY not in header:
            raise ValueError(f"{path}: safetensors file without effnet metadata")
        return state, json.loads(header[METADATA_KEY])
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "build_args" not in ckpt:
        raise ValueError(f"{path}: not an effnet checkpoint (needs 'model' and 'build_args')")
    meta = {k: v for k, v in ckpt.items() if k in ("build_args", "data_config", "class_names")}
    meta.setdefault("format_version", FORMAT_VERSION)
    return ckpt["model"], meta


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from an effnet file, training checkpoint or run folder, in eval mode."""
    from effnet.registry import create_model

    state, meta = read_model_file(path)
    args = dict(meta["build_args"])
    name = args.pop("name")
    model = create_model(name, **args)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise ValueError(f"{path}: weights do not fit {name} ({kind} key {bad!r})")
    if meta.get("data_config"):
        cfg = dict(meta["data_config"])
        if "input_size" in cfg:
            cfg["input_size"] = tuple(cfg["input_size"])
        model.pretrained_cfg = cfg
    if meta.get("class_names"):
        model.class_names = list(meta["class_names"])
    return model.to(device).eval()
