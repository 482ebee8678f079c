"""Hooks into the training loop, so users can watch or log a run without forking the loop.

Subclass :class:`Callback`, override the methods you need and pass instances to
``effnet.train(..., callbacks=[...])``. They run in the main process only (rank 0 under
torchrun), in the order given. An exception in a callback stops the run like any other error;
the last checkpoint stays intact and ``--resume`` continues.

>>> class PrintLoss(Callback):
...     def on_step(self, step, epoch, loss, lr):
...         if step % 100 == 0:
...             print(step, loss)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Callback:
    """Base class: every method does nothing. Steps count optimizer steps over the whole run
    (they continue across a resume); epochs are 1-based, as in the run's metrics files."""

    def on_train_start(
        self, run_dir: Path, config: dict[str, Any], model: nn.Module, start_step: int
    ) -> None:
        """Before the first step; ``start_step`` > 0 when the run is resumed."""

    def on_step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        """After each optimizer step: this process's batch loss and the learning rate used."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], confusion: torch.Tensor) -> None:
        """After each epoch's evaluation: the metrics row (as in metrics.jsonl) and the
        validation confusion matrix (rows: true class, columns: predicted)."""

    def on_train_end(self, summary: dict[str, Any]) -> None:
        """After the run's summary is written (not called when a run stops early)."""

    def close(self) -> None:
        """Always called when the run ends, however it ends (release files, connections)."""


class Callbacks(Callback):
    """Several callbacks called in order; does nothing outside the main process."""

    def __init__(self, callbacks: Iterable[Callback] = (), active: bool = True) -> None:
        items = list(callbacks)
        for cb in items:
            if not isinstance(cb, Callback):
                raise ValueError(
                    f"callbacks must be effnet.training.Callback instances, got "
                    f"{type(cb).__name__}"
                )
        self.items = items if active else []

    def on_train_start(self, run_dir, config, model, start_step) -> None:
        for cb in self.items:
            cb.on_train_start(run_dir, config, model, start_step)

    def on_step(self, step, epoch, loss, lr) -> None:
        for cb in self.items:
            cb.on_step(step, epoch, loss, lr)

    def on_epoch_end(self, epoch, metrics, confusion) -> None:
        for cb in self.items:
            cb.on_epoch_end(epoch, metrics, confusion)

    def on_train_end(self, summary) -> None:
        for cb in self.items:
            cb.on_train_end(summary)

    def close(self) -> None:
        errors = []
        for cb in self.items:
            try:
                cb.close()
            except Exception as e:  # close every callback; report the first failure after
                errors.append(e)
        if errors:
            raise errors[0]
