"""``torch.export`` (.pt2) export: an ExportedProgram with a dynamic batch axis, for AOT tools.

The example batch is 2 because torch.export specialises a dimension traced at size 1.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
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
MAX_BATCH = 4096


def export_pt2(
    model: nn.Module, path: str | os.PathLike, image_size: int | None = None, *, verify: bool = True
) -> ExportResult:
    """Export with ``torch.export`` and save to ``path`` atomically, verified after reloading."""

    def save(tmp: str, in_chans: int, size: int) -> None:
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        with one_line_errors("torch.export"):
            program = torch.export.export(
                model, (example_input(2, in_chans, size),), dynamic_shapes=({0: batch},)
            )
        extra = {EXTRA_FILE: json.dumps(metadata(model, size))}
        # torch.export wants a ".pt2" name or a buffer; the atomic temporary has neither.
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files=extra)
        Path(tmp).write_bytes(buffer.getvalue())

    return write_export(model, path, "pt2", image_size, save, lambda t: load_pt2(t)[0], verify)


def load_pt2(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """(callable module, effnet metadata) of a .pt2 file; one-line errors."""
    program, meta = load_archive(
        path,
        "torch.export",
        EXTRA_FILE,
        lambda p, extra: torch.export.load(io.BytesIO(p.read_bytes()), extra_files=extra),
    )
    return program.module(), meta
