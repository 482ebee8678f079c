"""Checksums that make a corrupt model file or checkpoint fail loudly instead of loading.

Neither safetensors nor ``torch.load`` notices a flipped bit in the tensor data: the file loads and
the model is silently wrong. effnet therefore stores a SHA-256 of the *content* (tensor names,
dtypes, shapes and bytes, plus the plain values of a checkpoint) in every file it writes, and
checks it on every load:

* ``.safetensors`` model files: under the header key ``effnet_sha256``, covering the tensors and
  the effnet metadata (the header's other bytes either fail to parse when damaged or change
  where tensors are read from, which the digest then catches);
* ``.pt`` training checkpoints: under the top-level key ``_sha256`` of the checkpoint dict,
  covering everything else in it (model, optimizer, EMA, RNG states, counters).

Hashing the loaded content rather than the file bytes keeps the digest independent of how the
file was laid out (zip alignment, safetensors ordering), so it can be computed before writing.
Files from elsewhere carry no digest and load as before.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

import torch

SAFETENSORS_KEY = "effnet_sha256"
CHECKPOINT_KEY = "_sha256"


class IntegrityError(ValueError):
    """The file's content does not match the checksum written with it."""


def _update_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        # A uint8 view hashes every dtype (bf16 and bool too) without a copy through numpy types.
        flat = t.cpu().contiguous().reshape(-1).view(torch.uint8)
        h.update(flat.numpy().data)


def _update(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        _update_tensor(h, obj)
    elif isinstance(obj, Mapping):
        h.update(b"D%d" % len(obj))
        # Keys may mix types (optimizer state uses ints); repr gives one total, stable order.
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _update(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d" % len(obj))
        for item in obj:
            _update(h, item)
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif obj is None or isinstance(obj, (bool, int, str, bytes, torch.dtype, torch.device)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    else:
        raise ValueError(f"cannot checksum a value of type {type(obj).__name__}: {obj!r:.80}")


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a state dict or checkpoint: tensors, containers and plain values."""
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()


def seal_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``ckpt`` carrying the digest of its content under ``CHECKPOINT_KEY``."""
    body = {k: v for k, v in ckpt.items() if k != CHECKPOINT_KEY}
    return {**body, CHECKPOINT_KEY: content_digest(body)}


def _mismatch(where: str) -> IntegrityError:
    return IntegrityError(
        f"{where}: checksum mismatch, the file is corrupt (damaged on disk or in transfer); "
        "refusing to load it"
    )


def verify_checkpoint(ckpt: Any, where: str) -> Any:
    """Check and strip the digest of a loaded checkpoint; checkpoints without one pass."""
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        return ckpt
    body = {k: v for k, v in ckpt.items() if k != CHECKPOINT_KEY}
    if content_digest(body) != ckpt[CHECKPOINT_KEY]:
        raise _mismatch(where)
    return body


def safetensors_digest(tensors: Mapping[str, torch.Tensor], metadata: str | None) -> str:
    """The digest stored in an effnet safetensors header: tensors plus the effnet metadata JSON."""
    return content_digest({"tensors": dict(tensors), "metadata": metadata})


def verify_tensors(
    tensors: Mapping[str, torch.Tensor], header: Mapping[str, str], meta_key: str, where: str
) -> None:
    """Check a safetensors file against the digest in its header.

    Files from elsewhere have no digest and pass. effnet files from format 2 on must have one, so
    a damaged digest key cannot switch the check off.
    """
    expected = header.get(SAFETENSORS_KEY)
    if expected is None:
        if _format_version(header.get(meta_key)) >= 2:
            raise IntegrityError(f"{where}: the checksum is missing, the header is damaged")
        return
    if safetensors_digest(tensors, header.get(meta_key)) != expected:
        raise _mismatch(where)


def _format_version(metadata: str | None) -> int:
    try:
        return int(json.loads(metadata or "{}").get("format_version", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
