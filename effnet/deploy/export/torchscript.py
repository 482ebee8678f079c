"""TorchScript export: a traced graph with effnet's metadata as an extra file, checked on reload.

Tracing (not scripting) because the model's Python control flow depends only on construction
settings, and tracing records the eval-mode path exactly; the batch axis stays dynamic.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from effnet.deploy.export.common import (
    ExportResult,
    example_input,
    load_archive,
    metadata,
    one_line_errors,
    write_export,
)

EXTRA_FILE = "effnet.json"


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, image_size: int | None = None, *, verify: bool = True
) -> ExportResult:
    """Trace ``model`` and save it to ``path`` atomically, verified after reloading when asked."""

    def save(tmp: str, in_chans: int, size: int) -> None:
        with torch.inference_mode(False), torch.no_grad(), one_line_errors("TorchScript tracing"):
            traced = torch.jit.trace(model, example_input(1, in_chans, size), check_trace=False)
        extra = {EXTRA_FILE: json.dumps(metadata(model, size))}
        torch.jit.save(traced, tmp, _extra_files=extra)

    return write_export(
        model, path, "torchscript", image_size, save, lambda t: load_torchscript(t)[0], verify
    )


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """(module in eval mode, effnet metadata) of a TorchScript file; one-line errors."""
    module, meta = load_archive(
        path,
        "TorchScript",
        EXTRA_FILE,
        lambda p, extra: torch.jit.load(str(p), map_location="cpu", _extra_files=extra),
    )
    return module.eval(), meta
