"""Crash injection for reliability tests: ``EFFNET_FAULT=name[:n]`` SIGKILLs at the n-th hit.

Named points: data, forward, backward, optimizer_step, eval, checkpoint_write, stage_boundary,
epoch_end, ema_update, after_resume. When the variable is unset the cost is one dict lookup.
``EFFNET_FAULT_RANK=r`` limits the fault to the process of that torchrun rank (one rank dies).
``EFFNET_FAULT_MARK=path`` appends "<unix time> <pid>" to that file just before the kill, so a test
can time what happens after it without polling processes.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = (
    "data",
    "forward",
    "backward",
    "optimizer_step",
    "eval",
    "checkpoint_write",
    "stage_boundary",
    "epoch_end",
    "ema_update",
    "after_resume",
)
_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get("EFFNET_FAULT")
    if not spec:
        return None
    name, _, n = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"EFFNET_FAULT names unknown point {name!r}; known: {', '.join(POINTS)}")
    try:
        count = int(n) if n else 1
    except ValueError:
        raise ValueError(f"EFFNET_FAULT count must be an integer, got {n!r}") from None
    return name, count


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``EFFNET_FAULT`` selects this hit of ``name``."""
    if "EFFNET_FAULT" not in os.environ:
        return
    target = _target()
    if target is None or target[0] != name:
        return
    rank = os.environ.get("EFFNET_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == target[1]:
        mark = os.environ.get("EFFNET_FAULT_MARK")
        if mark:
            with open(mark, "a") as f:
                f.write(f"{time.time()} {os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)
