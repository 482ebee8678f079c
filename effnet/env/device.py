"""``check_device``: the one device validator of effnet's commands (spelling and availability);
``kept_process_state``: what an API call may change in torch's process-wide state, put back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


@contextlib.contextmanager
def kept_process_state(*, rng: bool = False) -> Iterator[None]:
    """Put torch's intra-op thread count back on exit (and, with ``rng``, the CPU random
    generator's state), so that a Python API call that sets threads or seeds for its own work
    leaves the caller's process as it found it. A thread count left behind changes the caller's
    speed and, through the order of fp32 sums, its numbers: an INT8 export calibrated after
    ``train(threads=1)`` rounded differently from one calibrated in a fresh process."""
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state() if rng else None
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if state is not None:
            torch.random.set_rng_state(state)
