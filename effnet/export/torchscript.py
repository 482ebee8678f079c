"""TorchScript export: a traced graph with effnet's metadata as an extra file, checked on reload.

Tracing (not scripting) because the model's Python control flow depends only on construction
settings, and tracing records the eval-mode path exactly; the batch axis stays dynamic.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effnet.export.common import (
    ExportResult,
    compare,
    eval_mode,
    example_input,
    first_line,
    input_spec,
    metadata,
    one_line_errors,
)

EXTRA_FILE = "effnet.json"


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, image_size: int | None = None, *, verify: bool = True
) -> ExportResult:
    """Trace ``model`` and save it to ``path`` atomically, verified after reloading when asked."""
    from effnet.weights.serialize import atomic_write

    in_chans, size = input_spec(model, image_size)
    result = ExportResult(Path(path), "torchscript", size)
    start = time.perf_counter()

    def write(tmp: str) -> None:
        with eval_mode(model), warnings.catch_warnings():
            # torch.jit warns that it is deprecated, and about shape arithmetic frozen by tracing.
            warnings.simplefilter("ignore")
            with (
                torch.inference_mode(False),
                torch.no_grad(),
                one_line_errors("TorchScript tracing"),
            ):
                traced = torch.jit.trace(model, example_input(1, in_chans, size), check_trace=False)
            extra = {EXTRA_FILE: json.dumps(metadata(model, size))}
            torch.jit.save(traced, tmp, _extra_files=extra)
            if verify:
                loaded, _ = load_torchscript(tmp)
                result.max_abs_diff = compare(model, loaded, in_chans, size)

    atomic_write(path, write)
    result.seconds = time.perf_counter() - start
    return result


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """(module in eval mode, effnet metadata) of a TorchScript file; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such TorchScript file")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch.jit raises RuntimeError subclasses for corrupt archives
        raise ValueError(f"{p}: not a loadable TorchScript file ({first_line(e)})") from None
    meta = json.loads(extra[EXTRA_FILE]) if extra[EXTRA_FILE] else {}
    return module.eval(), meta
