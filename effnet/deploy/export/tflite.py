"""LiteRT (TFLite) export via ``litert-torch``: a ``.tflite`` flatbuffer, fp32 or INT8, checked
with ``ai-edge-litert``'s interpreter before it takes its name.

The file takes the same NCHW float input as the PyTorch model (litert-torch inserts the layout
transposes). It is converted at batch 1; the interpreter resizes it to other batches, which the
check at batch 3 covers. INT8 uses litert-torch's own PT2E quantizer (static, symmetric
per-channel weights): a full-integer graph whose int8 input and output the runner here quantizes
and dequantizes with the file's own scales.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.deploy.export.common import (
    ExportResult,
    example_input,
    first_line,
    input_spec,
    one_line_errors,
    write_export,
)
from effnet.deploy.export.edge import (
    EdgeOptions,
    calibration_images,
    check_on_images,
    quiet_native,
    record_images,
)
from effnet.deploy.export.int8 import pt2e_quantize
from effnet.env import require

QUANTIZER = "litert_torch.quantize.pt2e_quantizer"


def require_litert() -> None:
    """One-line advice (``effnet.env.MissingDependency``) when the litert extra is missing."""
    for module in ("litert_torch", "ai_edge_litert.interpreter"):
        require(module)


def export_tflite(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int | None = None,
    *,
    verify: bool = True,
    options: EdgeOptions = EdgeOptions(),  # noqa: B008 (frozen)
) -> ExportResult:
    """Convert ``model`` with litert-torch and write the ``.tflite`` to ``path`` atomically.

    With ``verify`` the file runs in LiteRT's interpreter: fp32 against eager PyTorch at batch 1
    and 3 (and on the calibration images when ``options.calibrate`` is given), INT8 by top-1
    agreement on the calibration images (see ``effnet.deploy.export.edge``).
    """
    opts = options.check("LiteRT")
    with quiet_native():  # importing them logs native start-up lines
        require_litert()
    images, skipped = calibration_images(model, opts, input_spec(model, image_size)[1])
    quantized: dict = {}  # the meta of pt2e_quantize's graph, once saved

    def save(tmp: str, in_chans: int, size: int) -> None:
        example = example_input(1, in_chans, size)
        with quiet_native(), one_line_errors("LiteRT conversion"):
            litert = require("litert_torch")
            if opts.int8:
                q = require(QUANTIZER)
                qcfg = require("litert_torch.quantize.quant_config")
                quantizer = q.PT2EQuantizer().set_global(
                    q.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
                )
                graph = pt2e_quantize(
                    model, quantizer, images, example, fold=False,
                    bias_correction=opts.bias_correction, keep_float=opts.keep_float,
                )  # fmt: skip
                quantized.update(graph.meta)
                edge = litert.convert(
                    graph, (example,), quant_config=qcfg.QuantConfig(pt2e_quantizer=quantizer)
                )
            else:
                edge = litert.convert(model, (example,))
            Path(tmp).write_bytes(edge.model_content())
        if opts.int8 and not _is_integer(tmp):
            raise ValueError("LiteRT conversion left the model in float (no int8 tensors)")

    def check(result: ExportResult, run: Callable) -> None:
        record_images(result, opts, images, skipped, quantized)
        check_on_images(model, run, images, result, opts.min_agreement)

    result = write_export(
        model, path, "tflite", image_size, save, load_tflite, verify, check,
        random_inputs=not opts.int8,
    )  # fmt: skip
    if not verify:  # check (which records them) did not run
        record_images(result, opts, images, skipped, quantized)
    return result


def _interpreter(path: str | os.PathLike, threads: int | None = None):
    require_litert()
    interpreter = require("ai_edge_litert.interpreter").Interpreter
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such LiteRT file")
    try:
        with quiet_native():
            it = interpreter(model_path=str(p), num_threads=threads or torch.get_num_threads())
            it.allocate_tensors()
    except Exception as e:  # the interpreter raises ValueError / RuntimeError with native text
        raise ValueError(f"{p}: not a loadable LiteRT model ({first_line(e)})") from None
    return it


def _is_integer(path: str | os.PathLike) -> bool:
    it = _interpreter(path, threads=1)
    return any(d["dtype"] == np.int8 for d in it.get_tensor_details())


def load_tflite(
    path: str | os.PathLike, *, threads: int | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running a ``.tflite`` file in LiteRT's interpreter on NCHW float batches
    (resized to each batch; int8 input and output quantized with the file's own scales).

    A file whose graph cannot be resized (shapes baked in at conversion, as a GroupNorm's
    reshapes are) runs larger batches in chunks of the batch it was converted at."""
    it = _interpreter(path, threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    own = tuple(int(d) for d in inp["shape"])
    fixed: list[bool] = []  # set once a resize has failed

    def once(a: np.ndarray) -> torch.Tensor:
        it.set_tensor(inp["index"], _to_file_type(a, inp))
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return torch.from_numpy(np.array(y, np.float32))

    def run(x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().float().numpy()
        if not fixed and tuple(it.get_input_details()[0]["shape"]) != a.shape:
            try:
                it.resize_tensor_input(inp["index"], list(a.shape))
                it.allocate_tensors()
            except RuntimeError:  # the delegate cannot reshape this graph
                it.resize_tensor_input(inp["index"], list(own))
                it.allocate_tensors()
                fixed.append(True)
        if not fixed or a.shape == own:
            return once(a)
        if a.shape[1:] != own[1:] or len(a) % own[0]:
            raise ValueError(f"{path}: this LiteRT file takes only inputs of shape {own}")
        return torch.cat([once(c) for c in np.split(a, len(a) // own[0])])

    return run


def _to_file_type(a: np.ndarray, spec: dict) -> np.ndarray:
    if spec["dtype"] == np.float32:
        return np.ascontiguousarray(a)
    scale, zero = spec["quantization"]
    info = np.iinfo(spec["dtype"])
    return np.clip(np.round(a / scale) + zero, info.min, info.max).astype(spec["dtype"])
