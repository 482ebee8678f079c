"""effnet's own model files: safetensors weights plus the metadata needed to rebuild the model.

A model file holds the state dict and, in the safetensors header, a JSON blob with the
``build_args`` that ``create_model`` needs, the data config (preprocessing) and optional class
names. Nothing in it is executable. Training checkpoints (``.pt``) are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.weights.integrity import SAFETENSORS_KEY, safetensors_digest, seal_checkpoint
from effnet.weights.loading import METADATA_KEY, read_safetensors, torch_load

# 2: the header carries a checksum (effnet.weights.integrity), required from then on.
FORMAT_VERSION = 2
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


class WriteError(OSError):
    """Writing a file failed (disk full, I/O error, ...); the previous version is untouched."""


def _write_error(path: Path, e: BaseException, existed: bool) -> WriteError | None:
    """Map an I/O failure of a writer (OSError, or a wrapped one from safetensors) to one line."""
    if isinstance(e, OSError):
        code, reason = e.errno, e.strerror or str(e)
    else:
        found = re.search(r"\(os error (\d+)\)", str(e))
        if not found:
            return None
        code = int(found[1])
        reason = os.strerror(code)
    hint = " (disk full: free some space and retry)" if code in (errno.ENOSPC, errno.EDQUOT) else ""
    kept = f"the previous {path.name} is unchanged" if existed else f"no {path.name} was written"
    return WriteError(code, f"{path}: write failed: {reason}{hint}; {kept}")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)``, fsync, rename over ``path``: readers never see half a file.

    A failure at any step removes the temporary file and leaves ``path`` as it was; I/O errors
    (ENOSPC, EIO, ...) become a one-line ``WriteError`` saying so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        mapped = _write_error(path, e, existed) if isinstance(e, Exception) else None
        if mapped is not None:
            raise mapped from e
        raise
    return path


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files ``atomic_write`` left in ``folder`` when its process was killed.

    Only safe while nothing else writes there (the trainer holds the run lock). Returns the count.
    """
    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def save_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a training checkpoint atomically, sealed with a checksum checked on every load."""
    sealed = seal_checkpoint(ckpt)
    return atomic_write(path, lambda tmp: torch.save(sealed, tmp))


def save_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save weights and rebuild metadata as ``.safetensors`` (atomically)."""
    from safetensors.torch import save_file

    meta = model_metadata(model, **extra)
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }
    meta_json = json.dumps(meta)
    header = {METADATA_KEY: meta_json, SAFETENSORS_KEY: safetensors_digest(state, meta_json)}
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
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and tensor.shape != expected[key].shape:
            got, want = tuple(tensor.shape), tuple(expected[key].shape)
            raise ValueError(f"{path}: {key} has shape {got}, {name} needs {want}")
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
