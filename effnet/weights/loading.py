"""Read weight files safely: safetensors, or ``torch.load(weights_only=True)`` for .pth / .pt.

Nothing here executes code from a file. Every failure (missing, truncated, corrupt, a pickle that
needs code to run, something that is not a state dict) becomes a one-line ``ValueError`` or
``FileNotFoundError`` naming the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from effnet.weights.integrity import verify_checkpoint, verify_tensors

METADATA_KEY = "effnet"
# Keys under which training scripts (timm, torchvision references, Lightning, effnet) nest weights.
_NESTED = ("state_dict", "model", "model_state_dict", "net", "module")
# Prefixes added by DataParallel / DDP / torch.compile / Lightning wrappers.
_PREFIXES = ("module.", "_orig_mod.", "model.")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (tensors, header metadata) of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None
    verify_tensors(tensors, header, METADATA_KEY, str(path))
    return tensors, header


def torch_load(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated zip, empty file, ...
        raise ValueError(f"{path}: not a loadable checkpoint ({_load_error(e)})") from None
    return verify_checkpoint(ckpt, str(path))


def _load_error(e: BaseException) -> str:
    """One line for what went wrong inside ``torch.load``; torch's own messages span pages."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it pickles {found[1]}, which could run code; refused (weights_only=True)"
    if "Unsupported operand" in text or "invalid load key" in text:
        return "not a PyTorch checkpoint: unreadable pickle data"
    if isinstance(e, EOFError):
        return "empty or truncated file"
    if "central directory" in text or "zip archive" in text:
        return "truncated or corrupt zip archive"
    return _first_line(e)


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """Find the state dict in a checkpoint (possibly nested) and strip wrapper prefixes."""
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in _NESTED:
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise ValueError(f"{where}: no state dict found (expected a dict of name -> tensor)")
    state: dict[str, torch.Tensor] = obj
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_file(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read any weight file: (state dict, effnet metadata or None).

    ``.safetensors`` files are read with safetensors; everything else with
    ``torch.load(weights_only=True)``. effnet's own files and training checkpoints return their
    metadata (``build_args``, ``data_config``, ``class_names``); foreign files return ``None``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        tensors, header = read_safetensors(path)
        meta = None
        if METADATA_KEY in header:
            try:
                meta = json.loads(header[METADATA_KEY])
            except json.JSONDecodeError:
                raise ValueError(f"{path}: corrupt effnet metadata in safetensors header") from None
        return unwrap_state_dict(tensors, str(path)), meta
    ckpt = torch_load(path)
    meta = checkpoint_metadata(ckpt)
    if meta is not None:
        ckpt = ckpt["model"]
    return unwrap_state_dict(ckpt, str(path)), meta


def checkpoint_metadata(ckpt: Any) -> dict[str, Any] | None:
    """The effnet metadata of a training checkpoint (``build_args`` and friends), else None."""
    if not isinstance(ckpt, dict) or "build_args" not in ckpt or "model" not in ckpt:
        return None
    return {k: v for k, v in ckpt.items() if k in ("build_args", "data_config", "class_names")}
