"""What the edge exports (ExecuTorch ``.pte``, LiteRT ``.tflite``) share.

- INT8 through PT2E (``effnet.deploy.export.int8``): the model is exported with
  ``torch.export``, observed on calibration images that went through the model's own
  preprocessing (``effnet.deploy.calibration``, the loader ``effnet quantize`` uses), converted
  with ReLU6 clamps fused and biases corrected, ready for the target's own lowering.
- The check on real images before a file takes its name: in fp32 the file's logits must match
  eager PyTorch within ``TOLERANCE`` x max(1, largest |logit|) (the bound of every export), in
  INT8 its top-1 agreement with eager and its largest logit difference are measured and the file
  is refused below ``min_agreement``.
- Quiet converters: their progress bars and native logs go nowhere; their errors become one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from effnet.deploy.calibration import agreement_figures, calibration_arrays, preprocessing
from effnet.deploy.export.common import TOLERANCE, ExportResult
from effnet.deploy.export.int8 import BIAS_IMAGES, FLOAT_GROUPS

DEFAULT_IMAGES = 128  # calibration images, as for `effnet quantize`
# INT8: the stem conv and the classifier stay float (the first-and-last-layer exception; on the
# real Lite0 weights 20 of 22 real photos agree with fp32 in both runtimes, 18 without)
DEFAULT_KEEP_FLOAT = ("stem", "head")
BATCH = 8  # verification batch (a second batch size proves the batch axis works)


@dataclass(frozen=True)
class EdgeOptions:
    """INT8 and real-image options of an edge export (see ``effnet.deploy.export.export``)."""

    int8: bool = False
    calibrate: str | os.PathLike | None = None
    images: int = DEFAULT_IMAGES
    min_agreement: float = 0.0
    bias_correction: bool = True  # INT8: see effnet.deploy.export.int8
    keep_float: tuple[str, ...] = DEFAULT_KEEP_FLOAT  # INT8: layer groups left in float

    def check(self, fmt: str) -> EdgeOptions:
        groups = self.keep_float
        if isinstance(groups, str) or any(g not in FLOAT_GROUPS for g in groups):
            raise ValueError(
                f"keep_float must be a tuple of {', '.join(FLOAT_GROUPS)} (or empty), "
                f"got {groups!r}"
            )
        n = self.images
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"images must be a positive integer, got {n!r}")
        m = self.min_agreement
        if isinstance(m, bool) or not isinstance(m, int | float) or not 0 <= m <= 1:
            raise ValueError(f"min_agreement must be in [0, 1], got {m!r}")
        if self.int8 and self.calibrate is None:
            raise ValueError(f"an INT8 {fmt} export needs calibration images (calibrate=DIR)")
        return self


def calibration_images(model: nn.Module, opts: EdgeOptions, size: int) -> tuple[np.ndarray, int]:
    """(preprocessed images, unreadable count) from ``opts.calibrate``; empty without it."""
    if opts.calibrate is None:
        return np.zeros((0, 3, size, size), np.float32), 0
    return calibration_arrays(opts.calibrate, opts.images, preprocessing(model, size))


def record_images(
    result: ExportResult, opts: EdgeOptions, images: np.ndarray, skipped: int, quantized: dict
) -> None:
    """Put the INT8 flag, the calibration image counts, and the bias-corrected and float layers
    (``quantized``: the meta of the graph ``pt2e_quantize`` returned; empty for fp32) on
    ``result``."""
    result.int8, result.skipped_images = opts.int8, skipped
    result.calibration_images = len(images)
    result.bias_layers = quantized.get("bias_layers", 0)
    result.bias_images = min(len(images), BIAS_IMAGES) if result.bias_layers else 0
    result.float_layers = tuple(quantized.get("float_layers", ()))


def check_on_images(
    model: nn.Module,
    run: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    result: ExportResult,
    min_agreement: float,
) -> None:
    """Compare the file (``run``) with eager ``model`` on real images, in batches of BATCH.

    Records ``result.agreement`` and ``result.max_logit_diff``. fp32: a difference at or above
    the export bound is refused; INT8 (``result.int8``): an agreement below ``min_agreement``.
    """
    if len(images) == 0:
        return
    want, got = [], []
    for i in range(0, len(images), BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + BATCH]))
        with torch.inference_mode():
            want.append(model(x).float())
        got.append(run(x).float())
    w, g = torch.cat(want), torch.cat(got)
    if g.shape != w.shape:
        raise ValueError(f"the exported file gives logits of shape {tuple(g.shape)}, "
                         f"PyTorch {tuple(w.shape)}")  # fmt: skip
    result.agreement, result.decided_agreement, result.decided_images = agreement_figures(w, g)
    result.max_logit_diff = float((w - g).abs().max())
    limit = TOLERANCE * max(1.0, float(w.abs().max()))
    if not result.int8 and not result.max_logit_diff < limit:
        raise ValueError(
            f"the {result.format} file differs from PyTorch by {result.max_logit_diff:.3g} on "
            f"the calibration images (tolerance {limit:.3g}); the file was not written"
        )
    if result.int8 and result.agreement < min_agreement:
        raise ValueError(
            f"the INT8 {result.format} file agrees with PyTorch on {result.agreement:.1%} of the "
            f"calibration images (< {min_agreement:.0%}); the file was not written"
        )


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Converters and runtimes print progress bars and native (C++) logs: while they run, the
    process's stdout and stderr descriptors and Python's sys.stdout / sys.stderr go nowhere."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved: list[tuple[int, int]] = []
    with contextlib.suppress(OSError):  # no real descriptors (embedded use): Python-level only
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
