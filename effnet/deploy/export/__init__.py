"""Export effnet models to ONNX, TorchScript, safetensors or ``torch.export`` (pt2), to the
edge runtimes ExecuTorch (``executorch``, .pte with XNNPACK) and LiteRT (``tflite``), fp32 or
INT8, or their weights in timm's or torchvision's names (``timm`` / ``torchvision``), verified.

``export_model`` takes a model, a registered name or an effnet model file / run folder, writes
the file atomically (a failed export or verification leaves nothing behind), and with
``verify=True`` checks the exported file against eager PyTorch at batch 1 and 3
(max abs diff < 1e-4). See docs/export.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from effnet.api import resolve_model
from effnet.deploy.export.common import (
    TOLERANCE,
    ExportResult,
    compare,
    eval_mode,
    input_spec,
    op_groups,
)
from effnet.deploy.export.edge import DEFAULT_IMAGES, DEFAULT_KEEP_FLOAT, EdgeOptions
from effnet.deploy.export.executorch import export_executorch
from effnet.deploy.export.onnx import (
    DEFAULT_OPSET,
    check_onnx_inputs,
    export_onnx,
    load_onnx,
    onnx_metadata,
)
from effnet.deploy.export.pt2 import export_pt2
from effnet.deploy.export.tflite import export_tflite
from effnet.deploy.export.torchscript import export_torchscript
from effnet.deploy.export.upstream import export_upstream
from effnet.env.device import kept_process_state
from effnet.weights.serialize import load_model, save_model

FORMATS = (
    "onnx", "torchscript", "safetensors", "pt2", "executorch", "tflite", "timm", "torchvision",
)  # fmt: skip
EDGE_FORMATS = {"executorch": export_executorch, "tflite": export_tflite}

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_OPSET",
    "FORMATS",
    "TOLERANCE",
    "ExportResult",
    "check_onnx_inputs",
    "export",
    "export_model",
    "load_onnx",
    "onnx_metadata",
]


@kept_process_state(rng=True)  # the ExecuTorch/LiteRT toolchains draw from torch's generator
def export(
    model_or_path: Any,
    format: str,
    output: str | os.PathLike,
    *,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    pretrained: Any = None,
    weights_source: str = "auto",
    dynamic_size: bool = False,
    int8: bool = False,
    calibrate: str | os.PathLike | None = None,
    images: int = DEFAULT_IMAGES,
    min_agreement: float = 0.0,
    bias_correction: bool = True,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
) -> ExportResult:
    """Like ``export_model`` but returns the ``ExportResult`` (path, diffs per batch, seconds;
    for the edge formats also INT8 agreement and logit difference on the calibration images)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    keep = op_groups(keep_float)
    edge = EdgeOptions(int8, calibrate, images, min_agreement, bias_correction, keep)
    if format not in EDGE_FORMATS and edge != EdgeOptions():
        raise ValueError(f"int8 / calibrate / images / min_agreement / bias_correction / "
                         f"keep_float apply to executorch and tflite, not {format!r}")  # fmt: skip
    # refuses ONNX inputs too
    model = resolve_model(model_or_path, pretrained=pretrained, weights_source=weights_source)
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder; give a file name, e.g. model.{format}")
    try:
        if format == "onnx":
            return export_onnx(
                model, output, image_size, opset=opset, verify=verify, dynamic_size=dynamic_size
            )
        if dynamic_size:
            raise ValueError(f"dynamic_size is an ONNX-only option, got format {format!r}")
        if format in EDGE_FORMATS:
            return EDGE_FORMATS[format](model, output, image_size, verify=verify, options=edge)
        if format == "torchscript":
            return export_torchscript(model, output, image_size, verify=verify)
        if format == "pt2":
            return export_pt2(model, output, image_size, verify=verify)
        if image_size is not None:
            raise ValueError(
                f"image_size applies to graph formats, not {format} (got {image_size}); "
                "the weights run at any resolution"
            )
        if format in ("timm", "torchvision"):
            return export_upstream(model, output, format, verify=verify)
        return _export_safetensors(model, output, verify=verify)
    except (PermissionError, FileNotFoundError, IsADirectoryError):
        raise
    except OSError as e:  # a parent that is a file, a full disk, a read-only file system
        raise ValueError(f"cannot write {output}: {e.strerror or e}") from None


def export_model(
    model_or_path: Any,
    format: str,
    output: str | os.PathLike,
    *,
    image_size: int | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    pretrained: Any = None,
    weights_source: str = "auto",
    dynamic_size: bool = False,
    int8: bool = False,
    calibrate: str | os.PathLike | None = None,
    images: int = DEFAULT_IMAGES,
    min_agreement: float = 0.0,
    bias_correction: bool = True,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
) -> Path:
    """Export a model (or a name / model file / run folder) to ``output``; returns the path.

    Args:
        format: ``onnx`` (dynamic batch, metadata props), ``torchscript`` (traced),
            ``safetensors`` (effnet's own model file), ``pt2`` (``torch.export``), or ``timm`` /
            ``torchvision``: a state dict in their names (safetensors, or torch.save for a
            ``.pth`` name) for ``effnet.convert.timm_name`` / ``torchvision_name``'s model;
            ``executorch`` (.pte, XNNPACK delegate, ``pip install "effnet[executorch]"``) or
            ``tflite`` (LiteRT via litert-torch, ``pip install "effnet[litert]"``).
        image_size: the export resolution; default the model's data-config resolution.
        opset: ONNX opset version.
        verify: reload the file and compare with PyTorch at batch 1 and 3 (< 1e-4).
        pretrained: weights for a model *name* (``"pip"``, ``"timm"``, a file, ...);
            ``weights_source``: ``"auto"`` / ``"tf"`` / ``"torch"`` (see ``create_model``).
        dynamic_size: ONNX only: height and width dynamic too (multiples of 32 for TF "same"
            padding models), verified at a second size.
        int8: executorch / tflite only: INT8 through PT2E, calibrated on ``calibrate`` (a
            folder of images or ``digits``, the first ``images`` of them, through the model's
            own preprocessing) and checked by top-1 agreement with PyTorch on them; the file is
            refused below ``min_agreement``. Without ``int8``, ``calibrate`` adds a check of
            the fp32 file on those images. ``bias_correction`` (INT8): move each layer's
            output mean back to the float model's on the first 32 calibration images
            (``effnet.deploy.export.int8``). ``keep_float`` (INT8): layer groups left in
            float, from ``stem`` (the first conv) and ``head`` (the classifier), as a sequence
            or a comma-separated string (``"none"``: none); default both.
    """
    return export(
        model_or_path,
        format,
        output,
        image_size=image_size,
        opset=opset,
        verify=verify,
        pretrained=pretrained,
        weights_source=weights_source,
        dynamic_size=dynamic_size,
        int8=int8,
        calibrate=calibrate,
        images=images,
        min_agreement=min_agreement,
        bias_correction=bias_correction,
        keep_float=keep_float,
    ).path


def _export_safetensors(model, output: Path, *, verify: bool) -> ExportResult:
    start = time.perf_counter()
    in_chans, size = input_spec(model, None)
    save_model(model, output)
    result = ExportResult(output, "safetensors", size)
    if verify:
        reloaded = load_model(output)
        with eval_mode(model), torch.inference_mode():
            try:
                result.max_abs_diff = compare(model, reloaded, in_chans, min(size, 64))
            except ValueError:
                output.unlink(missing_ok=True)
                raise
    result.seconds = time.perf_counter() - start
    return result
