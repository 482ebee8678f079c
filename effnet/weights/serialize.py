"""effnet's own model files: safetensors weights plus the metadata needed to rebuild the model.

A model file holds the state dict and, in the safetensors header, a JSON blob with the model's
``BuildRecord`` (under ``build_args``: its exact plan, classes, input channels, dropout), the data
config (preprocessing, whose ``input_size`` is the model's one image size) and optional class
names. Nothing in it is executable. Training checkpoints (``.pt``) are read with
``torch.load(weights_only=True)``. Files of effnet 0.1 (``build_args`` = ``create_model``
keywords) still load: the registry rebuilds their plan.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from effnet.model import ARCH_CFG_KEYS, BuildRecord, EfficientNet
from effnet.registry import build_model
from effnet.weights.integrity import SAFETENSORS_KEY, safetensors_digest, seal_checkpoint
from effnet.weights.loading import METADATA_KEY, checkpoint_metadata, read_safetensors, torch_load

# 2: the header carries a checksum (effnet.weights.integrity), required from then on.
# 3: ``build_args`` holds a BuildRecord (the exact plan); the data config holds the one image size.
FORMAT_VERSION = 3
# effnet 0.1's build_args: create_model keywords (the image size moved to the data config).
LEGACY_ARGS = (
    "name",
    "num_classes",
    "in_chans",
    "width_mult",
    "depth_mult",
    "image_size",
    "drop_rate",
    "drop_path_rate",
    "act",
    "se",
    "bn_eps",
    "bn_momentum",
    "padding",
    "shortcut",
)
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
    if not isinstance(model, EfficientNet):
        raise ValueError(
            f"save_model takes an effnet EfficientNet (create_model or EfficientNet(plan)), "
            f"got {type(model).__name__}"
        )
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "build_args": model.record.to_dict(),
        "data_config": clean_data_config(model.pretrained_cfg),
    }
    names = getattr(model, "class_names", None)
    if names:
        meta["class_names"] = list(names)
    meta.update(extra)
    return meta


def clean_data_config(cfg: Any) -> dict[str, Any]:
    """A data config as models carry it; ``input_size`` is the model's one image size.

    effnet 0.1 also stored ``train_size`` (its recipe's training resolution, stale once a run
    trained at another size); it is dropped, and so are timm's architecture keys
    (``ARCH_CFG_KEYS``), which the model recomputes.
    """
    drop = ("train_size", *ARCH_CFG_KEYS)
    out = {k: v for k, v in dict(cfg or {}).items() if k not in drop}
    for key in ("input_size", "mean", "std"):  # JSON gives lists; models carry tuples
        if isinstance(out.get(key), list):
            out[key] = tuple(out[key])
    return out


def build_record(meta: dict[str, Any], where: str) -> tuple[BuildRecord, dict[str, Any]]:
    """(record, default data config) from a file's metadata, of this format or effnet 0.1's."""
    args = meta.get("build_args")
    if isinstance(args, dict) and "plan" in args:
        try:
            return BuildRecord.from_dict(args), {}
        except ValueError as e:
            raise ValueError(f"{where}: bad build record ({e})") from None
    if not isinstance(args, dict) or not isinstance(args.get("name"), str):
        raise ValueError(f"{where}: build_args must be a dict with a model name, got {args!r:.80}")
    unknown = [k for k in args if k not in LEGACY_ARGS]
    if unknown:
        raise ValueError(f"{where}: unknown build_args key {unknown[0]!r}")
    kwargs = {k: v for k, v in args.items() if k != "name"}
    try:
        probe = build_model(args["name"], device="meta", **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {str(e).splitlines()[0]}") from None
    return probe.record, probe.pretrained_cfg


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


def save_checkpoint(
    ckpt: dict[str, Any], path: str | os.PathLike, *, after_write: Callable[[], None] | None = None
) -> Path:
    """Write a checkpoint dict atomically, sealed with a checksum checked on every load.

    ``after_write`` runs once the temporary file is written, before the rename (fault tests).
    """
    sealed = seal_checkpoint(ckpt)

    def write(tmp: str) -> None:
        torch.save(sealed, tmp)
        if after_write is not None:
            after_write()

    return atomic_write(path, write)


def save_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Save weights and rebuild metadata as ``.safetensors`` (atomically)."""
    meta = model_metadata(model, **extra)
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()
    }
    meta_json = json.dumps(meta)
    header = {METADATA_KEY: meta_json, SAFETENSORS_KEY: safetensors_digest(state, meta_json)}
    return atomic_write(path, lambda tmp: safetensors.torch.save_file(state, tmp, metadata=header))


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
        try:
            return state, json.loads(header[METADATA_KEY])
        except json.JSONDecodeError:
            raise ValueError(f"{path}: corrupt effnet metadata in safetensors header") from None
    ckpt = torch_load(path)
    meta = checkpoint_metadata(ckpt)
    if meta is None:
        raise ValueError(f"{path}: not an effnet checkpoint (needs 'model' and 'build_args')")
    return ckpt["model"], meta


def _check_fit(
    target: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str, name: str
) -> None:
    for key, tensor in state.items():
        if key in target and tensor.shape != target[key].shape:
            got, want = tuple(tensor.shape), tuple(target[key].shape)
            raise ValueError(f"{where}: {key} has shape {got}, {name} needs {want}")
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        kind, bad = ("missing", missing[0]) if missing else ("unexpected", unexpected[0])
        raise ValueError(f"{where}: weights do not fit {name} ({kind} key {bad!r})")


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from an effnet file, training checkpoint or run folder, in eval mode.

    The architecture is first built on the meta device and checked against the file's tensors,
    so a file cannot make effnet allocate more than the weights it holds.
    """
    state, meta = read_model_file(path)
    record, default_cfg = build_record(meta, str(path))
    try:
        with torch.device("meta"):
            probe = EfficientNet.from_record(record)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(
            f"{path}: cannot build its architecture ({str(e).splitlines()[0]})"
        ) from None
    _check_fit(probe.state_dict(), state, str(path), record.name)
    model = EfficientNet.from_record(record)
    model.load_state_dict(state, strict=True)
    model.pretrained_cfg = clean_data_config(meta.get("data_config") or default_cfg)
    if meta.get("class_names"):
        model.class_names = list(meta["class_names"])
    return model.to(device).eval()
