"""``check_device``: the one device validator of effnet's commands (spelling and availability)."""

from __future__ import annotations

import torch

from effnet.env import parse_device


def _unavailable(device: str) -> str | None:
    """Why this machine cannot use ``device`` (a parsed name), or None if it can."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (torch.cuda.is_available() is False)"
        count = torch.cuda.device_count()
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return (
                "MPS is not available on this machine (torch.backends.mps.is_available() is False)"
            )
    return None


def check_device(device: object, *, auto: bool = False, label: str = "device") -> str:
    """``device`` if it is a device name this machine has (cpu, cuda, cuda:N, mps; ``auto``
    where ``auto=True``), else a one-line ValueError that says what to use instead."""
    name = parse_device(device, auto=auto, label=label)
    why = None if name in ("cpu", "auto") else _unavailable(name)
    if why is not None:
        raise ValueError(f"{label} {name}: {why}; use {label} cpu")
    return name
